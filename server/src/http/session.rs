//! `POST /api/login`, `POST /api/logout`, `GET /api/me` (S100).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use protocol::api::{LoginRequest, Me, PairedTerminal};

use super::error::ApiError;
use super::{check_origin, to_wire_role};
use crate::auth::{self, AuthUser, SESSION_COOKIE};
use crate::state::AppState;
use crate::store::StoreError;
use crate::util::{random_token, sha256_hex};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/me", get(me))
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    jar: CookieJar,
    Json(body): Json<LoginRequest>,
) -> Result<(CookieJar, Json<Me>), ApiError> {
    check_origin(&state, &headers)?;
    let username = body.username.trim().to_lowercase();
    let keys = vec![format!("user:{username}"), format!("addr:{}", peer.ip())];
    if state.login_limiter.is_blocked(&keys) {
        tracing::warn!(user = %username, "login refused: too many failures");
        return Err(ApiError::TooManyAttempts);
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
        state.login_limiter.record_failure(&keys);
        tracing::info!(user = %username, "login failed");
        state.store.audit(&username, "login.failed", &username, &peer.ip().to_string()).await?;
        return Err(ApiError::InvalidCredentials);
    };
    state.login_limiter.clear(&keys[..1]);
    let token = random_token(32);
    state.store.create_session(&sha256_hex(&token), &user.user_id, state.config.session_ttl_ms).await?;
    state.store.audit(&user.username, "login", &user.user_id, user.role.as_str()).await?;
    let cookie = Cookie::build((SESSION_COOKIE, token))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.config.secure_cookies)
        .path("/")
        .build();
    let jar = jar.add(cookie);
    let terminal = paired(&state, &jar).await?;
    Ok((jar, Json(Me { username: user.username, role: to_wire_role(user.role), terminal })))
}

async fn logout(State(state): State<AppState>, headers: HeaderMap, jar: CookieJar, user: AuthUser) -> Result<CookieJar, ApiError> {
    check_origin(&state, &headers)?;
    state.store.delete_session(&user.session_hash).await?;
    Ok(jar.remove(Cookie::build(SESSION_COOKIE).path("/").build()))
}

async fn me(State(state): State<AppState>, jar: CookieJar, user: AuthUser) -> Result<Json<Me>, ApiError> {
    let terminal = paired(&state, &jar).await?;
    Ok(Json(Me { username: user.user.username, role: to_wire_role(user.user.role), terminal }))
}

async fn paired(state: &AppState, jar: &CookieJar) -> Result<Option<PairedTerminal>, ApiError> {
    let Some(terminal_id) = auth::paired_terminal(state, jar).await? else { return Ok(None) };
    let terminal = state.store.terminal(&terminal_id).await?;
    Ok(Some(PairedTerminal { terminal_id, name: terminal.name }))
}
