//! `/api/admin/demo/bank`: the demo's in-process bank, unplugged and plugged back in by an admin, so that a person can watch the bank-link alarm rise and clear; absent (404) on every server without `demo_bank`

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use protocol::api::DemoBankPlug;

use super::error::ApiError;
use super::extract::Json;
use crate::auth::AuthUser;
use crate::state::{AllowedOrigins, AppState};
use crate::store::{Role, Store};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/admin/demo/bank", get(plug).post(set_plug))
}

fn demo_bank(state: &AppState) -> Result<crate::state::DemoBank, ApiError> {
    state.demo_bank.clone().ok_or(ApiError::NotFound("no demo bank on this server"))
}

#[utoipa::path(
    get,
    path = "/api/admin/demo/bank",
    operation_id = "demo_bank",
    tag = "demo",
    summary = "Whether the demo bank runs",
    security(("session" = ["admin"])),
    responses(
        (status = 200, description = "The demo bank's plug", body = DemoBankPlug),
        super::openapi::RoleErrors,
        (status = 404, description = "No demo bank on this server (`not_found`)", body = protocol::api::ApiError),
    ),
)]
async fn plug(State(state): State<AppState>, user: AuthUser) -> Result<Json<DemoBankPlug>, ApiError> {
    user.require(&[Role::Admin])?;
    Ok(Json(DemoBankPlug { running: demo_bank(&state)?.running().await }))
}

#[utoipa::path(
    post,
    path = "/api/admin/demo/bank",
    operation_id = "set_demo_bank",
    tag = "demo",
    summary = "Unplug the demo bank, or plug it back in",
    description = "So that a person can watch the bank-link alarm rise and clear. Audited.",
    security(("session" = ["admin"])),
    request_body = DemoBankPlug,
    responses(
        (status = 200, description = "The demo bank's plug now", body = DemoBankPlug),
        super::openapi::JsonBodyErrors,
        super::openapi::ChangeErrors,
        (status = 404, description = "No demo bank on this server (`not_found`)", body = protocol::api::ApiError),
    ),
)]
async fn set_plug(
    State(state): State<AppState>,
    State(store): State<Store>,
    State(origins): State<AllowedOrigins>,
    headers: HeaderMap,
    user: AuthUser,
    Json(body): Json<DemoBankPlug>,
) -> Result<Json<DemoBankPlug>, ApiError> {
    origins.check(&headers)?;
    user.require(&[Role::Admin])?;
    let bank = demo_bank(&state)?;
    bank.set_running(body.running).await.map_err(ApiError::from)?;
    let action = if body.running { "demo.bank_plugged_in" } else { "demo.bank_unplugged" };
    store.audit(&user.user.username, action, "demo-bank", "").await?;
    Ok(Json(DemoBankPlug { running: bank.running().await }))
}
