//! `POST /api/login`, `POST /api/logout`, `GET /api/me` (S100).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use protocol::api::{LoginRequest, Me, PairedTerminal};

use super::error::ApiError;
use super::extract::Json;
use super::{check_origin, to_wire_role};
use crate::auth::{self, AuthUser, LoginKeys, MAX_USERNAME_CHARS, SESSION_COOKIE};
use crate::logging::Escaped;
use crate::state::AppState;
use crate::store::StoreError;
use crate::util::{random_token, sha256_hex};

const LOGIN_BODY_LIMIT: usize = 4 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        // A login body is two short strings: refuse big ones before parsing them.
        .route("/api/login", post(login).layer(DefaultBodyLimit::max(LOGIN_BODY_LIMIT)))
        .route("/api/logout", post(logout))
        .route("/api/me", get(me))
}

#[utoipa::path(
    post,
    path = "/api/login",
    operation_id = "login",
    tag = "session",
    summary = "Log in",
    description = "Checks the user name and password; sets the session cookie (`cb_session`). The user name is at most 64 characters, the body at most 4 KiB. Failures are throttled per user name and per client address.",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in: who, with which role, and the terminal this browser is paired with; `Set-Cookie: cb_session`", body = Me),
        super::openapi::JsonBodyErrors,
        (status = 400, description = "The user name is too long, or the body is not JSON (`bad_request`)", body = protocol::api::ApiError),
        (status = 401, description = "The user name or password is wrong (`invalid_credentials`)", body = protocol::api::ApiError),
        (status = 403, response = super::openapi::BadOrigin),
        (status = 429, description = "Too many failed attempts (`too_many_attempts`); `Retry-After` says when to try again", body = protocol::api::ApiError,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, response = super::openapi::Internal),
    ),
)]
async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    jar: CookieJar,
    Json(body): Json<LoginRequest>,
) -> Result<(CookieJar, Json<Me>), ApiError> {
    check_origin(&state, &headers)?;
    let username = body.username.trim();
    if username.chars().count() > MAX_USERNAME_CHARS {
        return Err(ApiError::BadRequest(format!("the user name is longer than {MAX_USERNAME_CHARS} characters")));
    }
    let username = username.to_lowercase();
    let client = state.login_limiter.client_ip(peer.ip(), &headers);
    let keys = LoginKeys::new(&username, client);
    if let Some(wait) = state.login_limiter.wait(&state.store, &keys, state.now_ms()).await? {
        tracing::warn!(user = %Escaped(&username), %client, "login refused: too many failures");
        return Err(ApiError::TooManyAttempts { retry_after_secs: wait.as_millis().div_ceil(1000) as u64 });
    }
    let user = match state.store.user_by_name(&username).await {
        Ok(user) => Some(user),
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(e.into()),
    };
    let password = body.password;
    let hash = user.as_ref().map(|u| u.password_hash.clone()).unwrap_or_else(|| auth::dummy_hash().to_string());
    // argon2 is deliberately slow: keep it off the async workers.
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &hash))
        .await
        .map_err(|e| anyhow::anyhow!("password check task: {e}"))?;
    let Some(user) = user.filter(|_| ok) else {
        state.login_limiter.record_failure(&state.store, &keys, state.now_ms()).await?;
        tracing::info!(user = %Escaped(&username), %client, "login failed");
        state.store.audit(&username, "login.failed", &username, &client.to_string()).await?;
        return Err(ApiError::InvalidCredentials);
    };
    state.login_limiter.record_success(&state.store, &keys).await?;
    let token = random_token(32);
    state.store.create_session(&sha256_hex(&token), &user.user_id, state.config.session_ttl_ms, state.now_ms()).await?;
    state.store.audit(&user.username, "login", &user.user_id, user.role.as_str()).await?;
    let cookie = Cookie::build((SESSION_COOKIE, token))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.config.secure_cookies)
        .path("/")
        .build();
    let jar = jar.add(cookie);
    let (jar, terminal) = paired(&state, jar).await?;
    Ok((jar, Json(Me { username: user.username, role: to_wire_role(user.role), terminal })))
}

#[utoipa::path(
    post,
    path = "/api/logout",
    operation_id = "logout",
    tag = "session",
    summary = "Log out",
    description = "Ends the session and clears its cookie.",
    security(("session" = [])),
    responses(
        (status = 200, description = "Logged out; `Set-Cookie` clears `cb_session`"),
        super::openapi::SessionErrors,
        (status = 403, response = super::openapi::BadOrigin),
    ),
)]
async fn logout(State(state): State<AppState>, headers: HeaderMap, jar: CookieJar, user: AuthUser) -> Result<CookieJar, ApiError> {
    check_origin(&state, &headers)?;
    state.store.delete_session(&user.session_hash).await?;
    Ok(jar.remove(Cookie::build(SESSION_COOKIE).path("/").build()))
}

#[utoipa::path(
    get,
    path = "/api/me",
    operation_id = "me",
    tag = "session",
    summary = "Who is logged in",
    description = "The session's user and role, and the terminal this browser is paired with (its `cb_terminal` cookie, renewed here for another 400 days).",
    security(("session" = [])),
    responses(
        (status = 200, description = "The session's user", body = Me),
        super::openapi::SessionErrors,
    ),
)]
async fn me(State(state): State<AppState>, jar: CookieJar, user: AuthUser) -> Result<(CookieJar, Json<Me>), ApiError> {
    let (jar, terminal) = paired(&state, jar).await?;
    Ok((jar, Json(Me { username: user.user.username, role: to_wire_role(user.user.role), terminal })))
}

/// The terminal this browser is paired with; a live pairing's cookie is renewed for another
/// [`auth::PAIRING_COOKIE_MAX_AGE_DAYS`] days, so that only unused pairings lapse.
async fn paired(state: &AppState, jar: CookieJar) -> Result<(CookieJar, Option<PairedTerminal>), ApiError> {
    let Some(terminal_id) = auth::paired_terminal(state, &jar).await? else { return Ok((jar, None)) };
    let terminal = state.store.terminal(&terminal_id).await?;
    let jar = match jar.get(auth::PAIRING_COOKIE).map(|c| c.value().to_string()) {
        Some(binding) => jar.add(auth::pairing_cookie(binding, state.config.secure_cookies)),
        None => jar,
    };
    Ok((jar, Some(PairedTerminal { terminal_id, name: terminal.name })))
}
