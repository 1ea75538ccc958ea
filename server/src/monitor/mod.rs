//! Run-state monitoring (R3.8): every admitted terminal's online state, the bank interface and the
//! reader-management interface (the hub) watched in real time, and alarms raised on anomalies.
//!
//! # Layout
//!
//! - [`Monitor`] (in `AppState::monitor`): raising, acknowledging and clearing alarms — stored
//!   (`store::alarms`), pushed to the admins' sockets ([`Monitor::subscribe`], `/ws/admin`) and to
//!   the webhook — and the live view of terminals, bank link and hub (`/api/admin/monitor`).
//!   Hooks for other parts: [`Monitor::raise_external`] / [`Monitor::clear_external`] (the
//!   reconciliation), the top-up engine's `Effect::Alarm` ([`Monitor`] is its
//!   [`crate::topup::service::StepObserver`]), the audit checkpointer's failures.
//! - [`rules`]: the pure rule engine — readings in, raise/clear transitions out, with hold times
//!   and separate raise/clear thresholds (no flapping).
//! - [`evaluator`]: the supervised tasks — the evaluator (gathers readings from the hub, the bank
//!   watch, the store and the task board on the clock, runs the rules, applies the transitions),
//!   the periodic audit verification.
//! - [`bank`]: the bank interface watched — [`bank::MeteredBank`] wraps the gateway to time and
//!   count every call; the health probe.
//! - [`webhook`]: signed webhook deliveries with retries, off the evaluator's path.

pub mod bank;
pub mod evaluator;
pub mod rules;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use protocol::agent::{LocalPolicyReport, ReaderInfo, ReaderState};
use tokio::sync::{broadcast, Notify};

use crate::clock::Clock;
use crate::config::MonitoringConfig;
use crate::hub::{Hub, HubSnapshot};
use crate::metrics::{KindLabel, Metrics, OutcomeLabel};
use crate::store::{AckError, Store, StoreError, StoredAlarm, Terminal};
use crate::topup::{Effect, Notice, State};
use crate::util::ErrorChain;

/// What an alarm is about (the stored `kind`, `protocol::admin::AlarmKind` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlarmKind {
    TerminalOffline,
    BankLinkDown,
    BankErrorRatio,
    TopupException,
    TopupStuck,
    ReconciliationMismatch,
    SettlementFailed,
    AuditChainFailed,
    TaskFailed,
}

impl AlarmKind {
    pub const ALL: [AlarmKind; 9] = [
        AlarmKind::TerminalOffline,
        AlarmKind::BankLinkDown,
        AlarmKind::BankErrorRatio,
        AlarmKind::TopupException,
        AlarmKind::TopupStuck,
        AlarmKind::ReconciliationMismatch,
        AlarmKind::SettlementFailed,
        AlarmKind::AuditChainFailed,
        AlarmKind::TaskFailed,
    ];

    pub fn code(self) -> &'static str {
        match self {
            AlarmKind::TerminalOffline => "terminal_offline",
            AlarmKind::BankLinkDown => "bank_link_down",
            AlarmKind::BankErrorRatio => "bank_error_ratio",
            AlarmKind::TopupException => "topup_exception",
            AlarmKind::TopupStuck => "topup_stuck",
            AlarmKind::ReconciliationMismatch => "reconciliation_mismatch",
            AlarmKind::SettlementFailed => "settlement_failed",
            AlarmKind::AuditChainFailed => "audit_chain_failed",
            AlarmKind::TaskFailed => "task_failed",
        }
    }

    pub fn parse(code: &str) -> Option<AlarmKind> {
        AlarmKind::ALL.into_iter().find(|k| k.code() == code)
    }

    pub fn to_wire(self) -> protocol::admin::AlarmKind {
        use protocol::admin::AlarmKind as W;
        match self {
            AlarmKind::TerminalOffline => W::TerminalOffline,
            AlarmKind::BankLinkDown => W::BankLinkDown,
            AlarmKind::BankErrorRatio => W::BankErrorRatio,
            AlarmKind::TopupException => W::TopupException,
            AlarmKind::TopupStuck => W::TopupStuck,
            AlarmKind::ReconciliationMismatch => W::ReconciliationMismatch,
            AlarmKind::SettlementFailed => W::SettlementFailed,
            AlarmKind::AuditChainFailed => W::AuditChainFailed,
            AlarmKind::TaskFailed => W::TaskFailed,
        }
    }
}

/// The subject of the bank's alarms.
pub const BANK_SUBJECT: &str = "bank";
/// The subject of the audit log's alarm.
pub const AUDIT_SUBJECT: &str = "audit-log";

/// A terminal as monitoring sees it now.
#[derive(Debug, Clone, PartialEq)]
pub struct TerminalLive {
    pub terminal_id: String,
    pub name: String,
    pub online: bool,
    pub reader_present: bool,
    pub card_present: bool,
    pub agent_version: Option<String>,
    pub backend: Option<String>,
    pub policy: Option<LocalPolicyReport>,
    pub readers: Vec<ReaderInfo>,
    pub last_seen_ms: Option<i64>,
    pub offline_since_ms: Option<i64>,
}

impl TerminalLive {
    /// The same state for the admins (the last-seen instant moves with every heartbeat and does
    /// not count as a change).
    pub fn same_state(&self, other: &TerminalLive) -> bool {
        TerminalLive { last_seen_ms: None, ..self.clone() } == TerminalLive { last_seen_ms: None, ..other.clone() }
    }
}

/// Whether a terminal is monitored: enrolled (it has an agent key) and not revoked.
pub fn is_admitted(terminal: &Terminal) -> bool {
    terminal.enrolled_at.is_some() && terminal.revoked_at.is_none()
}

/// A terminal's live state from the hub at `now_ms`: online when its agent is connected and was
/// heard from within `offline_after_ms`. Offline since its silence began, since it left, or
/// (never seen by this server) since `started_ms`.
pub fn terminal_live(terminal: &Terminal, hub: &HubSnapshot, now_ms: i64, offline_after_ms: i64, started_ms: i64) -> TerminalLive {
    let agent = hub.agents.iter().find(|a| a.terminal_id == terminal.terminal_id);
    let last_seen = hub.last_seen.get(&terminal.terminal_id).copied();
    let online = agent.is_some_and(|a| now_ms.saturating_sub(a.last_seen_ms) <= offline_after_ms);
    let offline_since_ms = match (online, agent) {
        (true, _) => None,
        (false, Some(a)) => Some(a.last_seen_ms.saturating_add(offline_after_ms)),
        (false, None) => Some(last_seen.unwrap_or(started_ms)),
    };
    let status = agent.map(|a| &a.status);
    TerminalLive {
        terminal_id: terminal.terminal_id.clone(),
        name: terminal.name.clone(),
        online,
        reader_present: online && status.is_some_and(|s| s.readers.iter().any(|r| r.state != ReaderState::Unavailable)),
        card_present: online && status.is_some_and(|s| s.card.is_some()),
        agent_version: status.map(|s| s.agent_version.clone()),
        backend: status.map(|s| s.backend.clone()),
        policy: status.map(|s| s.policy.clone()),
        readers: status.map(|s| s.readers.clone()).unwrap_or_default(),
        last_seen_ms: last_seen,
        offline_since_ms,
    }
}

/// What admins are told as it happens (internal; `/ws/admin` turns it into
/// `protocol::admin::ServerToAdmin`).
#[derive(Debug, Clone)]
pub enum MonitorEvent {
    AlarmRaised(StoredAlarm),
    AlarmAcked(StoredAlarm),
    AlarmCleared(StoredAlarm),
    TerminalChanged(TerminalLive),
}

/// Events an admin socket may fall behind by before it is sent a fresh snapshot.
const EVENT_CAPACITY: usize = 256;

/// The shared monitor (cheap to clone).
#[derive(Clone)]
pub struct Monitor(Arc<Inner>);

struct Inner {
    store: Store,
    hub: Arc<Hub>,
    cluster: Option<crate::cluster::Cluster>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    config: MonitoringConfig,
    /// When this server started watching (terminals never seen are offline since then).
    started_ms: i64,
    events: broadcast::Sender<MonitorEvent>,
    webhook: Option<webhook::Webhook>,
    /// The bank's watch, when a bank gateway is configured.
    bank: Option<Arc<bank::BankWatch>>,
    /// Wakes the evaluator before its next tick (an agent came or went, the bank link changed).
    poke: Notify,
    /// The terminals' states at the last evaluation, for change events.
    terminals: Mutex<BTreeMap<String, TerminalLive>>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").field("started_ms", &self.0.started_ms).finish_non_exhaustive()
    }
}

/// What the monitor is built from.
pub struct MonitorParts {
    pub store: Store,
    pub hub: Arc<Hub>,
    /// With several instances: which terminals' agents are connected to the others.
    pub cluster: Option<crate::cluster::Cluster>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub config: MonitoringConfig,
    pub webhook: Option<webhook::Webhook>,
    pub bank: Option<Arc<bank::BankWatch>>,
}

impl Monitor {
    pub fn new(parts: MonitorParts) -> Monitor {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let started_ms = parts.clock.now_ms();
        Monitor(Arc::new(Inner {
            store: parts.store,
            hub: parts.hub,
            cluster: parts.cluster,
            clock: parts.clock,
            metrics: parts.metrics,
            config: parts.config,
            started_ms,
            events,
            webhook: parts.webhook,
            bank: parts.bank,
            poke: Notify::new(),
            terminals: Mutex::new(BTreeMap::new()),
        }))
    }

    pub fn config(&self) -> &MonitoringConfig {
        &self.0.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub fn bank_watch(&self) -> Option<&Arc<bank::BankWatch>> {
        self.0.bank.as_ref()
    }

    fn now(&self) -> i64 {
        self.0.clock.now_ms()
    }

    /// Follow alarm and terminal changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<MonitorEvent> {
        self.0.events.subscribe()
    }

    /// Have the evaluator look now rather than at its next tick.
    pub fn poke(&self) {
        self.0.poke.notify_one();
    }

    async fn poked(&self) {
        self.0.poke.notified().await;
    }

    fn publish(&self, event: MonitorEvent) {
        // No admin listening is fine: the alarm table is the record.
        let _ = self.0.events.send(event);
    }

    fn deliver(&self, kind: protocol::admin::AlarmEventKind, alarm: &StoredAlarm) {
        if let Some(webhook) = &self.0.webhook {
            webhook.send(kind, alarm_to_wire(alarm));
        }
    }

    /// Raise an alarm of `kind` about `subject` now: stored, pushed to the admins' sockets and
    /// the webhook. `false` when one is open already (nothing changes).
    pub async fn raise(&self, kind: AlarmKind, subject: &str, detail: &str) -> Result<bool, StoreError> {
        let Some(alarm) = self.0.store.raise_alarm(kind, subject, detail, self.now()).await? else { return Ok(false) };
        tracing::warn!(alarm_id = %alarm.alarm_id, kind = kind.code(), subject, detail, "alarm raised");
        self.0.metrics.alarms_raised.get_or_create(&KindLabel { kind: kind.code() }).inc();
        self.0.metrics.open_alarms.inc();
        self.deliver(protocol::admin::AlarmEventKind::Raised, &alarm);
        self.publish(MonitorEvent::AlarmRaised(alarm));
        Ok(true)
    }

    /// Clear the open alarm of `kind` about `subject`, if there is one. `false` when none was open.
    pub async fn clear(&self, kind: AlarmKind, subject: &str) -> Result<bool, StoreError> {
        let Some(alarm) = self.0.store.clear_alarm(kind, subject, self.now()).await? else { return Ok(false) };
        tracing::info!(alarm_id = %alarm.alarm_id, kind = kind.code(), subject, "alarm cleared");
        self.0.metrics.open_alarms.dec();
        self.deliver(protocol::admin::AlarmEventKind::Cleared, &alarm);
        self.publish(MonitorEvent::AlarmCleared(alarm));
        Ok(true)
    }

    /// The hook for conditions found outside the monitor — the reconciliation's mismatch
    /// ([`AlarmKind::ReconciliationMismatch`], subject the business day), or any other kind the
    /// rules do not evaluate themselves: raise the alarm (stored, pushed, webhook) unless it is
    /// open already. Returns whether a new alarm was raised.
    pub async fn raise_external(&self, kind: AlarmKind, subject: &str, detail: &str) -> Result<bool, StoreError> {
        self.raise(kind, subject, detail).await
    }

    /// The condition behind an externally raised alarm ended (a later reconciliation of that day
    /// matched): clear it. Returns whether one was open.
    pub async fn clear_external(&self, kind: AlarmKind, subject: &str) -> Result<bool, StoreError> {
        self.clear(kind, subject).await
    }

    /// A person saw the alarm: record who (audited), tell the admins and the webhook.
    pub async fn ack(&self, alarm_id: &str, by: &str) -> Result<StoredAlarm, AckError> {
        let (alarm, changed) = self.0.store.ack_alarm(alarm_id, by, self.now()).await?;
        if changed {
            tracing::info!(alarm_id, by, kind = alarm.kind.code(), subject = %alarm.subject, "alarm acknowledged");
            self.deliver(protocol::admin::AlarmEventKind::Acked, &alarm);
            self.publish(MonitorEvent::AlarmAcked(alarm.clone()));
        }
        Ok(alarm)
    }

    /// Every admitted terminal's state now.
    pub async fn terminals_now(&self) -> Result<Vec<TerminalLive>, StoreError> {
        let terminals = self.0.store.terminals().await?;
        let hub = self.0.hub.snapshot();
        let now = self.now();
        let offline_after = i64::try_from(self.0.config.agent_offline_after_ms).unwrap_or(i64::MAX);
        // Agents connected to another live instance are online: that instance's lease vouches
        // for them (it closes an agent silent past the heartbeat window itself).
        let elsewhere: std::collections::HashSet<String> = match &self.0.cluster {
            Some(cluster) => cluster
                .online()
                .await
                .map_err(StoreError::from)?
                .into_iter()
                .filter(|(_, instance)| instance != cluster.instance_id())
                .map(|(terminal, _)| terminal)
                .collect(),
            None => Default::default(),
        };
        Ok(terminals
            .iter()
            .filter(|t| is_admitted(t))
            .map(|t| {
                let mut live = terminal_live(t, &hub, now, offline_after, self.0.started_ms);
                if !live.online && elsewhere.contains(&t.terminal_id) {
                    live.online = true;
                    live.reader_present = true;
                    live.offline_since_ms = None;
                    live.last_seen_ms = Some(now);
                }
                live
            })
            .collect())
    }

    /// Remember the terminals' states and tell the admins about those that changed.
    fn terminals_seen(&self, now: Vec<TerminalLive>) {
        let changed: Vec<TerminalLive> = {
            let mut known = self.0.terminals.lock().unwrap_or_else(|p| p.into_inner());
            let changed = now
                .iter()
                .filter(|t| known.get(&t.terminal_id).is_none_or(|before| !before.same_state(t)))
                .cloned()
                .collect();
            *known = now.into_iter().map(|t| (t.terminal_id.clone(), t)).collect();
            changed
        };
        for terminal in changed {
            tracing::info!(terminal_id = %terminal.terminal_id, online = terminal.online, "terminal state changed");
            self.publish(MonitorEvent::TerminalChanged(terminal));
        }
    }

    /// The text of `/metrics`: the connection gauges set from the hub now, then every metric.
    pub fn scrape(&self) -> String {
        self.0.hub.snapshot();
        self.0.metrics.encode()
    }

    /// The live view of `/api/admin/monitor`.
    pub async fn view(&self) -> Result<protocol::admin::MonitorView, StoreError> {
        let terminals = self.terminals_now().await?;
        let open_alarms = self.0.store.count_open_alarms().await?;
        let window_ms = self.0.config.bank_window_ms;
        let commands = self.0.hub.command_figures(window_ms);
        let hub = self.0.hub.snapshot();
        Ok(protocol::admin::MonitorView {
            at_ms: self.now(),
            terminals: terminals.iter().map(terminal_to_wire).collect(),
            bank: self.bank_link(),
            hub: protocol::admin::HubFigures {
                connected_agents: hub.agents.len() as u64,
                connected_pages: hub.pages as u64,
                connected_kiosks: hub.kiosks as u64,
                commands_sent: commands.sent,
                command_errors: commands.failed,
                mean_command_latency_ms: commands.window.mean_latency_ms,
                max_command_latency_ms: commands.window.max_latency_ms,
            },
            open_alarms: u64::try_from(open_alarms).unwrap_or(0),
        })
    }

    fn bank_link(&self) -> protocol::admin::BankLink {
        let window_ms = self.0.config.bank_window_ms;
        let Some(watch) = &self.0.bank else {
            return protocol::admin::BankLink {
                configured: false,
                up: false,
                last_probe_at_ms: None,
                last_probe_latency_ms: None,
                last_error: None,
                window_ms,
                calls: 0,
                errors: 0,
                error_ratio: 0.0,
                mean_latency_ms: None,
                max_latency_ms: None,
            };
        };
        let probe = watch.probe();
        let calls = watch.figures(self.now(), window_ms);
        protocol::admin::BankLink {
            configured: true,
            up: probe.up == Some(true),
            last_probe_at_ms: probe.at_ms,
            last_probe_latency_ms: probe.latency_ms,
            last_error: probe.error,
            window_ms,
            calls: calls.calls,
            errors: calls.errors,
            error_ratio: calls.error_ratio(),
            mean_latency_ms: calls.mean_latency_ms,
            max_latency_ms: calls.max_latency_ms,
        }
    }

    /// What `/readyz` finds down now: the database ([`Store::ready_check`] within `deadline`)
    /// and, when one is configured, the bank link (its latest health probe, if recent).
    pub async fn unready(&self, deadline: std::time::Duration) -> Vec<protocol::admin::Dependency> {
        let mut down = Vec::new();
        match tokio::time::timeout(deadline, self.0.store.ready_check()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %ErrorChain(&e), "readiness: the database does not answer");
                down.push(protocol::admin::Dependency::Database);
            }
            Err(_) => {
                tracing::warn!(deadline_ms = deadline.as_millis() as u64, "readiness: the database did not answer in time");
                down.push(protocol::admin::Dependency::Database);
            }
        }
        if let Some(watch) = &self.0.bank {
            let probe = watch.probe();
            // A probe older than a few intervals says nothing: its task is not running.
            let fresh_for = 3 * i64::try_from(self.0.config.bank_probe_interval_ms + self.0.config.bank_probe_timeout_ms).unwrap_or(i64::MAX / 4);
            let fresh = probe.at_ms.is_some_and(|at| self.now().saturating_sub(at) <= fresh_for);
            if probe.up != Some(true) || !fresh {
                down.push(protocol::admin::Dependency::Bank);
            }
        }
        down
    }
}

/// The top-up engine's steps as monitoring sees them: the end states reached are counted
/// (`cardbridge_topups_total`), and `Effect::Alarm` (a top-up went to `exception`) raises a
/// stored alarm.
impl crate::topup::service::StepObserver for Monitor {
    fn recorded<'a>(&'a self, topup_id: &'a str, state: &'a State, effects: &'a [Effect]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(outcome) = counted_outcome(state, effects) {
                self.0.metrics.topups.get_or_create(&OutcomeLabel { outcome }).inc();
            }
            for effect in effects {
                if let Effect::Alarm(reason) = effect {
                    let detail = format!("top-up in exception: {}", reason.code());
                    if let Err(e) = self.raise(AlarmKind::TopupException, topup_id, &detail).await {
                        tracing::error!(topup = topup_id, error = %ErrorChain(&e), "raising a top-up's alarm");
                    }
                }
            }
        })
    }
}

/// The daily settlement's alarms (R3.7) as stored alarms: a day that does not reconcile raises
/// `reconciliation_mismatch`, a day the scheduled job could not settle `settlement_failed`, each
/// with the business day as subject. The sink is called outside any async context's control, so
/// the raise runs in its own task.
#[derive(Debug, Clone)]
pub struct SettlementAlarms(pub Monitor);

impl SettlementAlarms {
    fn spawn_raise(&self, kind: AlarmKind, subject: &str, detail: String) {
        let (monitor, subject) = (self.0.clone(), subject.to_string());
        tokio::spawn(async move {
            if let Err(e) = monitor.raise_external(kind, &subject, &detail).await {
                tracing::error!(kind = kind.code(), subject, error = %ErrorChain(&e), "raising a settlement alarm");
            }
        });
    }
}

impl crate::settlement::AlarmSink for SettlementAlarms {
    fn mismatch(&self, date: &str, revision: u32, mismatches: usize) {
        let detail = format!("settlement of {date}, revision {revision}: {mismatches} item(s) do not reconcile with the bank's statement");
        self.spawn_raise(AlarmKind::ReconciliationMismatch, date, detail);
    }

    fn failed(&self, date: &str, why: &str) {
        self.spawn_raise(AlarmKind::SettlementFailed, date, format!("the daily settlement of {date} failed: {why}"));
    }

    fn settled(&self, date: &str, mismatches: usize) {
        let (monitor, date) = (self.0.clone(), date.to_string());
        tokio::spawn(async move {
            let mut kinds = vec![AlarmKind::SettlementFailed];
            if mismatches == 0 {
                kinds.push(AlarmKind::ReconciliationMismatch);
            }
            for kind in kinds {
                if let Err(e) = monitor.clear_external(kind, &date).await {
                    tracing::error!(kind = kind.code(), date, error = %ErrorChain(&e), "clearing a settlement alarm");
                }
            }
        });
    }
}

/// The end state a step counts in `cardbridge_topups_total`, if any. The terminal states take no
/// further step, so each is counted once; a top-up in `exception` may be resumed (its alarm effect
/// comes again) and is counted on the step that put it there, the one that tells the kiosk it is
/// held for review.
pub fn counted_outcome(state: &State, effects: &[Effect]) -> Option<&'static str> {
    match state {
        State::Completed => Some("completed"),
        State::Failed { .. } => Some("failed"),
        State::Refunded => Some("refunded"),
        State::Exception { .. } if effects.contains(&Effect::Notify(Notice::HeldForReview)) => Some("exception"),
        _ => None,
    }
}

/// An alarm on the wire.
pub fn alarm_to_wire(alarm: &StoredAlarm) -> protocol::admin::Alarm {
    use protocol::admin::AlarmState;
    protocol::admin::Alarm {
        alarm_id: alarm.alarm_id.clone(),
        kind: alarm.kind.to_wire(),
        subject: alarm.subject.clone(),
        detail: alarm.detail.clone(),
        state: match (alarm.cleared_at, alarm.acked_at) {
            (Some(_), _) => AlarmState::Cleared,
            (None, Some(_)) => AlarmState::Acknowledged,
            (None, None) => AlarmState::Raised,
        },
        raised_at_ms: alarm.raised_at,
        acked_at_ms: alarm.acked_at,
        acked_by: alarm.acked_by.clone(),
        cleared_at_ms: alarm.cleared_at,
    }
}

/// A terminal's state on the wire.
pub fn terminal_to_wire(t: &TerminalLive) -> protocol::admin::TerminalState {
    protocol::admin::TerminalState {
        terminal_id: t.terminal_id.clone(),
        name: t.name.clone(),
        online: t.online,
        reader_present: t.reader_present,
        card_present: t.card_present,
        agent_version: t.agent_version.clone(),
        backend: t.backend.clone(),
        policy: t.policy.clone(),
        readers: t.readers.clone(),
        last_seen_at_ms: t.last_seen_ms,
        offline_since_ms: t.offline_since_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{AgentSnapshot, AgentStatus};

    fn terminal(id: &str) -> Terminal {
        Terminal {
            terminal_id: id.into(),
            name: format!("Desk {id}"),
            permitted: true,
            public_key: Some(vec![1; 32]),
            enrolled_at: Some(1),
            revoked_at: None,
            topup_enabled: false,
        }
    }

    fn connected(id: &str, last_seen_ms: i64, readers: Vec<ReaderInfo>) -> AgentSnapshot {
        AgentSnapshot {
            terminal_id: id.into(),
            status: AgentStatus {
                backend: "pcsc".into(),
                agent_version: "0.1.0".into(),
                policy: LocalPolicyReport::default(),
                readers,
                card: None,
                card_read: false,
            },
            last_seen_ms,
        }
    }

    #[test]
    fn a_terminal_is_online_while_heard_from_within_the_window() {
        let reader = vec![ReaderInfo { name: "R".into(), state: ReaderState::Empty }];
        let hub = HubSnapshot {
            agents: vec![connected("t1", 100_000, reader.clone())],
            last_seen: [("t1".to_string(), 100_000), ("t2".to_string(), 50_000)].into(),
            pages: 0,
            kiosks: 0,
        };
        let at = |now| terminal_live(&terminal("t1"), &hub, now, 45_000, 0);

        let fresh = at(145_000);
        assert!(fresh.online && fresh.reader_present);
        assert_eq!((fresh.offline_since_ms, fresh.agent_version.as_deref()), (None, Some("0.1.0")));

        let silent = at(145_001);
        assert!(!silent.online && !silent.reader_present, "silent past 45 s: offline though connected");
        assert_eq!(silent.offline_since_ms, Some(145_000));

        let gone = terminal_live(&terminal("t2"), &hub, 200_000, 45_000, 0);
        assert_eq!((gone.online, gone.offline_since_ms, gone.last_seen_ms), (false, Some(50_000), Some(50_000)));
        let never = terminal_live(&terminal("t3"), &hub, 200_000, 45_000, 7);
        assert_eq!((never.online, never.offline_since_ms, never.last_seen_ms), (false, Some(7), None));

        assert!(fresh.same_state(&TerminalLive { last_seen_ms: Some(1), ..fresh.clone() }), "a heartbeat is no change");
        assert!(!fresh.same_state(&silent));
    }

    #[test]
    fn a_top_up_is_counted_once_in_the_end_state_it_reaches() {
        use crate::topup::{ExceptionReason, FailReason};
        let reason = ExceptionReason::DebitUnresolved;
        let entering = [Effect::Alarm(reason), Effect::Notify(Notice::HeldForReview)];
        assert_eq!(counted_outcome(&State::Exception { reason }, &entering), Some("exception"));
        assert_eq!(counted_outcome(&State::Exception { reason }, &[Effect::Alarm(reason)]), None, "resumed in exception");
        assert_eq!(counted_outcome(&State::Failed { reason: FailReason::DebitDeclined }, &[]), Some("failed"));
        assert_eq!(counted_outcome(&State::Completed, &[]), Some("completed"));
        assert_eq!(counted_outcome(&State::DebitUnknown, &[]), None);
    }

    #[test]
    fn alarm_kinds_round_trip_through_their_codes() {
        for kind in AlarmKind::ALL {
            assert_eq!(AlarmKind::parse(kind.code()), Some(kind));
            assert_eq!(protocol::encode(&kind.to_wire()), format!("\"{}\"", kind.code()), "stored code = wire name");
        }
        assert_eq!(AlarmKind::parse("meteor_strike"), None);
    }
}
