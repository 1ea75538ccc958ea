//! The sandbox's HTTP routes: the bank-gateway API under `/v1` (every request verified, every
//! reply signed, faults applied) and the sandbox-only admin routes under `/sandbox`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use protocol::bank::signing::{self, BankKey, SignatureError};
use protocol::bank::{self as wire, ErrorCode};
use tokio::sync::watch;

use crate::api::{Endpoint, Fault, FaultPlan, Settled, StatementFault};
use crate::ledger::{self, Forced, Ledger, LedgerError};
use crate::net::ConnHandle;

/// Largest request body the bank reads.
const MAX_BODY: usize = 64 * 1024;

pub struct Shared {
    pub ledger: Ledger,
    pub key: BankKey,
    /// A std `Mutex`: only read or swapped, never held across an `.await`.
    pub faults: Arc<Mutex<FaultPlan>>,
    /// Turns `true` when the server stops; hanging requests end then.
    pub stopping: watch::Receiver<bool>,
}

type AppState = Arc<Shared>;

impl Shared {
    fn take_fault(&self, endpoint: Endpoint) -> Option<Fault> {
        self.faults.lock().expect("faults lock").take(endpoint)
    }

    fn latency(&self) -> Duration {
        Duration::from_millis(self.faults.lock().expect("faults lock").latency_ms)
    }

    /// Never answer: wait until the server stops.
    async fn hang(&self) -> BankError {
        let mut stopping = self.stopping.clone();
        let _ = stopping.wait_for(|s| *s).await;
        BankError::Internal(anyhow::anyhow!("stopped while hanging"))
    }
}

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/bindings", post(create_binding))
        .route("/v1/bindings/{token}", delete(delete_binding))
        .route("/v1/transfers", post(create_transfer))
        .route("/v1/transfers/{key}", get(transfer_status))
        .route("/v1/refunds", post(create_refund))
        .route("/v1/statements/{date}", get(statement))
        .route("/v1/health", get(health))
        .fallback(|| async { BankError::NotFound("no such route") })
        .layer(middleware::from_fn_with_state(state.clone(), signed));
    let admin = Router::new()
        .route("/sandbox/faults", get(get_faults).post(set_faults).delete(clear_faults))
        .route("/sandbox/settle", post(settle));
    v1.merge(admin).with_state(state)
}

/// An error reply of the gateway API.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    #[error("{0}")]
    BadRequest(String),
    #[error("request signature refused: {0}")]
    Unauthorized(SignatureError),
    #[error("request refused: nonce already used")]
    Replayed,
    #[error("{0}")]
    NotFound(&'static str),
    #[error(transparent)]
    Ledger(LedgerError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
    #[error("injected fault: error before commit")]
    Injected,
}

impl From<LedgerError> for BankError {
    fn from(e: LedgerError) -> Self {
        BankError::Ledger(e)
    }
}

impl IntoResponse for BankError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            BankError::BadRequest(_) | BankError::Ledger(LedgerError::Invalid(_)) => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
            BankError::Unauthorized(_) | BankError::Replayed => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
            BankError::NotFound(_) | BankError::Ledger(LedgerError::NotFound) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            BankError::Ledger(LedgerError::BindingRefused) => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::BindingRefused),
            BankError::Ledger(LedgerError::IdempotencyConflict) => (StatusCode::CONFLICT, ErrorCode::IdempotencyConflict),
            BankError::Ledger(LedgerError::RefundRefused(_)) => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::RefundRefused),
            BankError::Ledger(LedgerError::Database(_)) | BankError::Internal(_) | BankError::Injected => {
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal)
            }
        };
        let message = if status.is_server_error() {
            if !matches!(self, BankError::Injected) {
                tracing::error!(error = ?self, "sandbox bank request failed");
            }
            "the bank could not process the request".to_string()
        } else {
            if status == StatusCode::UNAUTHORIZED {
                tracing::warn!(error = %self, "sandbox bank refused a request");
            }
            match &self {
                BankError::Ledger(LedgerError::NotFound) => "never seen".to_string(),
                other => other.to_string(),
            }
        };
        (status, Json(wire::ErrorBody { code, message })).into_response()
    }
}

fn now_s() -> i64 {
    ledger::now_ms() / 1000
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, SignatureError> {
    headers.get(name).and_then(|v| v.to_str().ok()).ok_or(SignatureError::Missing(name))
}

/// Verify the request (key, timestamp window, signature, unseen nonce), apply the injected
/// latency, run the handler, and sign its reply — error replies included.
async fn signed(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let request_signature = parts.headers.get(signing::HEADER_SIGNATURE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let outcome = async {
        let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| BankError::BadRequest("body too large or unreadable".into()))?;
        let headers = &parts.headers;
        let key_id = header(headers, signing::HEADER_KEY_ID).map_err(BankError::Unauthorized)?;
        let timestamp: i64 = header(headers, signing::HEADER_TIMESTAMP)
            .map_err(BankError::Unauthorized)?
            .parse()
            .map_err(|_| BankError::Unauthorized(SignatureError::Missing(signing::HEADER_TIMESTAMP)))?;
        let nonce = header(headers, signing::HEADER_NONCE).map_err(BankError::Unauthorized)?;
        let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        state
            .key
            .verify_request(key_id, parts.method.as_str(), path, timestamp, nonce, &bytes, &request_signature, now_s())
            .map_err(BankError::Unauthorized)?;
        // Nonces are kept a little longer than the window in which their timestamp is accepted.
        let keep_ms = 2 * signing::MAX_SKEW_S * 1000 + 60_000;
        if !state.ledger.remember_nonce(nonce, ledger::now_ms(), keep_ms).await? {
            return Err(BankError::Replayed);
        }
        Ok(bytes)
    }
    .await;
    let response = match outcome {
        Err(e) => e.into_response(),
        Ok(bytes) => {
            let latency = state.latency();
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            next.run(Request::from_parts(parts, Body::from(bytes))).await
        }
    };
    sign_reply(&state.key, &request_signature, response).await
}

async fn sign_reply(key: &BankKey, request_signature: &str, response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let ts = now_s();
    let signature = key.sign_reply(parts.status.as_u16(), request_signature, ts, &bytes);
    let h = &mut parts.headers;
    if let Ok(v) = HeaderValue::from_str(&key.key_id) {
        h.insert(signing::HEADER_KEY_ID, v);
    }
    h.insert(signing::HEADER_TIMESTAMP, HeaderValue::from(ts));
    h.insert(signing::HEADER_SIGNATURE, HeaderValue::from_str(&signature).expect("hex is a valid header value"));
    Response::from_parts(parts, Body::from(bytes))
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, BankError> {
    serde_json::from_slice(body).map_err(|e| BankError::BadRequest(format!("malformed body: {e}")))
}

/// What to do around the commit, from the fault taken for this request.
enum Plan {
    Normal,
    Forced(Forced),
    HangAfter,
    DropAfter,
}

async fn before_commit(state: &Shared, endpoint: Endpoint) -> Result<Plan, BankError> {
    Ok(match state.take_fault(endpoint) {
        None => Plan::Normal,
        Some(Fault::Timeout) => return Err(state.hang().await),
        Some(Fault::ErrorBeforeCommit) => return Err(BankError::Injected),
        Some(Fault::TimeoutAfterCommit) => Plan::HangAfter,
        Some(Fault::ReplyLostAfterCommit) => Plan::DropAfter,
        Some(Fault::Decline { reason }) => Plan::Forced(Forced::Decline(reason)),
        Some(Fault::Pending) => Plan::Forced(Forced::Pending),
    })
}

/// After the commit: answer, hang, or drop the connection, as planned.
async fn after_commit<T: serde::Serialize>(state: &Shared, conn: &ConnHandle, plan: Plan, status: StatusCode, body: T) -> Result<Response, BankError> {
    match plan {
        Plan::HangAfter => Err(state.hang().await),
        Plan::DropAfter => {
            tracing::info!("injected fault: committed, dropping the connection without a reply");
            conn.drop_connection();
            // The socket is shut down: whatever is written now goes nowhere.
            Err(BankError::Injected)
        }
        Plan::Normal | Plan::Forced(_) => Ok((status, Json(body)).into_response()),
    }
}

async fn create_binding(State(state): State<AppState>, ConnectInfo(conn): ConnectInfo<ConnHandle>, body: Bytes) -> Result<Response, BankError> {
    let req: wire::CreateBinding = parse(&body)?;
    let plan = before_commit(&state, Endpoint::CreateBinding).await?;
    let binding = state.ledger.create_binding(&req).await.inspect_err(|e| {
        if matches!(e, LedgerError::BindingRefused) {
            tracing::info!(card = %wire::mask(&req.card_number), "binding refused");
        }
    })?;
    tracing::info!(card = %wire::mask(&req.card_number), "binding created");
    after_commit(&state, &conn, plan, StatusCode::CREATED, binding).await
}

async fn delete_binding(State(state): State<AppState>, Path(token): Path<String>) -> Result<StatusCode, BankError> {
    state.ledger.delete_binding(&token).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_transfer(State(state): State<AppState>, ConnectInfo(conn): ConnectInfo<ConnHandle>, body: Bytes) -> Result<Response, BankError> {
    let req: wire::TransferRequest = parse(&body)?;
    let plan = before_commit(&state, Endpoint::Transfer).await?;
    let forced = match plan {
        Plan::Forced(f) => Some(f),
        _ => None,
    };
    let transfer = state.ledger.transfer(&req, forced).await?;
    tracing::info!(key = %transfer.idempotency_key, status = ?transfer.status, amount_minor = transfer.amount_minor, "transfer");
    after_commit(&state, &conn, plan, StatusCode::OK, transfer).await
}

async fn transfer_status(State(state): State<AppState>, ConnectInfo(conn): ConnectInfo<ConnHandle>, Path(key): Path<String>) -> Result<Response, BankError> {
    let plan = before_commit(&state, Endpoint::TransferStatus).await?;
    let transfer = state.ledger.transfer_status(&key).await?;
    after_commit(&state, &conn, plan, StatusCode::OK, transfer).await
}

async fn create_refund(State(state): State<AppState>, ConnectInfo(conn): ConnectInfo<ConnHandle>, body: Bytes) -> Result<Response, BankError> {
    let req: wire::RefundRequest = parse(&body)?;
    let plan = before_commit(&state, Endpoint::Refund).await?;
    let refund = state.ledger.refund(&req).await?;
    tracing::info!(key = %refund.idempotency_key, transfer = %refund.transfer_key, amount_minor = refund.amount_minor, "refund");
    after_commit(&state, &conn, plan, StatusCode::OK, refund).await
}

async fn statement(State(state): State<AppState>, ConnectInfo(conn): ConnectInfo<ConnHandle>, Path(date): Path<String>) -> Result<Response, BankError> {
    let plan = before_commit(&state, Endpoint::Statement).await?;
    let mut statement = state.ledger.statement(&date).await?;
    let misstatements = state.faults.lock().expect("faults lock").statement.clone();
    misstate(&mut statement, &misstatements);
    after_commit(&state, &conn, plan, StatusCode::OK, statement).await
}

/// The health probe: answers once the ledger answers; moves nothing.
async fn health(State(state): State<AppState>, ConnectInfo(conn): ConnectInfo<ConnHandle>) -> Result<Response, BankError> {
    let plan = before_commit(&state, Endpoint::Health).await?;
    state.ledger.ping().await?;
    let body = wire::Health { status: "ok".into(), time: ledger::now_ms() };
    after_commit(&state, &conn, plan, StatusCode::OK, body).await
}

/// Apply the plan's statement faults: drop, duplicate or restate transfers, then total the
/// entries again (a misstating bank's totals agree with its own lines).
fn misstate(statement: &mut wire::Statement, faults: &[StatementFault]) {
    if faults.is_empty() {
        return;
    }
    let is_transfer = |e: &wire::StatementEntry, key: &str| e.kind == wire::MovementKind::Transfer && e.idempotency_key == key;
    for fault in faults {
        match fault {
            StatementFault::Drop { idempotency_key } => statement.entries.retain(|e| !is_transfer(e, idempotency_key)),
            StatementFault::Duplicate { idempotency_key } => {
                if let Some(i) = statement.entries.iter().position(|e| is_transfer(e, idempotency_key)) {
                    let mut copy = statement.entries[i].clone();
                    copy.bank_ref.push_str("-DUP");
                    statement.entries.insert(i + 1, copy);
                }
            }
            StatementFault::Amount { idempotency_key, amount_minor } => {
                for e in statement.entries.iter_mut().filter(|e| is_transfer(e, idempotency_key)) {
                    e.amount_minor = *amount_minor;
                }
            }
        }
    }
    let mut totals: Vec<wire::StatementTotal> = Vec::new();
    for e in &statement.entries {
        let i = match totals.iter().position(|t| t.currency == e.currency) {
            Some(i) => i,
            None => {
                totals.push(wire::StatementTotal { currency: e.currency.clone(), transferred_minor: 0, refunded_minor: 0 });
                totals.len() - 1
            }
        };
        match (e.kind, &e.transfer_status) {
            (wire::MovementKind::Transfer, Some(wire::TransferStatus::Completed)) => totals[i].transferred_minor += e.amount_minor,
            (wire::MovementKind::Refund, _) => totals[i].refunded_minor += e.amount_minor,
            _ => {}
        }
    }
    statement.totals = totals;
}

async fn get_faults(State(state): State<AppState>) -> Json<FaultPlan> {
    Json(state.faults.lock().expect("faults lock").clone())
}

async fn set_faults(State(state): State<AppState>, body: Bytes) -> Result<StatusCode, BankError> {
    let plan: FaultPlan = parse(&body)?;
    tracing::info!(?plan, "fault plan set");
    *state.faults.lock().expect("faults lock") = plan;
    Ok(StatusCode::NO_CONTENT)
}

async fn clear_faults(State(state): State<AppState>) -> StatusCode {
    *state.faults.lock().expect("faults lock") = FaultPlan::default();
    StatusCode::NO_CONTENT
}

async fn settle(State(state): State<AppState>) -> Result<Json<Settled>, BankError> {
    Ok(Json(Settled { settled: state.ledger.settle_pending().await? }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(key: &str, amount_minor: i64) -> wire::StatementEntry {
        wire::StatementEntry {
            kind: wire::MovementKind::Transfer,
            idempotency_key: key.into(),
            transfer_key: None,
            bank_ref: format!("SBT-{key}"),
            amount_minor,
            currency: "CNY".into(),
            transfer_status: Some(wire::TransferStatus::Completed),
            at: 1,
        }
    }

    #[test]
    fn the_statement_misstates_as_planned_and_totals_its_own_lines() {
        let mut statement = wire::Statement { date: "2026-05-01".into(), entries: vec![transfer("a", 100), transfer("b", 200), transfer("c", 300)], totals: vec![] };
        misstate(
            &mut statement,
            &[
                StatementFault::Drop { idempotency_key: "a".into() },
                StatementFault::Duplicate { idempotency_key: "b".into() },
                StatementFault::Amount { idempotency_key: "c".into(), amount_minor: 5 },
            ],
        );
        let lines: Vec<_> = statement.entries.iter().map(|e| (e.idempotency_key.as_str(), e.amount_minor, e.bank_ref.as_str())).collect();
        assert_eq!(lines, vec![("b", 200, "SBT-b"), ("b", 200, "SBT-b-DUP"), ("c", 5, "SBT-c")]);
        assert_eq!(statement.totals, vec![wire::StatementTotal { currency: "CNY".into(), transferred_minor: 405, refunded_minor: 0 }]);
    }
}
