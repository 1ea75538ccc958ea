//! The bank gateway (R3.6): the [`BankGateway`] trait the top-up engine depends on, and
//! [`HttpBankGateway`], its implementation over the documented HTTP JSON API
//! (`docs/bank-gateway.md`, wire types in `protocol::bank`).
//!
//! Every request is HMAC-signed; every reply must carry a valid signature bound to the request,
//! or it is refused and logged. Money-moving calls (transfers, refunds) are sent once and answer
//! [`TransferOutcome::Unknown`] when the bank may or may not have acted (timeout, lost reply, 5xx,
//! unverifiable reply): the caller resolves that with [`BankGateway::transfer_status`] and may
//! resend under the same key, which the bank never executes twice. Reads and binding deletion
//! are retried here; creating a binding is not idempotent and is never retried.
//!
//! Nothing here knows which bank is on the other side.

use std::fmt;
use std::time::Duration;

use card::pan::Pan;
use futures_util::future::BoxFuture;
use protocol::bank::signing::{self, BankKey};
use protocol::bank::{self as wire};
use reqwest::Method;

/// Configuration of the HTTP gateway.
#[derive(Debug, Clone)]
pub struct BankClientConfig {
    /// e.g. `https://gateway.bank.example`, without the `/v1`.
    pub base_url: String,
    pub key: BankKey,
    /// Whole-request deadline, connection included.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Attempts of an idempotent read (status, statement) or binding deletion, at least 1.
    pub read_attempts: u32,
    /// Pause before the second attempt; doubled for each further one.
    pub retry_backoff: Duration,
}

impl BankClientConfig {
    pub fn new(base_url: impl Into<String>, key: BankKey) -> BankClientConfig {
        BankClientConfig {
            base_url: base_url.into(),
            key,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            read_attempts: 3,
            retry_backoff: Duration::from_millis(200),
        }
    }
}

/// Read the shared key from a key file (`<key id>:<hex secret>`, see `docs/bank-gateway.md`). On
/// Unix the file must not be readable by group or others.
pub fn load_key_file(path: &std::path::Path) -> anyhow::Result<BankKey> {
    use anyhow::Context;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.permissions().mode();
        anyhow::ensure!(mode & 0o077 == 0, "the bank key file {} is readable by others (mode {:o}); chmod 600 it", path.display(), mode & 0o777);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    BankKey::parse_file(&text).with_context(|| format!("parsing {}", path.display()))
}

/// A bank-issued stand-in for a bound bank card. `Debug` shows only its start.
#[derive(Clone, PartialEq, Eq)]
pub struct BindingToken(String);

impl BindingToken {
    pub fn new(token: impl Into<String>) -> BindingToken {
        BindingToken(token.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BindingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = self.0.chars().take(6).collect();
        write!(f, "BindingToken({shown}…)")
    }
}

/// A card bound at the bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundCard {
    pub token: BindingToken,
    pub card_last4: String,
}

/// One transfer to make: `idempotency_key` is the top-up id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferOrder {
    pub idempotency_key: String,
    pub binding: BindingToken,
    pub amount_minor: i64,
    pub currency: String,
    /// The issuer's settlement account.
    pub to_account: String,
    pub reference: String,
}

/// One refund to make, of (part of) the transfer `transfer_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundOrder {
    pub idempotency_key: String,
    pub transfer_key: String,
    pub amount_minor: i64,
}

/// Why the bank declined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclineReason {
    InsufficientFunds,
    BindingNotFound,
    UnknownDestination,
    CurrencyMismatch,
    RiskRefused,
    /// A reason this server does not know yet.
    Other,
}

/// Why the outcome of a sent request is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnknownCause {
    /// No reply within the deadline.
    Timeout,
    /// The connection broke after the request was sent.
    ConnectionLost,
    /// The bank (or something in front of it) answered 5xx.
    ServerError(u16),
    /// The reply's signature did not verify: it was not trusted.
    BadReplySignature,
    /// A signed reply that is not what the API says.
    MalformedReply,
}

/// What became of a transfer request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferOutcome {
    Completed { bank_ref: String },
    Declined { reason: DeclineReason, bank_ref: String },
    /// Accepted, not final: ask [`BankGateway::transfer_status`] later.
    Pending { bank_ref: String },
    /// The bank may or may not have executed it: ask [`BankGateway::transfer_status`].
    Unknown(UnknownCause),
}

/// What the bank knows of a transfer key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferStatus {
    Completed { bank_ref: String, amount_minor: i64 },
    Declined { reason: DeclineReason, bank_ref: String },
    Pending { bank_ref: String },
    /// The bank never recorded this key: nothing was debited, and sending it is safe.
    NeverSeen,
}

/// What became of a refund request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    Completed { bank_ref: String, amount_minor: i64 },
    /// Resend under the same key: the bank never refunds twice.
    Unknown(UnknownCause),
}

/// One movement on the bank's daily statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLine {
    pub kind: MovementKind,
    pub idempotency_key: String,
    pub transfer_key: Option<String>,
    pub bank_ref: String,
    pub amount_minor: i64,
    pub currency: String,
    /// For transfers: completed, declined or pending (never `NeverSeen`).
    pub transfer_status: Option<TransferStatus>,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MovementKind {
    Transfer,
    Refund,
}

/// The bank's statement of one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub date: String,
    pub lines: Vec<StatementLine>,
    /// (currency, Σ completed transfers, Σ refunds)
    pub totals: Vec<(String, i64, i64)>,
}

/// A definite refusal of the bank, by its error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectCode {
    BadRequest,
    Unauthorized,
    BindingRefused,
    NotFound,
    IdempotencyConflict,
    RefundRefused,
    Other,
}

#[derive(Debug, thiserror::Error)]
pub enum BankError {
    /// The bank answered (signed) that it did not do it.
    #[error("the bank refused the request ({status}, {code:?})")]
    Rejected { status: u16, code: RejectCode, message: String },
    /// No usable answer: the request did not reach the bank, or a read failed after its retries.
    #[error("the bank is unavailable: {0}")]
    Unavailable(String),
    /// A reply whose signature does not verify: refused.
    #[error("the bank's reply signature does not verify")]
    BadReplySignature,
    /// A signed reply that does not parse as the API says.
    #[error("malformed reply from the bank: {0}")]
    MalformedReply(String),
    /// Refused here, before sending: the request could not be well-formed.
    #[error("invalid bank request: {0}")]
    InvalidRequest(&'static str),
}

/// The bank's settlement system as the top-up engine sees it.
pub trait BankGateway: Send + Sync + fmt::Debug {
    /// Bind a card after the bank checked the phone registered for it. Never retried.
    fn create_binding<'a>(&'a self, card: &'a Pan, phone: &'a str) -> BoxFuture<'a, Result<BoundCard, BankError>>;
    /// Delete a binding (deleting twice is fine).
    fn delete_binding<'a>(&'a self, token: &'a BindingToken) -> BoxFuture<'a, Result<(), BankError>>;
    /// Send a transfer once. `Err` only when the bank definitely did not execute this request.
    fn transfer<'a>(&'a self, order: &'a TransferOrder) -> BoxFuture<'a, Result<TransferOutcome, BankError>>;
    /// What the bank knows of this key (retried).
    fn transfer_status<'a>(&'a self, idempotency_key: &'a str) -> BoxFuture<'a, Result<TransferStatus, BankError>>;
    /// Send a refund once. `Err` only when the bank definitely did not execute this request.
    fn refund<'a>(&'a self, order: &'a RefundOrder) -> BoxFuture<'a, Result<RefundOutcome, BankError>>;
    /// The statement of the UTC day `date` (`yyyy-mm-dd`, retried).
    fn statement<'a>(&'a self, date: &'a str) -> BoxFuture<'a, Result<Statement, BankError>>;
    /// One signed health check (`GET /v1/health`), never retried: the monitor's probe wants to
    /// see each failure. `Ok` only for a verified 200.
    fn health(&self) -> BoxFuture<'_, Result<(), BankError>>;
}

/// The bank gateway over HTTP(S) with reqwest and rustls.
#[derive(Debug, Clone)]
pub struct HttpBankGateway {
    http: reqwest::Client,
    config: BankClientConfig,
}

/// A reply whose signature verified.
struct Reply {
    status: u16,
    body: Vec<u8>,
}

/// Why one exchange gave no verified reply.
#[derive(Debug)]
enum CallError {
    /// The request never left (connection refused, DNS, TLS): the bank did nothing.
    NotSent(String),
    /// Sent, then no verified answer.
    AfterSend(UnknownCause),
}

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl HttpBankGateway {
    pub fn new(config: BankClientConfig) -> anyhow::Result<HttpBankGateway> {
        anyhow::ensure!(config.read_attempts >= 1, "read_attempts must be at least 1");
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| anyhow::anyhow!("building the bank HTTP client: {e}"))?;
        Ok(HttpBankGateway { http, config })
    }

    /// One signed exchange; the reply is returned only when its signature verifies.
    async fn exchange(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Reply, CallError> {
        let key = &self.config.key;
        let body = body.unwrap_or_default();
        let (timestamp, nonce) = (now_s(), signing::nonce());
        let signature = key.sign_request(method.as_str(), path, timestamp, &nonce, &body);
        let url = format!("{}{path}", self.config.base_url.trim_end_matches('/'));
        let mut request = self
            .http
            .request(method.clone(), url)
            .header(signing::HEADER_KEY_ID, &key.key_id)
            .header(signing::HEADER_TIMESTAMP, timestamp)
            .header(signing::HEADER_NONCE, &nonce)
            .header(signing::HEADER_SIGNATURE, &signature);
        if !body.is_empty() {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Err(CallError::NotSent(e.to_string())),
            Err(e) if e.is_timeout() => return Err(CallError::AfterSend(UnknownCause::Timeout)),
            Err(e) => {
                tracing::warn!(error = %crate::util::ErrorChain(&e), %method, path, "bank request failed after sending");
                return Err(CallError::AfterSend(UnknownCause::ConnectionLost));
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = match response.bytes().await {
            Ok(b) => b.to_vec(),
            Err(e) if e.is_timeout() => return Err(CallError::AfterSend(UnknownCause::Timeout)),
            Err(_) => return Err(CallError::AfterSend(UnknownCause::ConnectionLost)),
        };
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let verified = match (get(signing::HEADER_KEY_ID), get(signing::HEADER_TIMESTAMP).and_then(|t| t.parse().ok()), get(signing::HEADER_SIGNATURE)) {
            (Some(key_id), Some(ts), Some(sig)) => key.verify_reply(key_id, status, &signature, ts, &bytes, sig, now_s()).map_err(|e| e.to_string()),
            _ => Err("reply signature headers missing".to_string()),
        };
        if let Err(why) = verified {
            tracing::error!(%method, path, status, %why, "bank reply refused: its signature does not verify");
            return Err(CallError::AfterSend(UnknownCause::BadReplySignature));
        }
        Ok(Reply { status, body: bytes })
    }

    /// An idempotent call, retried on transport failures and 5xx.
    async fn exchange_retrying(&self, method: Method, path: &str) -> Result<Reply, BankError> {
        let mut backoff = self.config.retry_backoff;
        let mut last = String::new();
        for attempt in 1..=self.config.read_attempts {
            if attempt > 1 {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            match self.exchange(method.clone(), path, None).await {
                Ok(reply) if reply.status >= 500 => last = format!("status {}", reply.status),
                Ok(reply) => return Ok(reply),
                Err(CallError::AfterSend(UnknownCause::BadReplySignature)) => return Err(BankError::BadReplySignature),
                Err(CallError::NotSent(e)) => last = e,
                Err(CallError::AfterSend(cause)) => last = format!("{cause:?}"),
            }
            tracing::warn!(%method, path, attempt, why = %last, "bank read failed");
        }
        Err(BankError::Unavailable(last))
    }
}

fn rejected(reply: &Reply) -> BankError {
    let (code, message) = match serde_json::from_slice::<wire::ErrorBody>(&reply.body) {
        Ok(b) => (reject_code(b.code), b.message),
        Err(_) => (RejectCode::Other, String::new()),
    };
    BankError::Rejected { status: reply.status, code, message }
}

fn reject_code(code: wire::ErrorCode) -> RejectCode {
    match code {
        wire::ErrorCode::BadRequest => RejectCode::BadRequest,
        wire::ErrorCode::Unauthorized => RejectCode::Unauthorized,
        wire::ErrorCode::BindingRefused => RejectCode::BindingRefused,
        wire::ErrorCode::NotFound => RejectCode::NotFound,
        wire::ErrorCode::IdempotencyConflict => RejectCode::IdempotencyConflict,
        wire::ErrorCode::RefundRefused => RejectCode::RefundRefused,
        wire::ErrorCode::Internal | wire::ErrorCode::Other => RejectCode::Other,
    }
}

fn decline(reason: wire::DeclineReason) -> DeclineReason {
    match reason {
        wire::DeclineReason::InsufficientFunds => DeclineReason::InsufficientFunds,
        wire::DeclineReason::BindingNotFound => DeclineReason::BindingNotFound,
        wire::DeclineReason::UnknownDestination => DeclineReason::UnknownDestination,
        wire::DeclineReason::CurrencyMismatch => DeclineReason::CurrencyMismatch,
        wire::DeclineReason::RiskRefused => DeclineReason::RiskRefused,
        wire::DeclineReason::Other => DeclineReason::Other,
    }
}

fn status_of(t: &wire::Transfer) -> TransferStatus {
    match t.status {
        wire::TransferStatus::Completed => TransferStatus::Completed { bank_ref: t.bank_ref.clone(), amount_minor: t.amount_minor },
        wire::TransferStatus::Declined { reason } => TransferStatus::Declined { reason: decline(reason), bank_ref: t.bank_ref.clone() },
        wire::TransferStatus::Pending => TransferStatus::Pending { bank_ref: t.bank_ref.clone() },
    }
}

fn parse<T: serde::de::DeserializeOwned>(reply: &Reply) -> Result<T, BankError> {
    serde_json::from_slice(&reply.body).map_err(|e| BankError::MalformedReply(e.to_string()))
}

fn encode<T: serde::Serialize>(body: &T) -> Vec<u8> {
    serde_json::to_vec(body).expect("wire types serialise")
}

/// Path segments are ids the server made or the bank issued; refuse anything that would change the path.
fn segment(s: &str) -> Result<&str, BankError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
        return Err(BankError::InvalidRequest("id not usable in a path"));
    }
    Ok(s)
}

impl BankGateway for HttpBankGateway {
    fn create_binding<'a>(&'a self, card: &'a Pan, phone: &'a str) -> BoxFuture<'a, Result<BoundCard, BankError>> {
        Box::pin(async move {
            let body = encode(&wire::CreateBinding { card_number: card.as_str().to_string(), phone: phone.to_string() });
            let reply = match self.exchange(Method::POST, "/v1/bindings", Some(body)).await {
                Ok(r) => r,
                Err(CallError::AfterSend(UnknownCause::BadReplySignature)) => return Err(BankError::BadReplySignature),
                Err(e) => return Err(BankError::Unavailable(format!("{e:?}"))),
            };
            match reply.status {
                201 | 200 => {
                    let b: wire::Binding = parse(&reply)?;
                    tracing::info!(card = %card.masked(), "bank card bound");
                    Ok(BoundCard { token: BindingToken(b.binding_token), card_last4: b.card_last4 })
                }
                s if s >= 500 => Err(BankError::Unavailable(format!("status {s}"))),
                _ => {
                    tracing::info!(card = %card.masked(), status = reply.status, "bank refused the binding");
                    Err(rejected(&reply))
                }
            }
        })
    }

    fn delete_binding<'a>(&'a self, token: &'a BindingToken) -> BoxFuture<'a, Result<(), BankError>> {
        Box::pin(async move {
            let path = format!("/v1/bindings/{}", segment(token.as_str())?);
            let reply = self.exchange_retrying(Method::DELETE, &path).await?;
            match reply.status {
                200 | 204 => Ok(()),
                _ => Err(rejected(&reply)),
            }
        })
    }

    fn transfer<'a>(&'a self, order: &'a TransferOrder) -> BoxFuture<'a, Result<TransferOutcome, BankError>> {
        Box::pin(async move {
            let body = encode(&wire::TransferRequest {
                idempotency_key: order.idempotency_key.clone(),
                binding_token: order.binding.as_str().to_string(),
                amount_minor: order.amount_minor,
                currency: order.currency.clone(),
                to_account: order.to_account.clone(),
                reference: order.reference.clone(),
            });
            let reply = match self.exchange(Method::POST, "/v1/transfers", Some(body)).await {
                Ok(r) => r,
                Err(CallError::NotSent(e)) => return Err(BankError::Unavailable(e)),
                Err(CallError::AfterSend(cause)) => {
                    tracing::warn!(key = %order.idempotency_key, ?cause, "transfer outcome unknown");
                    return Ok(TransferOutcome::Unknown(cause));
                }
            };
            match reply.status {
                200 | 201 => {
                    let Ok(t) = parse::<wire::Transfer>(&reply) else { return Ok(TransferOutcome::Unknown(UnknownCause::MalformedReply)) };
                    if t.idempotency_key != order.idempotency_key {
                        tracing::error!(key = %order.idempotency_key, "bank answered for another transfer key");
                        return Ok(TransferOutcome::Unknown(UnknownCause::MalformedReply));
                    }
                    Ok(match status_of(&t) {
                        TransferStatus::Completed { bank_ref, .. } => TransferOutcome::Completed { bank_ref },
                        TransferStatus::Declined { reason, bank_ref } => TransferOutcome::Declined { reason, bank_ref },
                        TransferStatus::Pending { bank_ref } => TransferOutcome::Pending { bank_ref },
                        TransferStatus::NeverSeen => TransferOutcome::Unknown(UnknownCause::MalformedReply),
                    })
                }
                s if s >= 500 => Ok(TransferOutcome::Unknown(UnknownCause::ServerError(s))),
                _ => Err(rejected(&reply)),
            }
        })
    }

    fn transfer_status<'a>(&'a self, idempotency_key: &'a str) -> BoxFuture<'a, Result<TransferStatus, BankError>> {
        Box::pin(async move {
            let path = format!("/v1/transfers/{}", segment(idempotency_key)?);
            let reply = self.exchange_retrying(Method::GET, &path).await?;
            match reply.status {
                200 => {
                    let t: wire::Transfer = parse(&reply)?;
                    if t.idempotency_key != idempotency_key {
                        return Err(BankError::MalformedReply("status of another transfer key".into()));
                    }
                    Ok(status_of(&t))
                }
                404 => Ok(TransferStatus::NeverSeen),
                _ => Err(rejected(&reply)),
            }
        })
    }

    fn refund<'a>(&'a self, order: &'a RefundOrder) -> BoxFuture<'a, Result<RefundOutcome, BankError>> {
        Box::pin(async move {
            let body = encode(&wire::RefundRequest {
                idempotency_key: order.idempotency_key.clone(),
                transfer_key: order.transfer_key.clone(),
                amount_minor: order.amount_minor,
            });
            let reply = match self.exchange(Method::POST, "/v1/refunds", Some(body)).await {
                Ok(r) => r,
                Err(CallError::NotSent(e)) => return Err(BankError::Unavailable(e)),
                Err(CallError::AfterSend(cause)) => {
                    tracing::warn!(key = %order.idempotency_key, ?cause, "refund outcome unknown");
                    return Ok(RefundOutcome::Unknown(cause));
                }
            };
            match reply.status {
                200 | 201 => match parse::<wire::Refund>(&reply) {
                    Ok(r) if r.idempotency_key == order.idempotency_key => {
                        Ok(RefundOutcome::Completed { bank_ref: r.bank_ref, amount_minor: r.amount_minor })
                    }
                    _ => Ok(RefundOutcome::Unknown(UnknownCause::MalformedReply)),
                },
                s if s >= 500 => Ok(RefundOutcome::Unknown(UnknownCause::ServerError(s))),
                _ => Err(rejected(&reply)),
            }
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), BankError>> {
        Box::pin(async move {
            let reply = match self.exchange(Method::GET, "/v1/health", None).await {
                Ok(r) => r,
                Err(CallError::AfterSend(UnknownCause::BadReplySignature)) => return Err(BankError::BadReplySignature),
                Err(CallError::NotSent(e)) => return Err(BankError::Unavailable(e)),
                Err(CallError::AfterSend(cause)) => return Err(BankError::Unavailable(format!("{cause:?}"))),
            };
            match reply.status {
                200 => parse::<wire::Health>(&reply).map(|_| ()),
                s if s >= 500 => Err(BankError::Unavailable(format!("status {s}"))),
                _ => Err(rejected(&reply)),
            }
        })
    }

    fn statement<'a>(&'a self, date: &'a str) -> BoxFuture<'a, Result<Statement, BankError>> {
        Box::pin(async move {
            let path = format!("/v1/statements/{}", segment(date)?);
            let reply = self.exchange_retrying(Method::GET, &path).await?;
            if reply.status != 200 {
                return Err(rejected(&reply));
            }
            let s: wire::Statement = parse(&reply)?;
            let lines = s
                .entries
                .into_iter()
                .map(|e| StatementLine {
                    kind: match e.kind {
                        wire::MovementKind::Transfer => MovementKind::Transfer,
                        wire::MovementKind::Refund => MovementKind::Refund,
                    },
                    transfer_status: e.transfer_status.map(|status| {
                        status_of(&wire::Transfer {
                            idempotency_key: e.idempotency_key.clone(),
                            status,
                            bank_ref: e.bank_ref.clone(),
                            amount_minor: e.amount_minor,
                            currency: e.currency.clone(),
                            created_at: e.at,
                        })
                    }),
                    idempotency_key: e.idempotency_key,
                    transfer_key: e.transfer_key,
                    bank_ref: e.bank_ref,
                    amount_minor: e.amount_minor,
                    currency: e.currency,
                    at_ms: e.at,
                })
                .collect();
            let totals = s.totals.into_iter().map(|t| (t.currency, t.transferred_minor, t.refunded_minor)).collect();
            Ok(Statement { date: s.date, lines, totals })
        })
    }
}

#[cfg(test)]
mod tests;
