//! The bank interface watched: [`MeteredBank`] wraps the gateway so that every call is timed and
//! counted (`cardbridge_bank_call_duration_seconds`, the error ratio's window), and [`run_probe`]
//! calls its health check periodically (the link is up while it answers).
//!
//! A call "failed" when it got no usable answer: the bank unreachable, a timeout, a 5xx, a reply
//! whose signature did not verify, a money call whose outcome is unknown. A refusal or a decline
//! is an answer, not a failure of the link.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use card::pan::Pan;
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::bank::{
    BankError, BankGateway, BindingToken, BoundCard, RefundOrder, RefundOutcome, Statement, TransferOrder, TransferOutcome,
    TransferStatus,
};
use crate::clock::Clock;
use crate::metrics::{CallWindow, Metrics, WindowFigures};

/// The latest health probe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeState {
    /// `None` before the first probe.
    pub up: Option<bool>,
    /// Since when `up` has its value (the first probe that found it so).
    pub since_ms: i64,
    pub at_ms: Option<i64>,
    pub latency_ms: Option<u64>,
    pub error: Option<String>,
}

/// What monitoring knows of the bank link: the probe and the recent calls.
#[derive(Debug, Default)]
pub struct BankWatch {
    calls: CallWindow,
    probe: Mutex<ProbeState>,
}

impl BankWatch {
    pub fn probe(&self) -> ProbeState {
        self.probe.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Bank calls (not probes) that ended over the window.
    pub fn figures(&self, now_ms: i64, window_ms: i64) -> WindowFigures {
        self.calls.figures(now_ms, window_ms)
    }

    /// Record a probe's outcome; true when the link changed (up ↔ down, or the first probe).
    pub fn probed(&self, at_ms: i64, latency: Duration, error: Option<String>) -> bool {
        let mut probe = self.probe.lock().unwrap_or_else(|p| p.into_inner());
        let up = error.is_none();
        let changed = probe.up != Some(up);
        if changed {
            probe.up = Some(up);
            probe.since_ms = at_ms;
        }
        probe.at_ms = Some(at_ms);
        probe.latency_ms = Some(u64::try_from(latency.as_millis()).unwrap_or(u64::MAX));
        probe.error = error;
        changed
    }
}

/// Whether a bank error means the link failed (rather than the bank refusing something).
pub fn is_link_failure(e: &BankError) -> bool {
    match e {
        BankError::Unavailable(_) | BankError::BadReplySignature | BankError::MalformedReply(_) => true,
        BankError::Rejected { .. } | BankError::InvalidRequest(_) => false,
    }
}

/// The gateway with every call timed and counted. Behaves exactly like the gateway it wraps.
#[derive(Clone)]
pub struct MeteredBank {
    inner: Arc<dyn BankGateway>,
    watch: Arc<BankWatch>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MeteredBank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredBank").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl MeteredBank {
    pub fn new(inner: Arc<dyn BankGateway>, watch: Arc<BankWatch>, metrics: Arc<Metrics>, clock: Arc<dyn Clock>) -> MeteredBank {
        MeteredBank { inner, watch, metrics, clock }
    }

    fn record(&self, call: &'static str, failed: bool, started: Instant) {
        let took = started.elapsed();
        self.metrics.bank_call(call, !failed, took);
        if call != "health" {
            self.watch.calls.record(self.clock.now_ms(), took, !failed);
        }
    }

    async fn timed<T>(&self, call: &'static str, fut: BoxFuture<'_, Result<T, BankError>>, failed: impl Fn(&Result<T, BankError>) -> bool) -> Result<T, BankError> {
        let started = Instant::now();
        let result = fut.await;
        self.record(call, failed(&result), started);
        result
    }
}

fn failed_plain<T>(r: &Result<T, BankError>) -> bool {
    r.as_ref().err().is_some_and(is_link_failure)
}

impl BankGateway for MeteredBank {
    fn create_binding<'a>(&'a self, card: &'a Pan, phone: &'a str) -> BoxFuture<'a, Result<BoundCard, BankError>> {
        Box::pin(self.timed("create_binding", self.inner.create_binding(card, phone), failed_plain))
    }

    fn delete_binding<'a>(&'a self, token: &'a BindingToken) -> BoxFuture<'a, Result<(), BankError>> {
        Box::pin(self.timed("delete_binding", self.inner.delete_binding(token), failed_plain))
    }

    fn transfer<'a>(&'a self, order: &'a TransferOrder) -> BoxFuture<'a, Result<TransferOutcome, BankError>> {
        Box::pin(self.timed("transfer", self.inner.transfer(order), |r| {
            matches!(r, Ok(TransferOutcome::Unknown(_))) || failed_plain(r)
        }))
    }

    fn transfer_status<'a>(&'a self, idempotency_key: &'a str) -> BoxFuture<'a, Result<TransferStatus, BankError>> {
        Box::pin(self.timed("transfer_status", self.inner.transfer_status(idempotency_key), failed_plain))
    }

    fn refund<'a>(&'a self, order: &'a RefundOrder) -> BoxFuture<'a, Result<RefundOutcome, BankError>> {
        Box::pin(self.timed("refund", self.inner.refund(order), |r| matches!(r, Ok(RefundOutcome::Unknown(_))) || failed_plain(r)))
    }

    fn statement<'a>(&'a self, date: &'a str) -> BoxFuture<'a, Result<Statement, BankError>> {
        Box::pin(self.timed("statement", self.inner.statement(date), failed_plain))
    }

    fn health(&self) -> BoxFuture<'_, Result<(), BankError>> {
        // Any failed probe counts: a refusal of the probe (401: the key does not match) is a link
        // that cannot be used.
        Box::pin(self.timed("health", self.inner.health(), |r| r.is_err()))
    }
}

/// Probe the bank every `interval` (the first at once) until `stop`: each probe has `deadline`;
/// the outcome goes to the monitor's bank watch and the `cardbridge_bank_link_up` gauge, and a
/// change of the link wakes the evaluator.
pub async fn run_probe(
    monitor: super::Monitor,
    bank: Arc<dyn BankGateway>,
    interval: Duration,
    deadline: Duration,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let Some(watch) = monitor.bank_watch().cloned() else {
        stop.cancelled().await;
        return Ok(());
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => return Ok(()),
        }
        let started = Instant::now();
        let error = match tokio::time::timeout(deadline, bank.health()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {} ms", deadline.as_millis())),
        };
        let up = error.is_none();
        if let Some(why) = &error {
            tracing::warn!(why = %why, "bank health probe failed");
        }
        monitor.metrics().bank_link_up.set(i64::from(up));
        if watch.probed(monitor.0.clock.now_ms(), started.elapsed(), error) {
            tracing::info!(up, "bank link changed");
            monitor.poke();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_changes_only_when_the_probe_s_answer_does() {
        let watch = BankWatch::default();
        assert_eq!(watch.probe().up, None);
        assert!(watch.probed(1_000, Duration::from_millis(5), None), "the first probe");
        assert!(!watch.probed(2_000, Duration::from_millis(5), None));
        assert!(watch.probed(3_000, Duration::from_millis(5), Some("refused".into())));
        assert!(!watch.probed(4_000, Duration::from_millis(5), Some("refused".into())));
        let probe = watch.probe();
        assert_eq!((probe.up, probe.since_ms, probe.at_ms, probe.error.as_deref()), (Some(false), 3_000, Some(4_000), Some("refused")));
    }

    #[test]
    fn refusals_are_answers_not_link_failures() {
        assert!(is_link_failure(&BankError::Unavailable("connection refused".into())));
        assert!(is_link_failure(&BankError::BadReplySignature));
        assert!(!is_link_failure(&BankError::Rejected { status: 422, code: crate::bank::RejectCode::BindingRefused, message: String::new() }));
    }
}
