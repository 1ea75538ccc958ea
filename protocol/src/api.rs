//! JSON bodies of the HTTP API (`/api/…`) used by the pages and by scripts.

use serde::{Deserialize, Serialize};

/// Error body of every failed API call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    /// Stable machine-readable code, e.g. `invalid_credentials`.
    pub code: String,
    /// Human-readable message (English); never contains internal detail.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Cardholder,
    Staff,
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Me {
    pub username: String,
    pub role: Role,
    /// The terminal this browser is paired with, if any.
    pub terminal: Option<PairedTerminal>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PairedTerminal {
    pub terminal_id: String,
    pub name: String,
}

/// What the user asks about a card (the request of S400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    Balance,
    Transactions,
    Details,
}

/// The submitted form: the card number the module filled in, the read that proves it, the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueryRequest {
    pub card_number: String,
    #[serde(default)]
    pub read_id: Option<String>,
    pub request: RequestKind,
}

/// How much of the card the caller may see, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Disclosure {
    /// Tapped on this terminal, bound to the user, or staff: everything the role allows.
    Full,
    /// A typed number, or a card neither tapped nor bound: the masked summary only.
    Masked,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueryResult {
    pub disclosure: Disclosure,
    /// Always masked: first 6 and last 4 digits.
    pub masked_number: String,
    pub brand: String,
    pub request: RequestKind,
    /// Present only with [`Disclosure::Full`].
    pub details: Option<CardDetails>,
    pub balance: Option<Balance>,
    pub transactions: Option<Vec<Transaction>>,
    /// With [`Disclosure::Masked`]: why no more was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked_reason: Option<MaskedReason>,
}

/// Why a result is only the masked summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MaskedReason {
    /// No read of this very card backs the request (a typed number, or a read of another card).
    NotTapped,
    /// The card was tapped but did not prove itself with a cryptogram the bank verified (a card
    /// the bank did not issue, or a read the server cannot trust).
    CardNotAuthenticated,
    /// A cardholder's request about a card read on another terminal and not bound to them.
    OtherTerminal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CardDetails {
    pub holder_name: String,
    pub card_type: String,
    pub issuer: String,
    /// YYMM
    pub expiry: String,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Balance {
    /// Minor units (fen / cents).
    pub available_minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Transaction {
    pub at: String,
    pub description: String,
    /// Minor units; negative for debits.
    pub amount_minor: i64,
    pub currency: String,
}

/// One terminal as admins see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TerminalSummary {
    pub terminal_id: String,
    pub name: String,
    pub permitted: bool,
    pub revoked: bool,
    pub enrolled: bool,
    pub online: bool,
    pub backend: Option<String>,
    pub policy: Option<super::agent::LocalPolicyReport>,
    pub readers: Vec<super::agent::ReaderInfo>,
    pub pairings: Vec<PairingSummary>,
    /// Self-service top-up is switched on for this terminal (its kiosk admits cards, R3.3).
    #[serde(default)]
    pub topup_enabled: bool,
}

/// `GET /api/admin/terminals?terminal_id=`: every terminal, or only the one named (an empty list
/// when there is none), for a page that refreshes one row.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
pub struct TerminalQuery {
    /// Only this terminal.
    #[serde(default)]
    pub terminal_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PairingSummary {
    pub pairing_id: String,
    pub created_at: String,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateTerminal {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedTerminal {
    pub terminal_id: String,
    pub enrolment_code: String,
    pub expires_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetPermission {
    pub permitted: bool,
}

/// `POST /api/admin/terminals/{terminal_id}/topup`: switch self-service top-up on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetTopUp {
    pub enabled: bool,
}

/// Whether a registered stored-value card may be topped up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PurseCardStatus {
    Active,
    /// Reported lost or stolen, or closed: not admitted at any kiosk.
    Blocked,
}

/// One registered stored-value card as admins see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PurseCardSummary {
    /// The card serial, 16 hex digits (admins manage cards by it).
    pub card_serial: String,
    /// The serial with all but the last four digits masked, as the audit log shows it.
    pub card_masked: String,
    /// The holder's user name.
    pub username: String,
    /// The last four digits of the bank card it is topped up from, once bound.
    pub bound_card_last4: Option<String>,
    pub status: PurseCardStatus,
    pub blocked_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// `GET /api/admin/purse-cards?q=&page=`: registered cards whose serial ends with `q` (hex
/// digits), a page at a time (from 1).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
pub struct PurseCardQuery {
    /// The last hexadecimal digits of the card serial (at most 16).
    #[serde(default)]
    pub q: Option<String>,
    /// From 1.
    #[serde(default)]
    pub page: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PurseCardPage {
    pub cards: Vec<PurseCardSummary>,
    pub page: u32,
    /// A next page exists.
    pub has_more: bool,
}

impl PurseCardPage {
    pub const PAGE_SIZE: u32 = 50;
}

/// `POST /api/admin/purse-cards`: register a stored-value card for a cardholder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddPurseCard {
    /// 16 hex digits, either case.
    pub card_serial: String,
    pub username: String,
}

/// `POST /api/admin/purse-cards/{card_serial}/block`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockPurseCard {
    /// Why (lost, stolen, closed…), for the audit log and the admin list.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub audit_id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: String,
}

/// `GET /api/admin/audit?before=&limit=&q=`: a page of the audit log, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
pub struct AuditPageQuery {
    /// Only events with an `audit_id` below this one (the previous page's `next_before`).
    #[serde(default)]
    pub before: Option<i64>,
    /// Page size; default [`AuditPage::DEFAULT_LIMIT`], at most [`AuditPage::MAX_LIMIT`].
    #[serde(default)]
    pub limit: Option<u32>,
    /// Only events whose actor, action, subject or detail contains this text (case-insensitive,
    /// at most [`AuditPage::MAX_QUERY_CHARS`] characters). One request looks through at most
    /// [`AuditPage::MAX_SCAN`] events: a page with fewer entries than asked for and a
    /// `next_before` means the search stopped there and goes on from it.
    #[serde(default)]
    pub q: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `before` for the next (older) page; `None` on the last page.
    pub next_before: Option<i64>,
}

impl AuditPage {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 200;
    /// The most events one search request looks through.
    pub const MAX_SCAN: u32 = 5_000;
    pub const MAX_QUERY_CHARS: usize = 100;
}

/// `GET /api/admin/audit/head`: the latest signed checkpoint of the audit log, for an external
/// system to hold (signed as described in `crate::checkpoint`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditHead {
    pub checkpoint_id: i64,
    /// Events in the log when the checkpoint was taken.
    pub event_count: u64,
    /// Hash of event number `event_count` (counting from 1 in `audit_id` order).
    pub head_hash: crate::HexBytes,
    /// When the checkpoint was signed, unix milliseconds (signed).
    pub at_ms: i64,
    /// The same instant, `YYYY-MM-DD HH:MM:SS` UTC (for people; not signed).
    pub at: String,
    /// Ed25519 signature by the server key.
    pub signature: crate::HexBytes,
    /// The server's Ed25519 public key (check it against one you hold, not this copy).
    pub public_key: crate::HexBytes,
}

/// `POST /api/agent/enrol`: the agent registers its public key with a one-time code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrolRequest {
    pub enrolment_code: String,
    pub public_key: crate::HexBytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrolResponse {
    pub terminal_id: String,
    pub terminal_name: String,
    /// The server's Ed25519 public key; the agent pins it.
    pub server_public_key: crate::HexBytes,
}

/// `POST /api/agent/pairing`: the agent asks for a one-time pairing link, signed with its key over
/// [`crate::envelope::pairing_message`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PairingRequest {
    pub terminal_id: String,
    pub issued_at_ms: i64,
    pub signature: crate::HexBytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PairingLink {
    pub url: String,
    pub expires_at: String,
}

/// `POST /api/bindings`: bind a bank card (the number filled in by a tap, or typed) with the phone
/// number registered at the bank. A code is sent to that phone.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StartBinding {
    pub card_number: String,
    pub phone: String,
}

/// The number and the phone are personal data: Debug masks them.
impl std::fmt::Debug for StartBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = self.card_number.len();
        f.debug_struct("StartBinding").field("card_number", &format_args!("<{digits} chars>")).finish_non_exhaustive()
    }
}

/// A binding waiting for its code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BindingStarted {
    pub request_id: String,
    /// Where the code went, masked (`+86138****0001`).
    pub phone_masked: String,
    pub card_last4: String,
    pub code_expires_at: String,
    /// Wrong codes still allowed for this request.
    pub attempts_left: u32,
}

/// `POST /api/bindings/{request_id}/confirm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfirmBinding {
    pub code: String,
}

/// A bound bank card as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BindingSummary {
    pub binding_id: String,
    pub card_last4: String,
    pub created_at: String,
}

/// One message of the demo/test SMS outbox (admins only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutboxMessage {
    pub phone: String,
    pub body: String,
    pub sent_at: String,
}

/// `GET /api/admin/topups?state=&page=`: top-ups, newest first (`state`: one state name, e.g.
/// `exception`; none: all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
pub struct TopUpQuery {
    /// Only top-ups in this state (e.g. `exception`).
    #[serde(default)]
    pub state: Option<String>,
    /// From 0.
    #[serde(default)]
    pub page: Option<u32>,
}

/// One top-up as an admin sees it (the card serial masked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopUpSummary {
    pub topup_id: String,
    pub card_masked: String,
    pub amount_minor: i64,
    pub state: String,
    /// Why it failed or needs a person (`debit_unresolved`, `write_unresolved`, …).
    pub reason: Option<String>,
    pub terminal_id: Option<String>,
    pub debited: bool,
    pub credited: bool,
    pub created_at: String,
    pub updated_at: String,
    /// The card's transaction proof of a completed load (hex).
    pub tac: Option<String>,
    /// What a person may decide for it now (empty unless `exception`).
    pub decisions: Vec<TopUpDecision>,
}

/// A person's decision on a top-up in `exception`, after looking at the bank statement or the
/// card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TopUpDecision {
    /// The bank statement shows the debit.
    Debited,
    /// The bank statement shows no debit.
    NotDebited,
    /// The card shows the load.
    Credited,
    /// The card does not show the load: refund.
    NotCredited,
}

/// `POST /api/admin/topups/{topup_id}/decision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DecideTopUp {
    pub decision: TopUpDecision,
}

/// `GET`/`POST /api/admin/demo/bank`: the demo's in-process bank, running or unplugged (demo
/// servers with `demo_bank` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DemoBankPlug {
    pub running: bool,
}
