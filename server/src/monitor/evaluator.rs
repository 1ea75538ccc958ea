//! The supervised tasks of run-state monitoring: the evaluator ([`run`]) and the periodic audit
//! verification ([`run_audit_verification`]).
//!
//! The evaluator wakes every `evaluate_interval_ms` on `tokio::time` (and at once when poked: an
//! agent came or went, the bank link changed), reads "now" from the clock, gathers what it
//! watches — the terminals from the store and the hub, the bank watch, the top-ups in unknown
//! states, the task board — into an [`Observation`], turns it into readings ([`readings`], pure),
//! lets the rule engine decide ([`super::rules`], pure) and applies the transitions (store, admin
//! sockets, webhook). A failed round (the database away) is logged and retried at the next tick:
//! the monitor must outlive what it watches.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::bank::ProbeState;
use super::rules::{ratio_level, AlarmKey, Engine, Hold, Level, Reading, Transition};
use super::{AlarmKind, Monitor, TerminalLive, AUDIT_SUBJECT, BANK_SUBJECT};
use crate::config::MonitoringConfig;
use crate::metrics::WindowFigures;
use crate::secrets::Secrets;
use crate::store::StoreError;
use crate::supervisor::{TaskBoard, TaskState};
use crate::util::{format_ms, ErrorChain};

/// The states a top-up must not linger in.
pub const UNKNOWN_STATES: [&str; 3] = ["debit_unknown", "write_unknown", "exception"];
/// At most this many top-ups per state are looked at per round.
const TOPUPS_PER_STATE: i64 = 500;

/// The hold times of the kinds the rules evaluate.
pub fn holds(config: &MonitoringConfig) -> BTreeMap<AlarmKind, Hold> {
    BTreeMap::from([
        (AlarmKind::TerminalOffline, Hold { raise_after_ms: config.terminal_offline_raise_ms, clear_after_ms: config.terminal_online_clear_ms }),
        (AlarmKind::BankLinkDown, Hold { raise_after_ms: config.bank_down_raise_ms, clear_after_ms: config.bank_up_clear_ms }),
        (AlarmKind::BankErrorRatio, Hold { raise_after_ms: config.bank_error_raise_hold_ms, clear_after_ms: config.bank_error_clear_hold_ms }),
        (AlarmKind::TopupException, Hold { raise_after_ms: 0, clear_after_ms: 0 }),
        (AlarmKind::TopupStuck, Hold { raise_after_ms: config.topup_stuck_raise_ms, clear_after_ms: 0 }),
        (AlarmKind::TaskFailed, Hold { raise_after_ms: 0, clear_after_ms: 0 }),
    ])
}

/// A top-up in one of [`UNKNOWN_STATES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUpSeen {
    pub topup_id: String,
    pub state: &'static str,
    /// Why it is in `exception`.
    pub reason: Option<&'static str>,
    /// Its last step.
    pub since_ms: i64,
}

/// Everything one round looks at.
#[derive(Debug, Clone)]
pub struct Observation {
    pub now_ms: i64,
    pub terminals: Vec<TerminalLive>,
    /// The probe and the window of calls, when a bank is configured.
    pub bank: Option<(ProbeState, WindowFigures)>,
    pub topups: Vec<TopUpSeen>,
    /// Supervised tasks given up on: name and last error.
    pub failed_tasks: Vec<(String, Option<String>)>,
}

/// The readings of an observation (pure).
pub fn readings(obs: &Observation, config: &MonitoringConfig) -> Vec<Reading> {
    let mut out = Vec::new();
    for t in &obs.terminals {
        let key = AlarmKey::new(AlarmKind::TerminalOffline, &t.terminal_id);
        out.push(match (t.online, t.offline_since_ms) {
            (false, Some(since)) => {
                let seen = t.last_seen_ms.map(|s| format!("last seen {} UTC", format_ms(s))).unwrap_or_else(|| "not seen since the server started".into());
                Reading::new(key, Level::Bad, format!("terminal {} offline since {} UTC ({seen})", t.name, format_ms(since))).since(since)
            }
            _ => Reading::new(key, Level::Good, format!("terminal {} online", t.name)),
        });
    }
    if let Some((probe, calls)) = &obs.bank {
        let key = AlarmKey::new(AlarmKind::BankLinkDown, BANK_SUBJECT);
        out.push(match probe.up {
            Some(false) => {
                let why = probe.error.as_deref().unwrap_or("no answer");
                Reading::new(key, Level::Bad, format!("bank health probe failing since {} UTC: {why}", format_ms(probe.since_ms))).since(probe.since_ms)
            }
            Some(true) => Reading::new(key, Level::Good, "bank health probe answering"),
            None => Reading::new(key, Level::Neutral, "bank not probed yet"),
        });
        let level = ratio_level(calls.error_ratio(), calls.calls, config.bank_error_min_calls, config.bank_error_ratio_raise, config.bank_error_ratio_clear);
        let detail = format!(
            "{} of {} bank calls failed over the last {} s ({:.0} %)",
            calls.errors,
            calls.calls,
            config.bank_window_ms / 1000,
            calls.error_ratio() * 100.0
        );
        out.push(Reading::new(AlarmKey::new(AlarmKind::BankErrorRatio, BANK_SUBJECT), level, detail));
    }
    for t in &obs.topups {
        let since = format_ms(t.since_ms);
        if t.state == "exception" {
            let reason = t.reason.unwrap_or("unknown");
            out.push(Reading::new(AlarmKey::new(AlarmKind::TopupException, &t.topup_id), Level::Bad, format!("top-up in exception: {reason}")).since(t.since_ms));
        }
        let detail = format!("top-up in {} since {since} UTC", t.state);
        out.push(Reading::new(AlarmKey::new(AlarmKind::TopupStuck, &t.topup_id), Level::Bad, detail).since(t.since_ms));
    }
    for (name, error) in &obs.failed_tasks {
        let detail = format!("background task {name} given up on: {}", error.as_deref().unwrap_or("no error recorded"));
        out.push(Reading::new(AlarmKey::new(AlarmKind::TaskFailed, name), Level::Bad, detail));
    }
    out
}

/// Run the evaluator until `stop` (the supervised task `monitor-evaluator`).
pub async fn run(monitor: Monitor, tasks: TaskBoard, stop: CancellationToken) -> anyhow::Result<()> {
    let mut engine = Engine::new(holds(monitor.config()));
    let interval = Duration::from_millis(monitor.config().evaluate_interval_ms);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = monitor.poked() => {}
            _ = stop.cancelled() => return Ok(()),
        }
        if let Err(e) = evaluate_once(&monitor, &mut engine, &tasks).await {
            tracing::warn!(error = %ErrorChain(&e), "monitoring round failed; trying again at the next tick");
        }
    }
}

/// One round: observe, evaluate, apply. Returns the transitions applied.
pub async fn evaluate_once(monitor: &Monitor, engine: &mut Engine, tasks: &TaskBoard) -> Result<Vec<Transition>, StoreError> {
    let store = &monitor.0.store;
    let terminals = monitor.terminals_now().await?;
    let mut topups = Vec::new();
    for stored in store.open_topups_in(&UNKNOWN_STATES, TOPUPS_PER_STATE).await? {
        let reason = match &stored.topup.state {
            crate::topup::State::Exception { reason } => Some(reason.code()),
            _ => None,
        };
        topups.push(TopUpSeen { topup_id: stored.topup.id.as_str().to_string(), state: stored.topup.state.name(), reason, since_ms: stored.topup.updated_at.0 });
    }
    let now_ms = monitor.now();
    let config = monitor.config();
    let observation = Observation {
        now_ms,
        terminals: terminals.clone(),
        bank: monitor.bank_watch().map(|w| (w.probe(), w.figures(now_ms, config.bank_window_ms))),
        topups,
        failed_tasks: tasks
            .statuses()
            .into_iter()
            .filter(|s| s.state == TaskState::Failed)
            .map(|s| (s.name.to_string(), s.last_error))
            .collect(),
    };
    monitor.terminals_seen(terminals);

    let open = store.open_alarms().await?;
    monitor.metrics().open_alarms.set(i64::try_from(open.len()).unwrap_or(i64::MAX));
    let open: BTreeSet<AlarmKey> = open.into_iter().map(|a| AlarmKey::new(a.kind, a.subject)).collect();
    engine.sync_open(&open, now_ms);
    let transitions = engine.evaluate(readings(&observation, config), now_ms);
    for t in &transitions {
        let applied = match t {
            Transition::Raise { key, detail } => monitor.raise(key.kind, &key.subject, detail).await,
            Transition::Clear { key, .. } => monitor.clear(key.kind, &key.subject).await,
        };
        if let Err(e) = applied {
            // The engine believes it applied it; the next round's sync with the store corrects that.
            tracing::warn!(error = %ErrorChain(&e), transition = ?t, "applying an alarm transition failed");
        }
    }
    Ok(transitions)
}

/// Verify the whole audit log (chain and signed checkpoints) every `interval` until `stop` (the
/// supervised task `audit-verification`): a failure raises `audit_chain_failed`, a later clean
/// verification clears it. A database that does not answer is not a verdict: logged only.
pub async fn run_audit_verification(monitor: Monitor, secrets: Arc<Secrets>, interval: Duration, stop: CancellationToken) -> anyhow::Result<()> {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => return Ok(()),
        }
        let key = secrets.server_key.verifying_key();
        match crate::checkpoint::verify_log(&monitor.0.store, Some(&key), None).await {
            Ok(v) if v.is_intact() => {
                tracing::debug!(events = v.events, checkpoints = v.checkpoints_verified, "audit log verified");
                if let Err(e) = monitor.clear(AlarmKind::AuditChainFailed, AUDIT_SUBJECT).await {
                    tracing::warn!(error = %ErrorChain(&e), "clearing the audit alarm");
                }
            }
            Ok(v) => {
                let problems: Vec<String> = v.problems.iter().take(3).map(|p| p.to_string()).collect();
                let more = v.problems.len().saturating_sub(problems.len());
                let detail = if more > 0 { format!("{} (and {more} more)", problems.join("; ")) } else { problems.join("; ") };
                tracing::error!(%detail, "the audit log does not verify");
                if let Err(e) = monitor.raise(AlarmKind::AuditChainFailed, AUDIT_SUBJECT, &format!("audit verification failed: {detail}")).await {
                    tracing::error!(error = %ErrorChain(&e), "raising the audit alarm");
                }
            }
            Err(e) => tracing::warn!(error = %ErrorChain(e.as_ref()), "the audit verification could not run"),
        }
    }
}

/// The audit checkpointer failed (it refuses to sign a head that does not extend its last
/// checkpoint, or could not write): raise `audit_chain_failed`. The next clean verification
/// clears it.
pub async fn checkpoint_failed(monitor: &Monitor, error: &anyhow::Error) {
    let detail = format!("audit checkpoint failed: {}", ErrorChain(error.as_ref()));
    if let Err(e) = monitor.raise(AlarmKind::AuditChainFailed, AUDIT_SUBJECT, &detail).await {
        tracing::error!(error = %ErrorChain(&e), "raising the audit alarm");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terminal(id: &str, online: bool, offline_since: Option<i64>) -> TerminalLive {
        TerminalLive {
            terminal_id: id.into(),
            name: format!("Desk {id}"),
            online,
            reader_present: online,
            card_present: false,
            agent_version: None,
            backend: None,
            policy: None,
            readers: Vec::new(),
            last_seen_ms: None,
            offline_since_ms: offline_since,
        }
    }

    fn observation() -> Observation {
        Observation { now_ms: 1_000_000, terminals: Vec::new(), bank: None, topups: Vec::new(), failed_tasks: Vec::new() }
    }

    fn level_of(readings: &[Reading], kind: AlarmKind, subject: &str) -> Option<(Level, Option<i64>)> {
        readings.iter().find(|r| r.key == AlarmKey::new(kind, subject)).map(|r| (r.level, r.since_ms))
    }

    #[test]
    fn terminals_read_bad_since_they_went_offline() {
        let obs = Observation { terminals: vec![terminal("t1", true, None), terminal("t2", false, Some(500))], ..observation() };
        let r = readings(&obs, &MonitoringConfig::default());
        assert_eq!(level_of(&r, AlarmKind::TerminalOffline, "t1"), Some((Level::Good, None)));
        assert_eq!(level_of(&r, AlarmKind::TerminalOffline, "t2"), Some((Level::Bad, Some(500))));
    }

    #[test]
    fn the_bank_reads_from_its_probe_and_its_window() {
        let config = MonitoringConfig::default();
        let window = |calls, errors| WindowFigures { calls, errors, mean_latency_ms: None, max_latency_ms: None };
        let down = ProbeState { up: Some(false), since_ms: 700, at_ms: Some(900), latency_ms: Some(3), error: Some("refused".into()) };
        let r = readings(&Observation { bank: Some((down, window(20, 10))), ..observation() }, &config);
        assert_eq!(level_of(&r, AlarmKind::BankLinkDown, BANK_SUBJECT), Some((Level::Bad, Some(700))));
        assert_eq!(level_of(&r, AlarmKind::BankErrorRatio, BANK_SUBJECT), Some((Level::Bad, None)));

        let unprobed = ProbeState::default();
        let r = readings(&Observation { bank: Some((unprobed, window(20, 2))), ..observation() }, &config);
        assert_eq!(level_of(&r, AlarmKind::BankLinkDown, BANK_SUBJECT).map(|l| l.0), Some(Level::Neutral));
        assert_eq!(level_of(&r, AlarmKind::BankErrorRatio, BANK_SUBJECT).map(|l| l.0), Some(Level::Neutral), "10 % is between 5 and 20");

        let r = readings(&observation(), &config);
        assert!(r.is_empty(), "no bank configured, nothing else watched");
    }

    #[test]
    fn a_top_up_in_exception_alarms_at_once_and_as_stuck_later() {
        let obs = Observation {
            topups: vec![
                TopUpSeen { topup_id: "tu_1".into(), state: "exception", reason: Some("debit_unresolved"), since_ms: 10 },
                TopUpSeen { topup_id: "tu_2".into(), state: "write_unknown", reason: None, since_ms: 20 },
            ],
            ..observation()
        };
        let r = readings(&obs, &MonitoringConfig::default());
        assert_eq!(level_of(&r, AlarmKind::TopupException, "tu_1"), Some((Level::Bad, Some(10))));
        assert_eq!(level_of(&r, AlarmKind::TopupStuck, "tu_1"), Some((Level::Bad, Some(10))));
        assert_eq!(level_of(&r, AlarmKind::TopupException, "tu_2"), None);
        assert_eq!(level_of(&r, AlarmKind::TopupStuck, "tu_2"), Some((Level::Bad, Some(20))));

        let mut engine = Engine::new(holds(&MonitoringConfig::default()));
        let t = engine.evaluate(r, 1_000);
        assert_eq!(t.len(), 1, "only the exception at once; stuck after 15 minutes: {t:?}");
    }
}
