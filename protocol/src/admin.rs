//! Run-state monitoring (R3.8) on the wire: the frames of `/ws/admin` (alarms raised, acknowledged
//! and cleared, terminals changing state), the bodies of the admin monitoring API
//! (`/api/admin/alarms`, `/api/admin/monitor`), the body of the alarm webhook, and the readiness
//! answer of `/readyz`.
//!
//! Instants are unix milliseconds (`*_at_ms`), as in the bank gateway API: these bodies are read by
//! programs (an alerting system, a dashboard) as much as by the admin page.

use serde::{Deserialize, Serialize};

use crate::agent::{LocalPolicyReport, ReaderInfo};

/// What an alarm is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    /// An admitted terminal's agent has been silent or away longer than the threshold.
    TerminalOffline,
    /// The bank gateway's health probe has failed longer than the threshold.
    BankLinkDown,
    /// Too many bank calls failed over the window.
    BankErrorRatio,
    /// A top-up went to `exception`: a person has to decide.
    TopupException,
    /// A top-up stayed in `debit_unknown`, `write_unknown` or `exception` longer than the
    /// threshold.
    TopupStuck,
    /// The daily reconciliation found a difference with the bank's statement.
    ReconciliationMismatch,
    /// The scheduled daily settlement could not settle a day.
    SettlementFailed,
    /// The audit log's verification failed, or a checkpoint of its head was refused.
    AuditChainFailed,
    /// A supervised background task was given up on.
    TaskFailed,
}

/// Where an alarm stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AlarmState {
    /// Raised, nobody has acknowledged it yet.
    Raised,
    /// A person has seen it; the condition still holds.
    Acknowledged,
    /// The condition ended (an acknowledged alarm keeps who acknowledged it).
    Cleared,
}

/// One alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Alarm {
    pub alarm_id: String,
    pub kind: AlarmKind,
    /// What it is about: a terminal id, a top-up id, `bank`, a business day, a task name.
    pub subject: String,
    /// A readable line: what was seen (never a card number or a secret).
    pub detail: String,
    pub state: AlarmState,
    pub raised_at_ms: i64,
    pub acked_at_ms: Option<i64>,
    /// The user name of the admin who acknowledged it.
    pub acked_by: Option<String>,
    pub cleared_at_ms: Option<i64>,
}

/// `GET /api/admin/alarms?state=open|all&page=`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlarmPage {
    pub alarms: Vec<Alarm>,
    pub page: u32,
    pub has_more: bool,
}

impl AlarmPage {
    pub const PAGE_SIZE: u32 = 50;
}

/// Which alarms a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AlarmFilter {
    /// Not cleared (raised or acknowledged).
    #[default]
    Open,
    All,
}

/// The query string of `GET /api/admin/alarms`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
pub struct AlarmQuery {
    /// `open` (the default) or `all`.
    #[serde(default)]
    pub state: AlarmFilter,
    /// From 1.
    #[serde(default)]
    pub page: Option<u32>,
}

/// A terminal as run-state monitoring sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TerminalState {
    pub terminal_id: String,
    pub name: String,
    /// The agent is connected and was heard from within the heartbeat window.
    pub online: bool,
    /// At least one reader is there and usable.
    pub reader_present: bool,
    pub card_present: bool,
    pub agent_version: Option<String>,
    /// `pcsc` or `virtual`.
    pub backend: Option<String>,
    /// The terminal owner's local policy, as the agent reported it.
    pub policy: Option<LocalPolicyReport>,
    pub readers: Vec<ReaderInfo>,
    /// The last frame or heartbeat from the agent (this server's view since it started).
    pub last_seen_at_ms: Option<i64>,
    /// Since when it is offline (its silence began, it disconnected, or the server started).
    pub offline_since_ms: Option<i64>,
}

/// The bank interface as monitoring sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BankLink {
    /// A bank gateway is configured.
    pub configured: bool,
    /// The latest health probe answered (false before the first probe).
    pub up: bool,
    pub last_probe_at_ms: Option<i64>,
    pub last_probe_latency_ms: Option<u64>,
    /// Why the latest probe failed.
    pub last_error: Option<String>,
    /// Bank calls (not probes) over the window, and how many of them failed.
    pub window_ms: i64,
    pub calls: u64,
    pub errors: u64,
    /// `errors / calls`, 0 without calls.
    pub error_ratio: f64,
    /// Mean and worst latency of the calls over the window.
    pub mean_latency_ms: Option<u64>,
    pub max_latency_ms: Option<u64>,
}

/// The reader-management interface (the hub).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HubFigures {
    pub connected_agents: u64,
    pub connected_pages: u64,
    pub connected_kiosks: u64,
    /// Commands sent to agents since the server started, and how many failed (timeout,
    /// disconnection, a reply that did not verify).
    pub commands_sent: u64,
    pub command_errors: u64,
    /// Mean and worst command round trip over the window.
    pub mean_command_latency_ms: Option<u64>,
    pub max_command_latency_ms: Option<u64>,
}

/// `GET /api/admin/monitor`: everything run-state monitoring watches, now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MonitorView {
    pub at_ms: i64,
    pub terminals: Vec<TerminalState>,
    pub bank: BankLink,
    pub hub: HubFigures,
    pub open_alarms: u64,
}

/// Server → admin page over `/ws/admin`. The server sends [`ServerToAdmin::Snapshot`] first (and
/// again whenever the socket fell behind), then changes as they happen. The page sends nothing;
/// acknowledging is `POST /api/admin/alarms/{id}/ack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerToAdmin {
    /// The open alarms and every terminal's state.
    Snapshot { open_alarms: Vec<Alarm>, terminals: Vec<TerminalState> },
    AlarmRaised { alarm: Alarm },
    AlarmAcked { alarm: Alarm },
    AlarmCleared { alarm: Alarm },
    TerminalChanged { terminal: TerminalState },
}

/// What happened to an alarm, in a webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmEventKind {
    Raised,
    Acked,
    Cleared,
}

/// The body of one webhook delivery (`POST` to the configured URL), signed: see
/// `docs/operations.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmEvent {
    /// Unique per delivery; the same on every retry of it (receivers deduplicate by it).
    pub delivery_id: String,
    pub event: AlarmEventKind,
    pub alarm: Alarm,
}

/// A dependency `/readyz` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Dependency {
    Database,
    Bank,
}

/// The body of `/readyz`: 200 when `ready`, 503 naming what is down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Readiness {
    pub ready: bool,
    pub down: Vec<Dependency>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_tagged_snake_case() {
        let alarm = Alarm {
            alarm_id: "al_1".into(),
            kind: AlarmKind::BankLinkDown,
            subject: "bank".into(),
            detail: "health probe failing".into(),
            state: AlarmState::Raised,
            raised_at_ms: 1,
            acked_at_ms: None,
            acked_by: None,
            cleared_at_ms: None,
        };
        let text = crate::encode(&ServerToAdmin::AlarmRaised { alarm: alarm.clone() });
        assert!(text.starts_with(r#"{"type":"alarm_raised","alarm":{"alarm_id":"al_1","kind":"bank_link_down""#), "{text}");
        assert_eq!(crate::decode::<ServerToAdmin>(&text).unwrap(), ServerToAdmin::AlarmRaised { alarm });
        assert_eq!(crate::encode(&Readiness { ready: false, down: vec![Dependency::Database] }), r#"{"ready":false,"down":["database"]}"#);
    }
}
