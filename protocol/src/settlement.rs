//! Daily settlement and reconciliation (R3.7) on the wire: the bodies of `/api/admin/settlements` — a day's report (summary, breakdowns by terminal, amount and hour, the mismatches with their reasons and actions in zh-CN and en), the list of settled days, and the request to settle a day
//!
//! Amounts are integers in the currency's minor unit (`*_minor`, fen for CNY). Instants are
//! `YYYY-MM-DD HH:MM:SS` UTC, as elsewhere in `protocol::api`; the CSV and XLSX exports show
//! local time.

use serde::{Deserialize, Serialize};

/// `POST /api/admin/settlements`: settle this business day (again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettleRequest {
    /// `yyyy-mm-dd`.
    pub date: String,
}

/// Where a top-up (or a bank movement that belongs to none) lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SettlementClass {
    Matched,
    BankOnly,
    LedgerOnly,
    CardUnconfirmed,
    AmountMismatch,
}

/// Why, each reason in exactly one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SettlementReason {
    Completed,
    Refunded,
    Declined,
    NothingMoved,
    InProgress,
    UnknownTransfer,
    StatementDuplicate,
    NotDebitedInLedger,
    RefundNotInLedger,
    MissingFromStatement,
    BankNotCompleted,
    RefundMissingFromStatement,
    NoCardProof,
    TacInvalid,
    ProofInconsistent,
    TacUnverifiable,
    LoadNotFinished,
    AmountDiffers,
}

/// A text in both languages of the reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Localized {
    pub en: String,
    #[serde(rename = "zh-CN")]
    pub zh_cn: String,
}

/// Items per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClassCounts {
    pub matched: u64,
    pub bank_only: u64,
    pub ledger_only: u64,
    pub card_unconfirmed: u64,
    pub amount_mismatch: u64,
}

/// One revision of a day's settlement, in figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettlementSummary {
    /// `yyyy-mm-dd`, the business day.
    pub date: String,
    pub revision: u32,
    /// The revisions of this day so far (this one is the latest when equal).
    pub revisions: u32,
    pub settled_at: String,
    /// `settlement-job`, `cli`, or the admin's user name.
    pub settled_by: String,
    pub time_zone: String,
    /// `HH:MM` local time the day ends at.
    pub cutoff: String,
    pub day_starts_at: String,
    pub day_ends_at: String,
    pub currency: String,
    pub n_topups: u64,
    pub n_completed: u64,
    /// Σ amounts of the top-ups that ended on their cards.
    pub completed_minor: i64,
    pub ledger_debit_minor: i64,
    pub bank_debit_minor: i64,
    pub ledger_refund_minor: i64,
    pub bank_refund_minor: i64,
    pub counts: ClassCounts,
    pub n_mismatches: u64,
}

/// One row of a breakdown (a terminal, an amount, an hour).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettlementGroup {
    /// The terminal id (`-` for top-ups asked for elsewhere), the amount in minor units, or the
    /// local hour `HH`.
    pub key: String,
    pub n_topups: u64,
    pub n_completed: u64,
    pub completed_minor: i64,
    pub n_mismatches: u64,
}

/// One item: a top-up of the day, or a bank movement that belongs to none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettlementItem {
    pub class: SettlementClass,
    pub reason: SettlementReason,
    pub reason_text: Localized,
    pub action: Localized,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topup_id: Option<String>,
    /// The bank's idempotency key of the movement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_id: Option<String>,
    /// The stored-value card, masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_masked: Option<String>,
    /// The top-up's state when settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    pub amount_minor: i64,
    pub ledger_debit_minor: i64,
    pub bank_debit_minor: i64,
    pub ledger_refund_minor: i64,
    pub bank_refund_minor: i64,
    /// Transfer lines of this key on the statement.
    pub bank_lines: u32,
    pub at: String,
}

/// `GET /api/admin/settlements/{date}`: one revision's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettlementReport {
    pub summary: SettlementSummary,
    pub by_terminal: Vec<SettlementGroup>,
    pub by_amount: Vec<SettlementGroup>,
    /// All 24 local hours, from the cut-off's hour on.
    pub by_hour: Vec<SettlementGroup>,
    pub mismatches: Vec<SettlementItem>,
}

/// The answer to `POST /api/admin/settlements`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettleOutcome {
    /// `false`: the result equals the latest revision; nothing new was written.
    pub new_revision: bool,
    pub report: SettlementReport,
}

/// `?revision=` of a report (default the latest) and `?lang=zh-CN|en` of an export.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
pub struct SettlementQuery {
    /// The revision (default: the latest).
    #[serde(default)]
    pub revision: Option<u32>,
    /// The language of an export: `zh-CN` (the default) or `en`.
    #[serde(default)]
    pub lang: Option<String>,
}

/// `?limit=` of the list (default 60, at most 366).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
pub struct SettlementListQuery {
    /// How many days (default 60, at most 366).
    #[serde(default)]
    pub limit: Option<u32>,
}
