//! Run-state monitoring over HTTP (R3.8): the probes of an orchestrator (`/livez`, `/readyz`), the
//! Prometheus scrape (`/metrics`), and the admins' alarm and monitor API
//! (`/api/admin/alarms`, `/api/admin/alarms/{id}/ack`, `/api/admin/monitor`).
//!
//! `/livez`, `/readyz` and `/metrics` need no login (an orchestrator and Prometheus call them);
//! keep them to the internal network at the reverse proxy. The handlers take only what they use
//! (`State<Monitor>`, `State<Store>`, `State<AllowedOrigins>`).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use protocol::admin::{Alarm, AlarmFilter, AlarmPage, AlarmQuery, MonitorView, Readiness};

use super::error::ApiError;
use super::extract::{Json, Query};
use crate::auth::AuthUser;
use crate::monitor::{alarm_to_wire, Monitor};
use crate::state::{AllowedOrigins, AppState};
use crate::store::{AckError, Role, Store};

/// How long `/readyz` waits for the database.
const READY_DEADLINE: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/admin/alarms", get(alarms))
        .route("/api/admin/alarms/{alarm_id}/ack", post(ack))
        .route("/api/admin/monitor", get(monitor_view))
}

/// The process serves HTTP: nothing else is looked at (a database outage must not get the server
/// restarted).
#[utoipa::path(
    get,
    path = "/livez",
    operation_id = "livez",
    tag = "monitoring",
    summary = "Liveness",
    description = "200 while the process serves HTTP; looks at nothing else. No login: keep it to the internal network.",
    responses((status = 200, description = "Alive", body = Readiness)),
)]
async fn livez() -> Json<Readiness> {
    Json(Readiness { ready: true, down: Vec::new() })
}

/// Ready to serve: the database answers a read within 2 s and, with a bank configured, its
/// latest health probe answered. 503 with the dependencies that are down otherwise.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "monitoring",
    summary = "Readiness",
    description = "Ready when the database answers a read within 2 s and, with a bank configured, its latest health probe answered. No login: keep it to the internal network.",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: `down` names the dependencies", body = Readiness),
    ),
)]
async fn readyz(State(monitor): State<Monitor>) -> Response {
    let down = monitor.unready(READY_DEADLINE).await;
    let status = if down.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Readiness { ready: down.is_empty(), down })).into_response()
}

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "monitoring",
    summary = "Prometheus metrics",
    description = "OpenMetrics text; the series are in `docs/operations.md`. No login: keep it to the internal network.",
    responses((status = 200, description = "The metrics", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)),
)]
async fn metrics(State(monitor): State<Monitor>) -> Response {
    let mut response = monitor.scrape().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
    response
}

#[utoipa::path(
    get,
    path = "/api/admin/alarms",
    operation_id = "list_alarms",
    tag = "monitoring",
    summary = "Alarms",
    description = "Alarms newest first, 50 a page from `page=1`; `open` (the default) is raised or acknowledged, not cleared.",
    security(("session" = ["admin"])),
    params(AlarmQuery),
    responses(
        (status = 200, description = "A page of alarms", body = AlarmPage),
        super::openapi::RoleErrors,
        (status = 400, response = super::openapi::BadRequest),
    ),
)]
async fn alarms(State(store): State<Store>, user: AuthUser, Query(query): Query<AlarmQuery>) -> Result<Json<AlarmPage>, ApiError> {
    user.require(&[Role::Admin])?;
    let page = query.page.unwrap_or(1).max(1);
    let size = i64::from(AlarmPage::PAGE_SIZE);
    // One more than a page says whether a next page exists.
    let mut rows = store.alarms_page(query.state == AlarmFilter::Open, size + 1, (i64::from(page) - 1) * size).await?;
    let has_more = rows.len() as i64 > size;
    rows.truncate(AlarmPage::PAGE_SIZE as usize);
    Ok(Json(AlarmPage { alarms: rows.iter().map(alarm_to_wire).collect(), page, has_more }))
}

#[utoipa::path(
    post,
    path = "/api/admin/alarms/{alarm_id}/ack",
    operation_id = "ack_alarm",
    tag = "monitoring",
    summary = "Acknowledge an alarm",
    description = "Acknowledged by this admin (audited as `alarm.ack`); acknowledging again keeps the first.",
    security(("session" = ["admin"])),
    params(("alarm_id" = String, Path, description = "The alarm")),
    responses(
        (status = 200, description = "The alarm", body = Alarm),
        super::openapi::ChangeErrors,
        (status = 404, description = "No such alarm (`not_found`)", body = protocol::api::ApiError),
    ),
)]
async fn ack(
    State(monitor): State<Monitor>,
    State(origins): State<AllowedOrigins>,
    headers: HeaderMap,
    user: AuthUser,
    Path(alarm_id): Path<String>,
) -> Result<Json<Alarm>, ApiError> {
    origins.check(&headers)?;
    user.require(&[Role::Admin])?;
    match monitor.ack(&alarm_id, &user.user.username).await {
        Ok(alarm) => Ok(Json(alarm_to_wire(&alarm))),
        Err(AckError::NotFound) => Err(ApiError::NotFound("no such alarm")),
        Err(AckError::Store(e)) => Err(e.into()),
    }
}

#[utoipa::path(
    get,
    path = "/api/admin/monitor",
    operation_id = "monitor",
    tag = "monitoring",
    summary = "Everything run-state monitoring watches, now",
    description = "Every admitted terminal's state, the bank link, the hub's figures, and the number of open alarms. `/ws/admin` pushes the changes.",
    security(("session" = ["admin"])),
    responses(
        (status = 200, description = "The monitor view", body = MonitorView),
        super::openapi::RoleErrors,
    ),
)]
async fn monitor_view(State(monitor): State<Monitor>, user: AuthUser) -> Result<Json<MonitorView>, ApiError> {
    user.require(&[Role::Admin])?;
    Ok(Json(monitor.view().await?))
}
