//! `/api/bindings`: a cardholder binds a bank card for top-up (start, resend, confirm with the
//! code), lists and removes bindings; `/api/admin/sms-outbox`: the demo/test SMS outbox.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::Router;
use protocol::api::{BindingStarted, BindingSummary, ConfirmBinding, OutboxMessage, StartBinding};

use super::check_origin;
use super::error::ApiError;
use super::extract::Json;
use crate::auth::AuthUser;
use crate::binding;
use crate::state::AppState;
use crate::store::Role;
use crate::util::format_ms;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/bindings", get(list).post(start))
        .route("/api/bindings/{request_id}/resend", post(resend))
        .route("/api/bindings/{request_id}/confirm", post(confirm))
        .route("/api/bindings/{binding_id}", delete(remove))
        .route("/api/admin/sms-outbox", get(outbox))
}

async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: AuthUser,
    Json(body): Json<StartBinding>,
) -> Result<(StatusCode, Json<BindingStarted>), ApiError> {
    check_origin(&state, &headers)?;
    user.require(&[Role::Cardholder])?;
    Ok((StatusCode::CREATED, Json(binding::start(&state, &user.user, &body).await?)))
}

async fn resend(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: AuthUser,
    Path(request_id): Path<String>,
) -> Result<Json<BindingStarted>, ApiError> {
    check_origin(&state, &headers)?;
    user.require(&[Role::Cardholder])?;
    Ok(Json(binding::resend(&state, &user.user, &request_id).await?))
}

async fn confirm(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: AuthUser,
    Path(request_id): Path<String>,
    Json(body): Json<ConfirmBinding>,
) -> Result<Json<BindingSummary>, ApiError> {
    check_origin(&state, &headers)?;
    user.require(&[Role::Cardholder])?;
    Ok(Json(binding::confirm(&state, &user.user, &request_id, &body.code).await?))
}

async fn list(State(state): State<AppState>, user: AuthUser) -> Result<Json<Vec<BindingSummary>>, ApiError> {
    user.require(&[Role::Cardholder])?;
    Ok(Json(binding::list(&state, &user.user).await?))
}

async fn remove(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: AuthUser,
    Path(binding_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_origin(&state, &headers)?;
    user.require(&[Role::Cardholder])?;
    binding::remove(&state, &user.user, &binding_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn outbox(State(state): State<AppState>, user: AuthUser) -> Result<Json<Vec<OutboxMessage>>, ApiError> {
    user.require(&[Role::Admin])?;
    let messages = state.store.sms_outbox(200).await?;
    Ok(Json(
        messages
            .into_iter()
            .map(|(phone, body, sent_at)| OutboxMessage { phone, body, sent_at: format_ms(sent_at) })
            .collect(),
    ))
}
