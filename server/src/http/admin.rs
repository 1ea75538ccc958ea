//! Admin API: terminals (create with enrolment code, permit/forbid, revoke), browser pairings,
//! and the audit log. Every switch is audited.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post, put};
use axum::Router;
use protocol::api::{AuditEntry, CreateTerminal, CreatedTerminal, PairingSummary, SetPermission, TerminalSummary};

use super::check_origin;
use super::error::ApiError;
use super::extract::Json;
use crate::auth::AuthUser;
use crate::state::AppState;
use crate::store::Role;
use crate::terminals;
use crate::util::format_ms;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/terminals", get(list).post(create))
        .route("/api/admin/terminals/{terminal_id}/permission", put(set_permission))
        .route("/api/admin/terminals/{terminal_id}/revoke", post(revoke))
        .route("/api/admin/pairings/{pairing_id}/revoke", post(revoke_pairing))
        .route("/api/admin/audit", get(audit))
}

async fn list(State(state): State<AppState>, user: AuthUser) -> Result<Json<Vec<TerminalSummary>>, ApiError> {
    user.require(&[Role::Admin])?;
    let mut out = Vec::new();
    for t in state.store.terminals().await? {
        let status = state.hub.agent_status(&t.terminal_id);
        let pairings = state.store.pairings(&t.terminal_id).await?;
        out.push(TerminalSummary {
            terminal_id: t.terminal_id,
            name: t.name,
            permitted: t.permitted,
            revoked: t.revoked_at.is_some(),
            enrolled: t.enrolled_at.is_some(),
            online: status.is_some(),
            backend: status.as_ref().map(|s| s.backend.clone()),
            policy: status.as_ref().map(|s| s.policy.clone()),
            readers: status.map(|s| s.readers).unwrap_or_default(),
            pairings: pairings
                .into_iter()
                .map(|p| PairingSummary { pairing_id: p.pairing_id, created_at: format_ms(p.created_at), revoked: p.revoked_at.is_some() })
                .collect(),
        });
    }
    Ok(Json(out))
}

async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: AuthUser,
    Json(body): Json<CreateTerminal>,
) -> Result<Json<CreatedTerminal>, ApiError> {
    check_origin(&state, &headers)?;
    user.require(&[Role::Admin])?;
    let created = terminals::create(&state.store, &body.name, &user.user.username).await?;
    Ok(Json(CreatedTerminal {
        terminal_id: created.terminal_id,
        enrolment_code: created.enrolment_code,
        expires_at: format_ms(created.expires_at),
    }))
}

async fn set_permission(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: AuthUser,
    Path(terminal_id): Path<String>,
    Json(body): Json<SetPermission>,
) -> Result<Json<SetPermission>, ApiError> {
    check_origin(&state, &headers)?;
    user.require(&[Role::Admin])?;
    terminals::set_permitted(&state.store, &terminal_id, body.permitted, &user.user.username).await?;
    crate::reader::refresh_pages(&state, &terminal_id).await;
    Ok(Json(body))
}

async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: AuthUser,
    Path(terminal_id): Path<String>,
) -> Result<Json<()>, ApiError> {
    check_origin(&state, &headers)?;
    user.require(&[Role::Admin])?;
    state.store.revoke_terminal(&terminal_id).await?;
    state.store.audit(&user.user.username, "terminal.revoke", &terminal_id, "").await?;
    state.hub.disconnect_agent(&terminal_id);
    crate::reader::refresh_pages(&state, &terminal_id).await;
    Ok(Json(()))
}

async fn revoke_pairing(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: AuthUser,
    Path(pairing_id): Path<String>,
) -> Result<Json<()>, ApiError> {
    check_origin(&state, &headers)?;
    user.require(&[Role::Admin])?;
    let pairing = state.store.revoke_pairing(&pairing_id).await?;
    state.store.audit(&user.user.username, "pairing.revoke", &pairing_id, &pairing.terminal_id).await?;
    Ok(Json(()))
}

async fn audit(State(state): State<AppState>, user: AuthUser) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    user.require(&[Role::Admin])?;
    let events = state.store.audit_events(200).await?;
    Ok(Json(
        events
            .into_iter()
            .map(|e| AuditEntry { audit_id: e.audit_id, at: format_ms(e.at), actor: e.actor, action: e.action, subject: e.subject, detail: e.detail })
            .collect(),
    ))
}
