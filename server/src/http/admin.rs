//! Admin API: terminals (create with enrolment code, permit/forbid, revoke), browser pairings,
//! the audit log (paged, newest first) and its latest signed head. Every switch is audited.

use anyhow::Context;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post, put};
use axum::Router;
use protocol::api::{
    AuditEntry, AuditHead, AuditPage, AuditPageQuery, CreateTerminal, CreatedTerminal, PairingSummary, SetPermission,
    TerminalSummary,
};

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
        .route("/api/admin/audit/head", get(audit_head))
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
    let mut tx = state.store.begin().await?;
    tx.revoke_terminal(&terminal_id).await?;
    tx.audit(&user.user.username, "terminal.revoke", &terminal_id, "").await?;
    tx.commit().await?;
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
    let mut tx = state.store.begin().await?;
    let pairing = tx.revoke_pairing(&pairing_id).await?;
    tx.audit(&user.user.username, "pairing.revoke", &pairing_id, &pairing.terminal_id).await?;
    tx.commit().await?;
    Ok(Json(()))
}

async fn audit(
    State(state): State<AppState>,
    user: AuthUser,
    query: Result<Query<AuditPageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    user.require(&[Role::Admin])?;
    let Query(query) = query.map_err(|_| ApiError::BadRequest("before and limit must be whole numbers".into()))?;
    let limit = query.limit.unwrap_or(AuditPage::DEFAULT_LIMIT).clamp(1, AuditPage::MAX_LIMIT) as usize;
    // One more than asked for says whether an older page exists.
    let mut events = state.store.audit_page(query.before, limit as i64 + 1).await?;
    let next_before = if events.len() > limit {
        events.truncate(limit);
        events.last().map(|e| e.audit_id)
    } else {
        None
    };
    let entries = events
        .into_iter()
        .map(|e| AuditEntry { audit_id: e.audit_id, at: format_ms(e.at), actor: e.actor, action: e.action, subject: e.subject, detail: e.detail })
        .collect();
    Ok(Json(AuditPage { entries, next_before }))
}

/// The latest signed checkpoint, for an external system to hold (and hand to `audit-verify`).
async fn audit_head(State(state): State<AppState>, user: AuthUser) -> Result<Json<AuditHead>, ApiError> {
    user.require(&[Role::Admin])?;
    let checkpoint = state.store.latest_audit_checkpoint().await?.ok_or(ApiError::NotFound("no audit checkpoint yet"))?;
    let hex_field = |name: &str, text: &str| hex::decode(text).with_context(|| format!("stored checkpoint {name} is not hex"));
    Ok(Json(AuditHead {
        checkpoint_id: checkpoint.audit_checkpoint_id,
        event_count: u64::try_from(checkpoint.event_count).context("stored checkpoint count")?,
        head_hash: hex_field("head hash", &checkpoint.head_hash)?.into(),
        at_ms: checkpoint.at,
        at: format_ms(checkpoint.at),
        signature: hex_field("signature", &checkpoint.signature)?.into(),
        public_key: hex_field("public key", &checkpoint.public_key)?.into(),
    }))
}
