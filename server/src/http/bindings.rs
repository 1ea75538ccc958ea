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

#[utoipa::path(
    post,
    path = "/api/bindings",
    operation_id = "start_binding",
    tag = "bindings",
    summary = "Bind a bank card for top-up",
    description = "The bank confirms the card and the phone registered with it, then a 6-digit code goes to that phone (at most 5 codes an hour per card).",
    security(("session" = ["cardholder"])),
    request_body = StartBinding,
    responses(
        (status = 201, description = "Waiting for the code", body = BindingStarted),
        super::openapi::JsonBodyErrors,
        super::openapi::ChangeErrors,
        (status = 400, description = "Not a card number or phone number, or the body is not JSON (`bad_request`)", body = protocol::api::ApiError),
        (status = 409, description = "The card is bound to this cardholder already (`conflict`)", body = protocol::api::ApiError),
        (status = 422, description = "The bank does not confirm the card and phone (`unprocessable`); a missing or mistyped field (`invalid_body`)", body = protocol::api::ApiError),
        (status = 429, response = super::openapi::RateLimited),
        (status = 503, response = super::openapi::Unavailable),
    ),
)]
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

#[utoipa::path(
    post,
    path = "/api/bindings/{request_id}/resend",
    operation_id = "resend_binding_code",
    tag = "bindings",
    summary = "Send a new code",
    description = "A new code for a binding waiting for one; the wrong attempts so far still count.",
    security(("session" = ["cardholder"])),
    params(("request_id" = String, Path, description = "The binding request")),
    responses(
        (status = 200, description = "A new code is on its way", body = BindingStarted),
        super::openapi::ChangeErrors,
        (status = 404, description = "No such request of this cardholder, or it ended (`not_found`)", body = protocol::api::ApiError),
        (status = 429, response = super::openapi::RateLimited),
    ),
)]
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

#[utoipa::path(
    post,
    path = "/api/bindings/{request_id}/confirm",
    operation_id = "confirm_binding",
    tag = "bindings",
    summary = "Confirm a binding with its code",
    description = "A code is spent once; 5 wrong codes end the request.",
    security(("session" = ["cardholder"])),
    params(("request_id" = String, Path, description = "The binding request")),
    request_body = ConfirmBinding,
    responses(
        (status = 200, description = "The card is bound", body = BindingSummary),
        super::openapi::JsonBodyErrors,
        super::openapi::ChangeErrors,
        (status = 404, description = "No such request of this cardholder, or it ended (`not_found`)", body = protocol::api::ApiError),
        (status = 409, description = "The card is bound to this cardholder already (`conflict`)", body = protocol::api::ApiError),
        (status = 422, description = "A wrong or expired code, or too many wrong codes (`unprocessable`); a missing or mistyped field (`invalid_body`)", body = protocol::api::ApiError),
    ),
)]
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

#[utoipa::path(
    get,
    path = "/api/bindings",
    operation_id = "list_bindings",
    tag = "bindings",
    summary = "The cardholder's bound bank cards",
    security(("session" = ["cardholder"])),
    responses(
        (status = 200, description = "The bindings", body = Vec<BindingSummary>),
        super::openapi::RoleErrors,
    ),
)]
async fn list(State(state): State<AppState>, user: AuthUser) -> Result<Json<Vec<BindingSummary>>, ApiError> {
    user.require(&[Role::Cardholder])?;
    Ok(Json(binding::list(&state, &user.user).await?))
}

#[utoipa::path(
    delete,
    path = "/api/bindings/{binding_id}",
    operation_id = "remove_binding",
    tag = "bindings",
    summary = "Remove a binding",
    description = "Also deleted at the bank.",
    security(("session" = ["cardholder"])),
    params(("binding_id" = String, Path, description = "The binding")),
    responses(
        (status = 204, description = "Removed"),
        super::openapi::ChangeErrors,
        (status = 404, description = "No such binding of this cardholder (`not_found`)", body = protocol::api::ApiError),
    ),
)]
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

#[utoipa::path(
    get,
    path = "/api/admin/sms-outbox",
    operation_id = "sms_outbox",
    tag = "bindings",
    summary = "The SMS outbox",
    description = "The demo/test SMS gateway's messages, newest first (at most 200).",
    security(("session" = ["admin"])),
    responses(
        (status = 200, description = "The messages", body = Vec<OutboxMessage>),
        super::openapi::RoleErrors,
    ),
)]
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
