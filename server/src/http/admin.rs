//! Admin API: terminals (create with enrolment code, permit/forbid, top-up on/off, revoke),
//! browser pairings, the stored-value cards the issuer knows (register, block, unblock: R3.3),
//! the audit log (paged, newest first, searchable) and its latest signed head. Every change is
//! audited in the transaction that makes it.

use anyhow::Context;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post, put};
use axum::Router;
use card::purse::CardSerial;
use protocol::api::{
    AddPurseCard, AuditEntry, AuditHead, AuditPage, AuditPageQuery, BlockPurseCard, CreateTerminal, CreatedTerminal,
    PairingSummary, PurseCardPage, PurseCardQuery, PurseCardSummary, SetPermission, SetTopUp, TerminalQuery, TerminalSummary,
};

use super::check_origin;
use super::error::ApiError;
use super::extract::{self, Json};
use crate::auth::AuthUser;
use crate::state::AppState;
use crate::store::{AuditEvent, PurseCardListing, PurseCardStatus, Role, StoreError, Terminal};
use crate::terminals;
use crate::topup::admission::parse_card_serial;
use crate::util::format_ms;

/// The longest reason for blocking a card, in characters.
pub const MAX_BLOCK_REASON_CHARS: usize = 200;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/terminals", get(list).post(create))
        .route("/api/admin/terminals/{terminal_id}/permission", put(set_permission))
        .route("/api/admin/terminals/{terminal_id}/topup", post(set_topup))
        .route("/api/admin/terminals/{terminal_id}/revoke", post(revoke))
        .route("/api/admin/purse-cards", get(purse_cards).post(add_purse_card))
        .route("/api/admin/purse-cards/{card_serial}/block", post(block_purse_card))
        .route("/api/admin/purse-cards/{card_serial}/unblock", post(unblock_purse_card))
        .route("/api/admin/pairings/{pairing_id}/revoke", post(revoke_pairing))
        .route("/api/admin/audit", get(audit))
        .route("/api/admin/audit/head", get(audit_head))
}

#[utoipa::path(
    get,
    path = "/api/admin/terminals",
    operation_id = "list_terminals",
    tag = "admin",
    summary = "Terminals",
    description = "Every terminal with its agent's state, readers and pairings; with `terminal_id`, only that one (none: an empty list).",
    security(("session" = ["admin"])),
    params(TerminalQuery),
    responses(
        (status = 200, description = "The terminals", body = Vec<TerminalSummary>),
        super::openapi::RoleErrors,
        (status = 400, response = super::openapi::BadRequest),
    ),
)]
async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    extract::Query(query): extract::Query<TerminalQuery>,
) -> Result<Json<Vec<TerminalSummary>>, ApiError> {
    user.require(&[Role::Admin])?;
    let terminals = match query.terminal_id.as_deref() {
        None => state.store.terminals().await?,
        // One row, for a page that refreshes the terminal it changed (none: an empty list).
        Some(id) => match state.store.terminal(id).await {
            Ok(t) => vec![t],
            Err(StoreError::NotFound) => Vec::new(),
            Err(e) => return Err(e.into()),
        },
    };
    let mut out = Vec::with_capacity(terminals.len());
    for t in terminals {
        out.push(terminal_summary(&state, t).await?);
    }
    Ok(Json(out))
}

async fn terminal_summary(state: &AppState, t: Terminal) -> Result<TerminalSummary, ApiError> {
    let status = state.router.agent_status(&t.terminal_id).await;
    let pairings = state.store.pairings(&t.terminal_id).await?;
    Ok(TerminalSummary {
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
        topup_enabled: t.topup_enabled,
    })
}

#[utoipa::path(
    post,
    path = "/api/admin/terminals",
    operation_id = "create_terminal",
    tag = "admin",
    summary = "Create a terminal",
    description = "A new terminal and its one-time enrolment code (valid at most 15 minutes), for `cardbridge-agent enrol`.",
    security(("session" = ["admin"])),
    request_body = CreateTerminal,
    responses(
        (status = 200, description = "The terminal and its enrolment code", body = CreatedTerminal),
        super::openapi::JsonBodyErrors,
        super::openapi::ChangeErrors,
        (status = 400, description = "The name is not allowed, or the body is not JSON (`bad_request`)", body = protocol::api::ApiError),
        (status = 409, description = "A terminal with that name exists (`conflict`)", body = protocol::api::ApiError),
    ),
)]
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

#[utoipa::path(
    put,
    path = "/api/admin/terminals/{terminal_id}/permission",
    operation_id = "set_terminal_permission",
    tag = "admin",
    summary = "Permit or forbid a terminal",
    description = "Whether the terminal's reader may be used (audited); its pages are told at once.",
    security(("session" = ["admin"])),
    params(("terminal_id" = String, Path, description = "The terminal")),
    request_body = SetPermission,
    responses(
        (status = 200, description = "The permission now", body = SetPermission),
        super::openapi::JsonBodyErrors,
        super::openapi::ChangeErrors,
        (status = 404, description = "No such terminal (`not_found`)", body = protocol::api::ApiError),
    ),
)]
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

/// Switch self-service top-up on or off for a terminal (R3.3: only admitted readers top up).
#[utoipa::path(
    post,
    path = "/api/admin/terminals/{terminal_id}/topup",
    operation_id = "set_terminal_topup",
    tag = "admin",
    summary = "Switch self-service top-up on or off for a terminal",
    description = "Only admitted readers top up (R3.3); a kiosk open on the terminal is told at once. Audited.",
    security(("session" = ["admin"])),
    params(("terminal_id" = String, Path, description = "The terminal")),
    request_body = SetTopUp,
    responses(
        (status = 200, description = "The switch now", body = SetTopUp),
        super::openapi::JsonBodyErrors,
        super::openapi::ChangeErrors,
        (status = 404, description = "No such terminal (`not_found`)", body = protocol::api::ApiError),
    ),
)]
async fn set_topup(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: AuthUser,
    Path(terminal_id): Path<String>,
    Json(body): Json<SetTopUp>,
) -> Result<Json<SetTopUp>, ApiError> {
    check_origin(&state, &headers)?;
    user.require(&[Role::Admin])?;
    let mut tx = state.store.begin().await?;
    tx.set_terminal_topup(&terminal_id, body.enabled).await?;
    tx.audit(&user.user.username, topup_action(body.enabled), &terminal_id, "").await?;
    tx.commit().await?;
    // A kiosk open on the terminal shows whether it may top up now.
    crate::reader::refresh_pages(&state, &terminal_id).await;
    Ok(Json(body))
}

/// The audit action of the top-up switch.
pub fn topup_action(enabled: bool) -> &'static str {
    if enabled { "terminal.topup_on" } else { "terminal.topup_off" }
}

#[utoipa::path(
    get,
    path = "/api/admin/purse-cards",
    operation_id = "list_purse_cards",
    tag = "admin",
    summary = "Registered stored-value cards",
    description = "A page of the registered cards (50 a page from `page=1`), optionally only those whose serial ends with `q` (hexadecimal digits).",
    security(("session" = ["admin"])),
    params(PurseCardQuery),
    responses(
        (status = 200, description = "A page of cards", body = PurseCardPage),
        super::openapi::RoleErrors,
        (status = 400, description = "`q` is not at most 16 hexadecimal digits, or the query string does not parse (`bad_request`)", body = protocol::api::ApiError),
    ),
)]
async fn purse_cards(
    State(state): State<AppState>,
    user: AuthUser,
    extract::Query(query): extract::Query<PurseCardQuery>,
) -> Result<Json<PurseCardPage>, ApiError> {
    user.require(&[Role::Admin])?;
    let suffix = query.q.as_deref().map(str::trim).unwrap_or_default();
    if suffix.len() > 16 || !suffix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::BadRequest("search by the last hexadecimal digits of the card serial (at most 16)".into()));
    }
    let page = query.page.unwrap_or(1).max(1);
    let size = i64::from(PurseCardPage::PAGE_SIZE);
    // One more than a page says whether a next page exists.
    let mut rows = state.store.purse_cards(suffix, size + 1, (i64::from(page) - 1) * size).await?;
    let has_more = rows.len() as i64 > size;
    rows.truncate(PurseCardPage::PAGE_SIZE as usize);
    Ok(Json(PurseCardPage { cards: rows.into_iter().map(purse_card_summary).collect(), page, has_more }))
}

fn purse_card_summary(row: PurseCardListing) -> PurseCardSummary {
    let card = row.card;
    PurseCardSummary {
        card_serial: card.card_serial.to_hex(),
        card_masked: card.card_serial.masked(),
        username: row.username,
        bound_card_last4: row.binding_last4,
        status: match card.status {
            PurseCardStatus::Active => protocol::api::PurseCardStatus::Active,
            PurseCardStatus::Blocked => protocol::api::PurseCardStatus::Blocked,
        },
        blocked_reason: card.blocked_reason,
        created_at: format_ms(card.created_at),
        updated_at: format_ms(card.updated_at),
    }
}

fn card_serial(text: &str) -> Result<CardSerial, ApiError> {
    parse_card_serial(text).map_err(|_| ApiError::BadRequest("a card serial is 16 hexadecimal digits".into()))
}

/// Register a stored-value card for a cardholder.
#[utoipa::path(
    post,
    path = "/api/admin/purse-cards",
    operation_id = "add_purse_card",
    tag = "admin",
    summary = "Register a stored-value card",
    description = "Registers a card for a cardholder account. Audited.",
    security(("session" = ["admin"])),
    request_body = AddPurseCard,
    responses(
        (status = 200, description = "The card as registered", body = PurseCardSummary),
        super::openapi::JsonBodyErrors,
        super::openapi::ChangeErrors,
        (status = 400, description = "The serial is not 16 hexadecimal digits, or the body is not JSON (`bad_request`)", body = protocol::api::ApiError),
        (status = 409, description = "The card is registered already (`conflict`)", body = protocol::api::ApiError),
        (status = 422, description = "No user with that name, or not a cardholder (`unprocessable`); a missing or mistyped field (`invalid_body`)", body = protocol::api::ApiError),
    ),
)]
async fn add_purse_card(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: AuthUser,
    Json(body): Json<AddPurseCard>,
) -> Result<Json<PurseCardSummary>, ApiError> {
    check_origin(&state, &headers)?;
    user.require(&[Role::Admin])?;
    let serial = card_serial(&body.card_serial)?;
    let username = body.username.trim().to_lowercase();
    let holder = match state.store.user_by_name(&username).await {
        Ok(holder) => holder,
        Err(StoreError::NotFound) => return Err(ApiError::Unprocessable("no user with that name".into())),
        Err(e) => return Err(e.into()),
    };
    if holder.role != Role::Cardholder {
        return Err(ApiError::Unprocessable("a stored-value card is held by a cardholder account".into()));
    }
    let mut tx = state.store.begin().await?;
    let card = match tx.insert_purse_card(&serial, &holder.user_id, None, state.now_ms()).await {
        Ok(card) => card,
        Err(StoreError::Conflict(_)) => return Err(ApiError::Conflict("that card is registered already")),
        Err(e) => return Err(e.into()),
    };
    tx.audit(&user.user.username, "purse_card.add", &serial.masked(), &holder.username).await?;
    tx.commit().await?;
    Ok(Json(purse_card_summary(PurseCardListing { card, username: holder.username, binding_last4: None })))
}

/// A reason for blocking: trimmed, 1 to [`MAX_BLOCK_REASON_CHARS`] characters, no control
/// characters (it goes into the audit log and the admin page).
pub fn block_reason(text: &str) -> Result<&str, &'static str> {
    let reason = text.trim();
    if reason.is_empty() {
        return Err("say why the card is blocked");
    }
    if reason.chars().count() > MAX_BLOCK_REASON_CHARS {
        return Err("the reason is too long (at most 200 characters)");
    }
    if reason.chars().any(char::is_control) {
        return Err("the reason contains a control character");
    }
    Ok(reason)
}

#[utoipa::path(
    post,
    path = "/api/admin/purse-cards/{card_serial}/block",
    operation_id = "block_purse_card",
    tag = "admin",
    summary = "Block a stored-value card",
    description = "A blocked card is admitted at no kiosk. The reason (1 to 200 characters) goes into the audit log.",
    security(("session" = ["admin"])),
    params(("card_serial" = String, Path, description = "The card serial, 16 hexadecimal digits")),
    request_body = BlockPurseCard,
    responses(
        (status = 200, description = "Blocked", body = super::openapi::Null),
        super::openapi::JsonBodyErrors,
        super::openapi::ChangeErrors,
        (status = 400, description = "A bad serial or reason, or the body is not JSON (`bad_request`)", body = protocol::api::ApiError),
        (status = 404, description = "No such card (`not_found`)", body = protocol::api::ApiError),
        (status = 409, description = "The card is blocked already (`conflict`)", body = protocol::api::ApiError),
    ),
)]
async fn block_purse_card(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: AuthUser,
    Path(serial): Path<String>,
    Json(body): Json<BlockPurseCard>,
) -> Result<Json<()>, ApiError> {
    check_origin(&state, &headers)?;
    user.require(&[Role::Admin])?;
    let serial = card_serial(&serial)?;
    let reason = block_reason(&body.reason).map_err(|e| ApiError::BadRequest(e.into()))?;
    let mut tx = state.store.begin().await?;
    if !tx.block_purse_card(&serial, reason, state.now_ms()).await? {
        return Err(ApiError::Conflict("the card is blocked already"));
    }
    tx.audit(&user.user.username, "purse_card.block", &serial.masked(), reason).await?;
    tx.commit().await?;
    Ok(Json(()))
}

#[utoipa::path(
    post,
    path = "/api/admin/purse-cards/{card_serial}/unblock",
    operation_id = "unblock_purse_card",
    tag = "admin",
    summary = "Unblock a stored-value card",
    description = "The card is admitted again; its blocking reason is cleared. Audited.",
    security(("session" = ["admin"])),
    params(("card_serial" = String, Path, description = "The card serial, 16 hexadecimal digits")),
    responses(
        (status = 200, description = "Unblocked", body = super::openapi::Null),
        super::openapi::ChangeErrors,
        (status = 400, description = "The serial is not 16 hexadecimal digits (`bad_request`)", body = protocol::api::ApiError),
        (status = 404, description = "No such card (`not_found`)", body = protocol::api::ApiError),
        (status = 409, description = "The card is not blocked (`conflict`)", body = protocol::api::ApiError),
    ),
)]
async fn unblock_purse_card(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: AuthUser,
    Path(serial): Path<String>,
) -> Result<Json<()>, ApiError> {
    check_origin(&state, &headers)?;
    user.require(&[Role::Admin])?;
    let serial = card_serial(&serial)?;
    let mut tx = state.store.begin().await?;
    if !tx.unblock_purse_card(&serial, state.now_ms()).await? {
        return Err(ApiError::Conflict("the card is not blocked"));
    }
    tx.audit(&user.user.username, "purse_card.unblock", &serial.masked(), "").await?;
    tx.commit().await?;
    Ok(Json(()))
}

#[utoipa::path(
    post,
    path = "/api/admin/terminals/{terminal_id}/revoke",
    operation_id = "revoke_terminal",
    tag = "admin",
    summary = "Revoke a terminal",
    description = "The terminal's key is no longer accepted and its agent is disconnected. Audited.",
    security(("session" = ["admin"])),
    params(("terminal_id" = String, Path, description = "The terminal")),
    responses(
        (status = 200, description = "Revoked", body = super::openapi::Null),
        super::openapi::ChangeErrors,
        (status = 404, description = "No such terminal, or revoked already (`not_found`)", body = protocol::api::ApiError),
    ),
)]
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
    // The agent's connection closes on whichever instance holds it.
    state.router.revoke(&terminal_id).await;
    crate::reader::refresh_pages(&state, &terminal_id).await;
    Ok(Json(()))
}

#[utoipa::path(
    post,
    path = "/api/admin/pairings/{pairing_id}/revoke",
    operation_id = "revoke_pairing",
    tag = "admin",
    summary = "Revoke a browser pairing",
    description = "The browser holding it is no longer the terminal's. Audited.",
    security(("session" = ["admin"])),
    params(("pairing_id" = String, Path, description = "The pairing")),
    responses(
        (status = 200, description = "Revoked", body = super::openapi::Null),
        super::openapi::ChangeErrors,
        (status = 404, description = "No such pairing, or revoked already (`not_found`)", body = protocol::api::ApiError),
    ),
)]
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

#[utoipa::path(
    get,
    path = "/api/admin/audit",
    operation_id = "audit_log",
    tag = "admin",
    summary = "The audit log",
    description = "A page of the audit log, newest first (`limit` at most 200, default 50); `next_before` is the next page's `before`. `q` searches actor, action, subject and detail.",
    security(("session" = ["admin"])),
    params(AuditPageQuery),
    responses(
        (status = 200, description = "A page of events", body = AuditPage),
        super::openapi::RoleErrors,
        (status = 400, description = "`before` or `limit` is not a whole number, or `q` is too long (`bad_request`)", body = protocol::api::ApiError),
    ),
)]
async fn audit(
    State(state): State<AppState>,
    user: AuthUser,
    query: Result<Query<AuditPageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    user.require(&[Role::Admin])?;
    let Query(query) = query.map_err(|_| ApiError::BadRequest("before and limit must be whole numbers".into()))?;
    let limit = query.limit.unwrap_or(AuditPage::DEFAULT_LIMIT).clamp(1, AuditPage::MAX_LIMIT) as usize;
    let needle = query.q.as_deref().map(str::trim).unwrap_or_default();
    if needle.chars().count() > AuditPage::MAX_QUERY_CHARS {
        return Err(ApiError::BadRequest(format!("search for at most {} characters", AuditPage::MAX_QUERY_CHARS)));
    }
    let (events, next_before) = if needle.is_empty() {
        // One more than asked for says whether an older page exists.
        let mut events = state.store.audit_page(query.before, limit as i64 + 1).await?;
        let next_before = if events.len() > limit {
            events.truncate(limit);
            events.last().map(|e| e.audit_id)
        } else {
            None
        };
        (events, next_before)
    } else {
        search_audit(&state, query.before, limit, &needle.to_lowercase()).await?
    };
    let entries = events
        .into_iter()
        .map(|e| AuditEntry { audit_id: e.audit_id, at: format_ms(e.at), actor: e.actor, action: e.action, subject: e.subject, detail: e.detail })
        .collect();
    Ok(Json(AuditPage { entries, next_before }))
}

/// Events below `before` whose actor, action, subject or detail contains `needle` (lower case),
/// newest first: at most `limit` of them, looking through at most [`AuditPage::MAX_SCAN`] events.
/// The cursor goes on after the last match when the page is full, after the last event looked at
/// when the budget ran out, and is `None` at the start of the log.
async fn search_audit(state: &AppState, before: Option<i64>, limit: usize, needle: &str) -> Result<(Vec<AuditEvent>, Option<i64>), ApiError> {
    const CHUNK: u32 = 500;
    let matches = |e: &AuditEvent| [&e.actor, &e.action, &e.subject, &e.detail].iter().any(|field| field.to_lowercase().contains(needle));
    let mut found = Vec::new();
    let mut cursor = before;
    let mut scanned = 0;
    while scanned < AuditPage::MAX_SCAN {
        let chunk = state.store.audit_page(cursor, i64::from(CHUNK)).await?;
        let end_of_log = chunk.len() < CHUNK as usize;
        for event in chunk {
            scanned += 1;
            cursor = Some(event.audit_id);
            if matches(&event) {
                found.push(event);
                if found.len() == limit {
                    return Ok((found, cursor));
                }
            }
        }
        if end_of_log {
            return Ok((found, None));
        }
    }
    Ok((found, cursor))
}

/// The latest signed checkpoint, for an external system to hold (and hand to `audit-verify`).
#[utoipa::path(
    get,
    path = "/api/admin/audit/head",
    operation_id = "audit_head",
    tag = "admin",
    summary = "The latest signed checkpoint of the audit log",
    description = "For an external system to hold and to hand to `audit-verify` (`docs/audit.md`).",
    security(("session" = ["admin"])),
    responses(
        (status = 200, description = "The checkpoint", body = AuditHead),
        super::openapi::RoleErrors,
        (status = 404, description = "No checkpoint yet (`not_found`)", body = protocol::api::ApiError),
    ),
)]
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
