//! The agent's HTTP calls: enrolment with a one-time code, asking for a pairing link; and the
//! pairing link itself, which binds the browser that opens it to the terminal.
//!
//! A weak (small-order) Ed25519 key is refused at enrolment (400 `weak_public_key`), before the
//! code is spent, and stored keys are loaded only through `protocol::envelope::verifying_key`,
//! which refuses them too.

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use axum_extra::extract::cookie::CookieJar;

use super::extract::{Json, Query};
use protocol::api::{EnrolRequest, EnrolResponse, PairingLink, PairingRequest};
use protocol::HexBytes;
use serde::Deserialize;

use super::error::ApiError;
use crate::state::AppState;
use crate::store::StoreError;
use crate::util::{format_ms, random_token};

/// A pairing link is valid this long.
const PAIRING_TTL_MS: i64 = 10 * 60 * 1000;
/// A pairing request's timestamp may be this far from the server's clock.
const PAIRING_SKEW_MS: i64 = 60 * 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/agent/enrol", post(enrol))
        .route("/api/agent/pairing", post(pairing))
        .route("/pair", get(pair))
}

#[utoipa::path(
    post,
    path = "/api/agent/enrol",
    operation_id = "enrol_agent",
    tag = "agent",
    summary = "Enrol a bridge agent",
    description = "The agent registers its Ed25519 public key with the terminal's one-time enrolment code (the code is the authorisation) and pins the server's key from the answer. Wrong codes are counted per client address, and too many make the next attempt wait.",
    request_body = EnrolRequest,
    responses(
        (status = 200, description = "Enrolled", body = EnrolResponse),
        super::openapi::JsonBodyErrors,
        (status = 400, description = "A weak (small-order) key (`weak_public_key`; the code is not spent), a key that is not an Ed25519 key, or a body that is not JSON (`bad_request`)", body = protocol::api::ApiError),
        (status = 404, description = "The enrolment code is unknown, used or expired (`not_found`)", body = protocol::api::ApiError),
        (status = 429, description = "Too many wrong codes from this address (`too_many_attempts`); `Retry-After` says when to try again", body = protocol::api::ApiError,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, response = super::openapi::Internal),
    ),
)]
async fn enrol(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
    Json(body): Json<EnrolRequest>,
) -> Response {
    let client = state.login_limiter.client_ip(peer.ip(), &headers);
    match state.login_limiter.enrol_wait(&state.store, client, state.now_ms()).await {
        Ok(None) => {}
        Ok(Some(wait)) => {
            tracing::warn!(%client, "enrolment refused: too many wrong codes from this address");
            return ApiError::TooManyAttempts { retry_after_secs: wait.as_millis().div_ceil(1000) as u64 }.into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    }
    match protocol::envelope::verifying_key(&body.public_key.0) {
        Ok(_) => enrol_key(state, client, body).await.into_response(),
        Err(protocol::envelope::VerifyError::WeakKey) => {
            tracing::warn!("enrolment refused: weak public key");
            let body = protocol::api::ApiError {
                code: "weak_public_key".into(),
                message: "public_key is a weak (small-order) Ed25519 key; generate a new key pair".into(),
            };
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
        Err(_) => ApiError::BadRequest("public_key is not an Ed25519 key".into()).into_response(),
    }
}

async fn enrol_key(state: AppState, client: std::net::IpAddr, body: EnrolRequest) -> Result<Json<EnrolResponse>, ApiError> {
    let code = body.enrolment_code.trim().to_uppercase();
    let terminal = match state.store.enrol_terminal(&code, &body.public_key.0).await {
        Ok(t) => t,
        Err(StoreError::NotFound) => {
            tracing::warn!(%client, "enrolment refused: unknown, used or expired code");
            state.login_limiter.record_enrol_failure(&state.store, client, state.now_ms()).await?;
            return Err(ApiError::NotFound("the enrolment code is unknown, used or expired"));
        }
        Err(e) => return Err(e.into()),
    };
    state.store.audit("agent", "terminal.enrol", &terminal.terminal_id, &hex::encode(&body.public_key.0)).await?;
    Ok(Json(EnrolResponse {
        terminal_id: terminal.terminal_id,
        terminal_name: terminal.name,
        server_public_key: HexBytes(state.hub.server_public_key().to_bytes().to_vec()),
    }))
}

#[utoipa::path(
    post,
    path = "/api/agent/pairing",
    operation_id = "pairing_link",
    tag = "agent",
    summary = "Ask for a one-time pairing link",
    description = "Signed request: `signature` is the terminal's Ed25519 signature (its enrolled key) over `\"cardbridge/pairing/v1\\0\" ‖ terminal_id ‖ 0 ‖ issued_at_ms`, and `issued_at_ms` is within a minute of the server's clock. OpenAPI has no security scheme for a signed body; `x-cardbridge-signature` says the same. The link is valid 10 minutes.",
    extensions(("x-cardbridge-signature" = json!({"algorithm": "Ed25519", "key": "the terminal's enrolled public key", "field": "signature", "signed": "\"cardbridge/pairing/v1\\0\" ‖ terminal_id ‖ 0 ‖ issued_at_ms"}))),
    request_body = PairingRequest,
    responses(
        (status = 200, description = "The link", body = PairingLink),
        super::openapi::JsonBodyErrors,
        (status = 400, description = "Refused: unknown or revoked terminal, bad signature or stale timestamp, all alike; or a body that is not JSON (`bad_request`)", body = protocol::api::ApiError),
        (status = 500, response = super::openapi::Internal),
    ),
)]
async fn pairing(State(state): State<AppState>, Json(body): Json<PairingRequest>) -> Result<Json<PairingLink>, ApiError> {
    let refused = || ApiError::BadRequest("pairing request refused".into());
    if (body.issued_at_ms - state.now_ms()).abs() > PAIRING_SKEW_MS {
        return Err(refused());
    }
    let terminal = match state.store.terminal(&body.terminal_id).await {
        Ok(t) => t,
        Err(StoreError::NotFound) => return Err(refused()),
        Err(e) => return Err(e.into()),
    };
    let key = terminal.public_key.as_deref().filter(|_| terminal.revoked_at.is_none()).ok_or_else(refused)?;
    let key = protocol::envelope::verifying_key(key).map_err(|_| refused())?;
    protocol::envelope::verify_pairing(&body.terminal_id, body.issued_at_ms, &body.signature, &key).map_err(|_| refused())?;
    let token = random_token(24);
    let expires = state.store.create_pairing_token(&terminal.terminal_id, &token, PAIRING_TTL_MS).await?;
    Ok(Json(PairingLink { url: format!("{}/pair?token={token}", state.public_base), expires_at: format_ms(expires) }))
}

#[derive(Deserialize)]
struct PairQuery {
    token: String,
}

#[utoipa::path(
    get,
    path = "/pair",
    operation_id = "pair",
    tag = "agent",
    summary = "Open a pairing link",
    description = "One-time: binds the browser that opens it to the terminal (the HttpOnly `cb_terminal` cookie, 400 days, renewed by `GET /api/me`) and redirects to `/`.",
    params(("token" = String, Query, description = "The link's one-time token")),
    responses(
        (status = 303, description = "Paired; `Set-Cookie: cb_terminal`, `Location: /`"),
        (status = 400, description = "No `token` (`bad_request`)", body = protocol::api::ApiError),
        (status = 404, description = "The link is unknown, used or expired (`not_found`)", body = protocol::api::ApiError),
        (status = 500, response = super::openapi::Internal),
    ),
)]
async fn pair(State(state): State<AppState>, jar: CookieJar, Query(q): Query<PairQuery>) -> Result<(CookieJar, Redirect), ApiError> {
    let binding = random_token(32);
    let pairing = match state.store.redeem_pairing_token(&q.token, &binding).await {
        Ok(p) => p,
        Err(StoreError::NotFound) => return Err(ApiError::NotFound("the pairing link is unknown, used or expired")),
        Err(e) => return Err(e.into()),
    };
    state.store.audit("browser", "pairing.create", &pairing.pairing_id, &pairing.terminal_id).await?;
    Ok((jar.add(crate::auth::pairing_cookie(binding, state.config.secure_cookies)), Redirect::to("/")))
}
