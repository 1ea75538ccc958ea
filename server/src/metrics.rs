//! Metrics: the Prometheus registry behind `/metrics` ([`Metrics`]: card reads, top-ups by
//! outcome, bank calls, agent commands, connections, alarms), and the timings of recent card reads
//! for the tap-to-submit benchmark ([`ReadTimings`]: when the card was reported, when the server
//! held its number, when the page's submit arrived).
//!
//! Each [`crate::app::Application`] has its own registry (no global recorder), so several servers
//! in one test process count apart. Names follow Prometheus' conventions: a `cardbridge_` prefix,
//! base units in the name (`_seconds`), counters ending in `_total`. The exposition is OpenMetrics
//! text, which Prometheus asks for and reads.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets from 1 ms to about 33 s (doubling): a card batch, a bank call, a probe.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 16)
}

fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// A label with one value: `outcome`, `error`, `kind`, `result`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ErrorLabel {
    pub error: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// One bank gateway call: which (`transfer`, `health`, …) and whether it got an answer it
/// could use (`ok`, `error`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BankCallLabels {
    pub call: &'static str,
    pub result: &'static str,
}

/// The end states a top-up is counted in.
pub const TOPUP_OUTCOMES: [&str; 4] = ["completed", "failed", "refunded", "exception"];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric of one server, and the registry that exposes them. Cheap handles: each field is
/// an `Arc` inside, so a clone counts into the same series.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Card reads (page and kiosk) by outcome: `ok` or the failure (`timeout`, `card_removed`…).
    pub card_reads: Family<OutcomeLabel, Counter>,
    /// From the start of a read to the card's identity (and its authentication), in seconds.
    pub card_read_duration: Histogram,
    /// Top-ups by the end state they reached: `completed`, `failed`, `refunded`, `exception`.
    pub topups: Family<OutcomeLabel, Counter>,
    /// Bank gateway calls by call and result, in seconds.
    pub bank_calls: HistogramFamily<BankCallLabels>,
    /// 1 while the bank's health probe answers.
    pub bank_link_up: Gauge,
    /// Agent command round trips (sign → verified reply), in seconds.
    pub agent_command_duration: Histogram,
    /// Agent commands that failed, by error (`timeout`, `disconnected`, `bad_reply`, `offline`).
    pub agent_command_errors: Family<ErrorLabel, Counter>,
    pub connected_agents: Gauge,
    pub connected_pages: Gauge,
    pub connected_kiosks: Gauge,
    /// Alarms raised and not cleared yet.
    pub open_alarms: Gauge,
    /// Alarms raised, by kind.
    pub alarms_raised: Family<KindLabel, Counter>,
    /// Webhook deliveries by result: `delivered`, `retried`, `given_up`, `dropped` (queue full).
    pub webhook_deliveries: Family<ResultLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("cardbridge");
        let card_reads = Family::<OutcomeLabel, Counter>::default();
        let card_read_duration = latency_histogram();
        let topups = Family::<OutcomeLabel, Counter>::default();
        let bank_calls: HistogramFamily<BankCallLabels> = Family::new_with_constructor(latency_histogram);
        let bank_link_up = Gauge::default();
        let agent_command_duration = latency_histogram();
        let agent_command_errors = Family::<ErrorLabel, Counter>::default();
        let (connected_agents, connected_pages, connected_kiosks) = (Gauge::default(), Gauge::default(), Gauge::default());
        let open_alarms = Gauge::default();
        let alarms_raised = Family::<KindLabel, Counter>::default();
        let webhook_deliveries = Family::<ResultLabel, Counter>::default();

        registry.register("card_reads", "Card reads by outcome", card_reads.clone());
        registry.register_with_unit("card_read_duration", "Time from the start of a card read to the card's identity", Unit::Seconds, card_read_duration.clone());
        registry.register("topups", "Top-ups by the end state they reached", topups.clone());
        registry.register_with_unit("bank_call_duration", "Bank gateway calls by call and result", Unit::Seconds, bank_calls.clone());
        registry.register("bank_link_up", "1 while the bank gateway's health probe answers", bank_link_up.clone());
        registry.register_with_unit("agent_command_duration", "Agent command round trips", Unit::Seconds, agent_command_duration.clone());
        registry.register("agent_command_errors", "Agent commands that failed, by error", agent_command_errors.clone());
        registry.register("connected_agents", "Bridge agents connected to this server", connected_agents.clone());
        registry.register("connected_pages", "Page sockets connected to this server", connected_pages.clone());
        registry.register("connected_kiosks", "Kiosk sockets connected to this server", connected_kiosks.clone());
        registry.register("open_alarms", "Alarms raised and not cleared", open_alarms.clone());
        registry.register("alarms_raised", "Alarms raised, by kind", alarms_raised.clone());
        registry.register("webhook_deliveries", "Alarm webhook deliveries by result", webhook_deliveries.clone());

        // Every series that can appear is there from the start (at zero), so that a rate over
        // it is defined before the first event and dashboards do not see series come and go.
        for outcome in std::iter::once("ok").chain(protocol::page::ReadFailure::ALL.iter().map(|f| f.wire_name())) {
            let _ = card_reads.get_or_create(&OutcomeLabel { outcome });
        }
        for outcome in TOPUP_OUTCOMES {
            let _ = topups.get_or_create(&OutcomeLabel { outcome });
        }
        for error in ["offline", "timeout", "disconnected", "bad_reply"] {
            let _ = agent_command_errors.get_or_create(&ErrorLabel { error });
        }
        for result in ["delivered", "retried", "given_up", "dropped"] {
            let _ = webhook_deliveries.get_or_create(&ResultLabel { result });
        }

        Metrics {
            registry,
            card_reads,
            card_read_duration,
            topups,
            bank_calls,
            bank_link_up,
            agent_command_duration,
            agent_command_errors,
            connected_agents,
            connected_pages,
            connected_kiosks,
            open_alarms,
            alarms_raised,
            webhook_deliveries,
        }
    }

    /// The registry as OpenMetrics text ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Count a card read and, when it produced an identity, its duration.
    pub fn card_read(&self, outcome: &'static str, took: Duration) {
        self.card_reads.get_or_create(&OutcomeLabel { outcome }).inc();
        if outcome == "ok" {
            self.card_read_duration.observe(took.as_secs_f64());
        }
    }

    /// Count one bank call.
    pub fn bank_call(&self, call: &'static str, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.bank_calls.get_or_create(&BankCallLabels { call, result }).observe(took.as_secs_f64());
    }
}

/// How many recent reads are kept.
const KEEP: usize = 1024;

#[derive(Debug, Clone)]
pub struct ReadTiming {
    pub read_id: String,
    /// The agent reported the card (the read started right after).
    pub card_present: Instant,
    /// The server held the card number.
    pub number_obtained: Instant,
    /// The read was recorded and the number handed to the page's connection.
    pub delivered: Option<Instant>,
    /// The page's submit carrying this read id arrived at the server (first time), before its
    /// session was checked.
    pub submitted: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct ReadTimings {
    entries: Mutex<VecDeque<ReadTiming>>,
}

impl ReadTimings {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<ReadTiming>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn read_done(&self, read_id: &str, card_present: Instant) {
        let mut entries = self.lock();
        if entries.len() == KEEP {
            entries.pop_front();
        }
        entries.push_back(ReadTiming { read_id: read_id.to_string(), card_present, number_obtained: Instant::now(), delivered: None, submitted: None });
    }

    pub fn delivered(&self, read_id: &str) {
        let now = Instant::now();
        if let Some(entry) = self.lock().iter_mut().rev().find(|e| e.read_id == read_id) {
            entry.delivered.get_or_insert(now);
        }
    }

    /// The page's submit carrying `read_id` arrived at `at` (the first one counts).
    pub fn submitted(&self, read_id: &str, at: Instant) {
        let now = at;
        if let Some(entry) = self.lock().iter_mut().rev().find(|e| e.read_id == read_id) {
            entry.submitted.get_or_insert(now);
        }
    }

    pub fn snapshot(&self) -> Vec<ReadTiming> {
        self.lock().iter().cloned().collect()
    }
}

/// Recent calls of one kind (bank calls, agent commands) over a sliding window of time, for the
/// error ratio and latency that alarms and the monitor page look at. Bounded: at most
/// [`CallWindow::CAPACITY`] calls are kept, the oldest dropped first.
#[derive(Debug, Default)]
pub struct CallWindow {
    calls: Mutex<VecDeque<Call>>,
}

#[derive(Debug, Clone, Copy)]
struct Call {
    at_ms: i64,
    latency_ms: u64,
    ok: bool,
}

/// What a [`CallWindow`] held over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowFigures {
    pub calls: u64,
    pub errors: u64,
    pub mean_latency_ms: Option<u64>,
    pub max_latency_ms: Option<u64>,
}

impl WindowFigures {
    /// `errors / calls`, 0 without calls.
    pub fn error_ratio(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.errors as f64 / self.calls as f64
        }
    }
}

impl CallWindow {
    pub const CAPACITY: usize = 4096;

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Call>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a call that ended at `at_ms` (the server's clock).
    pub fn record(&self, at_ms: i64, latency: Duration, ok: bool) {
        let mut calls = self.lock();
        if calls.len() == Self::CAPACITY {
            calls.pop_front();
        }
        calls.push_back(Call { at_ms, latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX), ok });
    }

    /// The calls that ended in `(now_ms - window_ms, now_ms]`; older ones are forgotten.
    pub fn figures(&self, now_ms: i64, window_ms: i64) -> WindowFigures {
        let mut calls = self.lock();
        let from = now_ms.saturating_sub(window_ms);
        while calls.front().is_some_and(|c| c.at_ms <= from) {
            calls.pop_front();
        }
        let recent: Vec<Call> = calls.iter().filter(|c| c.at_ms <= now_ms).copied().collect();
        let n = recent.len() as u64;
        let errors = recent.iter().filter(|c| !c.ok).count() as u64;
        let total: u128 = recent.iter().map(|c| u128::from(c.latency_ms)).sum();
        WindowFigures {
            calls: n,
            errors,
            mean_latency_ms: (n > 0).then(|| u64::try_from(total / u128::from(n)).unwrap_or(u64::MAX)),
            max_latency_ms: recent.iter().map(|c| c.latency_ms).max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_prometheus_names() {
        let metrics = Metrics::new();
        metrics.card_read("ok", Duration::from_millis(120));
        metrics.topups.get_or_create(&OutcomeLabel { outcome: "completed" }).inc();
        metrics.bank_call("transfer", false, Duration::from_millis(30));

        let text = metrics.encode();

        for line in [
            "# TYPE cardbridge_card_reads counter",
            "cardbridge_card_reads_total{outcome=\"ok\"} 1",
            "# TYPE cardbridge_card_read_duration_seconds histogram",
            "cardbridge_topups_total{outcome=\"completed\"} 1",
            "cardbridge_bank_call_duration_seconds_count{call=\"transfer\",result=\"error\"} 1",
            "# TYPE cardbridge_open_alarms gauge",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn a_window_forgets_what_is_older_than_it() {
        let window = CallWindow::default();
        window.record(1_000, Duration::from_millis(10), true);
        window.record(2_000, Duration::from_millis(30), false);
        window.record(3_000, Duration::from_millis(20), false);

        let all = window.figures(3_000, 5_000);
        assert_eq!((all.calls, all.errors, all.mean_latency_ms, all.max_latency_ms), (3, 2, Some(20), Some(30)));
        assert!((all.error_ratio() - 2.0 / 3.0).abs() < 1e-9);

        let later = window.figures(7_500, 5_000);
        assert_eq!((later.calls, later.errors), (1, 1), "only the call at 3 000 is within 5 s of 7 500");
        assert_eq!(window.figures(20_000, 5_000), WindowFigures { calls: 0, errors: 0, mean_latency_ms: None, max_latency_ms: None });
        assert_eq!(window.figures(20_000, 5_000).error_ratio(), 0.0);
    }
}
