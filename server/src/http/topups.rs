//! `/api/admin/topups`: top-ups for the people who run the system — the list (by state, paged) and a person's decision on a top-up in `exception` (DESIGN §4), recorded through the engine like every other step
//!
//! The handlers take only what they use (`State<Store>`, `State<TopUps>`, `State<AllowedOrigins>`),
//! not the whole application state.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use protocol::api::{DecideTopUp, TopUpDecision, TopUpQuery, TopUpSummary};

use super::error::ApiError;
use super::extract::{Json, Query};
use crate::auth::AuthUser;
use crate::state::{AllowedOrigins, AppState};
use crate::store::{Role, Store};
use crate::topup::service::TopUps;
use crate::topup::record::RecordError;
use crate::topup::{Decision, Effect, Event, FailReason, State as TopUpState, TopUp};
use crate::util::format_ms;

const PAGE: i64 = 50;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/topups", get(list))
        .route("/api/admin/topups/{topup_id}/decision", post(decide))
}

/// What a person may decide in the top-up's state: before the debit is known, about the debit;
/// after it, about the card.
fn decisions(state: &TopUpState, debited: bool, credited: bool) -> Vec<TopUpDecision> {
    match (state, debited, credited) {
        (TopUpState::Exception { .. }, false, _) => vec![TopUpDecision::Debited, TopUpDecision::NotDebited],
        (TopUpState::Exception { .. }, true, false) => vec![TopUpDecision::Credited, TopUpDecision::NotCredited],
        _ => Vec::new(),
    }
}

#[utoipa::path(
    get,
    path = "/api/admin/topups",
    operation_id = "list_topups",
    tag = "topups",
    summary = "Top-ups",
    description = "Top-ups newest first, 50 a page from `page=0`, optionally in one state; each with the decisions a person may take (only in `exception`).",
    security(("session" = ["admin"])),
    params(TopUpQuery),
    responses(
        (status = 200, description = "A page of top-ups", body = Vec<TopUpSummary>),
        super::openapi::RoleErrors,
        (status = 400, response = super::openapi::BadRequest),
    ),
)]
async fn list(State(store): State<Store>, user: AuthUser, Query(query): Query<TopUpQuery>) -> Result<Json<Vec<TopUpSummary>>, ApiError> {
    user.require(&[Role::Admin])?;
    let wanted = query.state.filter(|s| !s.is_empty());
    let offset = i64::from(query.page.unwrap_or(0)) * PAGE;
    let rows = store.topups_page(wanted.as_deref(), PAGE, offset).await?;
    Ok(Json(rows.into_iter().map(|(stored, terminal_id, tac)| summary(&stored.topup, terminal_id, tac)).collect()))
}

#[utoipa::path(
    post,
    path = "/api/admin/topups/{topup_id}/decision",
    operation_id = "decide_topup",
    tag = "topups",
    summary = "Decide a top-up in `exception`",
    description = "A person's decision after looking at the bank statement or the card, recorded through the engine and audited under the admin's name.",
    security(("session" = ["admin"])),
    params(("topup_id" = String, Path, description = "The top-up")),
    request_body = DecideTopUp,
    responses(
        (status = 200, description = "The top-up after the decision", body = TopUpSummary),
        super::openapi::JsonBodyErrors,
        super::openapi::ChangeErrors,
        (status = 404, description = "No such top-up (`not_found`)", body = protocol::api::ApiError),
        (status = 409, description = "The top-up moved on, or its card has another open top-up (`conflict`)", body = protocol::api::ApiError),
        (status = 422, description = "A decision the top-up's state does not allow (`unprocessable`); a missing or mistyped field (`invalid_body`)", body = protocol::api::ApiError),
    ),
)]
async fn decide(
    State(topups): State<TopUps>,
    State(origins): State<AllowedOrigins>,
    headers: HeaderMap,
    user: AuthUser,
    Path(topup_id): Path<String>,
    Json(body): Json<DecideTopUp>,
) -> Result<Json<TopUpSummary>, ApiError> {
    origins.check(&headers)?;
    user.require(&[Role::Admin])?;
    let decision = match body.decision {
        TopUpDecision::Debited => Decision::Debited,
        TopUpDecision::NotDebited => Decision::NotDebited,
        TopUpDecision::Credited => Decision::Credited,
        TopUpDecision::NotCredited => Decision::NotCredited,
    };
    let transition = match topups.apply(&topup_id, Event::Operator(decision), &user.user.username).await {
        Ok(t) => t,
        Err(RecordError::NotFound) => return Err(ApiError::NotFound("no such top-up")),
        Err(RecordError::Invalid(e)) => return Err(ApiError::Unprocessable(e.to_string())),
        Err(RecordError::Stale) => return Err(ApiError::Conflict("the top-up moved on; look again")),
        Err(RecordError::CardBusy) => return Err(ApiError::Conflict("the card has another open top-up")),
        Err(RecordError::Store(e)) => return Err(ApiError::Store(e)),
    };
    for effect in &transition.effects {
        match effect {
            // A refund is the bank worker's; the write waits for the card (or is made if it is on
            // its terminal's reader).
            Effect::SendRefund { .. } => topups.wake_worker_anywhere(),
            Effect::WriteCard { .. } => topups.spawn_write_at_origin(&topup_id),
            _ => {}
        }
    }
    let store = topups.store();
    let (terminal_id, tac) = (store.topup_terminal(&topup_id).await?, store.topup_proof(&topup_id).await?.map(|(_, tac)| tac));
    Ok(Json(summary(&transition.next, terminal_id, tac)))
}

fn summary(t: &TopUp, terminal_id: Option<String>, tac: Option<String>) -> TopUpSummary {
    let reason = match &t.state {
        TopUpState::Exception { reason } => Some(reason.code().to_string()),
        TopUpState::Failed { reason: FailReason::DebitDeclined } => Some("debit_declined".to_string()),
        TopUpState::Failed { reason: FailReason::NotDebited } => Some("not_debited".to_string()),
        _ => None,
    };
    TopUpSummary {
        topup_id: t.id.as_str().to_string(),
        card_masked: t.card.masked(),
        amount_minor: t.amount,
        state: t.state.name().to_string(),
        reason,
        terminal_id,
        debited: t.debited,
        credited: t.credited,
        created_at: format_ms(t.created_at.0),
        updated_at: format_ms(t.updated_at.0),
        tac,
        decisions: decisions(&t.state, t.debited, t.credited),
    }
}
