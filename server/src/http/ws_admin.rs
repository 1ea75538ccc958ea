//! `/ws/admin`: run-state monitoring pushed live to logged-in admins (R3.8). Only allowed Origins
//! and admin sessions get the upgrade (403/401 before it otherwise). Frames are
//! `protocol::admin::ServerToAdmin`: a snapshot (open alarms, every terminal's state) first and
//! again whenever the socket fell behind, then alarms raised, acknowledged, cleared and terminals
//! changing state as they happen. The page sends nothing; the session is checked again every
//! [`SESSION_RECHECK`], and the socket closes when it ended (logout, expiry) or lost its role.

use std::time::Duration;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use protocol::admin::ServerToAdmin;
use tokio::sync::{broadcast, mpsc};

use super::error::ApiError;
use super::socket::Connection;
use crate::auth::AuthUser;
use crate::hub::CONNECTION_QUEUE;
use crate::monitor::{alarm_to_wire, terminal_to_wire, MonitorEvent};
use crate::state::AppState;
use crate::store::{Role, StoreError};
use crate::util::ErrorChain;

/// The page sends nothing; anything it does send is small.
const MAX_FRAME: usize = 4 * 1024;
/// How often the admin's session is checked again.
pub const SESSION_RECHECK: Duration = Duration::from_secs(30);

pub fn router() -> Router<AppState> {
    Router::new().route("/ws/admin", get(upgrade))
}

#[utoipa::path(
    get,
    path = "/ws/admin",
    operation_id = "admin_socket",
    tag = "sockets",
    summary = "Run-state monitoring pushed live to admins",
    description = "WebSocket upgrade. Frames are `protocol::admin::ServerToAdmin` (`docs/protocol.md`): a snapshot, then alarms and terminal changes as they happen; the page sends nothing. Only allowed Origins and admin sessions get the upgrade; the session is checked again every 30 s.",
    security(("session" = ["admin"])),
    responses(
        (status = 101, description = "Switching protocols: the socket is open"),
        (status = 400, description = "Not a WebSocket handshake (axum's plain-text rejection)", content_type = "text/plain", body = String),
        (status = 401, response = crate::http::openapi::Unauthorized),
        (status = 403, description = "The Origin is not allowed (plain text), or the session is not an admin's (`forbidden`)", content((String = "text/plain"), (protocol::api::ApiError = "application/json"))),
        (status = 500, response = crate::http::openapi::Internal),
    ),
)]
async fn upgrade(State(state): State<AppState>, headers: HeaderMap, user: Result<AuthUser, ApiError>, ws: WebSocketUpgrade) -> Response {
    let origin = headers.get("origin").and_then(|o| o.to_str().ok()).unwrap_or("");
    if !state.is_allowed_origin(origin) {
        tracing::warn!(origin = %crate::logging::Escaped(origin), "admin socket refused: origin not allowed");
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let user = match user {
        Ok(user) => user,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = user.require(&[Role::Admin]) {
        tracing::warn!(user = %user.user.username, "admin socket refused: not an admin");
        return e.into_response();
    }
    super::socket::limit_frames(ws, MAX_FRAME).on_upgrade(move |socket| handle(state, socket, user))
}

fn to_wire(event: MonitorEvent) -> ServerToAdmin {
    match event {
        MonitorEvent::AlarmRaised(a) => ServerToAdmin::AlarmRaised { alarm: alarm_to_wire(&a) },
        MonitorEvent::AlarmAcked(a) => ServerToAdmin::AlarmAcked { alarm: alarm_to_wire(&a) },
        MonitorEvent::AlarmCleared(a) => ServerToAdmin::AlarmCleared { alarm: alarm_to_wire(&a) },
        MonitorEvent::TerminalChanged(t) => ServerToAdmin::TerminalChanged { terminal: terminal_to_wire(&t) },
    }
}

async fn snapshot(state: &AppState) -> Result<ServerToAdmin, StoreError> {
    let open_alarms = state.store.open_alarms().await?;
    let terminals = state.monitor.terminals_now().await?;
    Ok(ServerToAdmin::Snapshot {
        open_alarms: open_alarms.iter().map(alarm_to_wire).collect(),
        terminals: terminals.iter().map(terminal_to_wire).collect(),
    })
}

/// The admin is still logged in, and still an admin.
async fn session_live(state: &AppState, user: &AuthUser) -> Result<bool, StoreError> {
    match state.store.session_user(&user.session_hash, state.now_ms()).await {
        Ok(u) => Ok(u.role == Role::Admin),
        Err(StoreError::NotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

async fn handle(state: AppState, socket: WebSocket, user: AuthUser) {
    // Subscribed before the snapshot is read: nothing that happens in between is missed (at
    // worst it is seen twice).
    let mut events = state.monitor.subscribe();
    let (tx, rx) = mpsc::channel::<ServerToAdmin>(CONNECTION_QUEUE);
    let mut connection = Connection::new(socket, rx, MAX_FRAME, state.draining.clone());
    let first = match snapshot(&state).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %ErrorChain(&e), "admin socket: reading the snapshot");
            return;
        }
    };
    if tx.try_send(first).is_err() {
        return;
    }
    tracing::info!(user = %user.user.username, "admin socket open");
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + SESSION_RECHECK, SESSION_RECHECK);
    loop {
        let frame = tokio::select! {
            text = connection.next_text() => match text {
                Some(_) => continue,
                None => break,
            },
            event = events.recv() => match event {
                Ok(event) => to_wire(event),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "admin socket fell behind; sending a fresh snapshot");
                    match snapshot(&state).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::error!(error = %ErrorChain(&e), "admin socket: reading the snapshot");
                            break;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = recheck.tick() => match session_live(&state, &user).await {
                Ok(true) => continue,
                Ok(false) => {
                    tracing::info!(user = %user.user.username, "admin socket closed: the session ended");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %ErrorChain(&e), "admin socket: checking the session");
                    continue;
                }
            },
        };
        // A socket that cannot keep up is dropped; the page reconnects and gets a snapshot.
        if tx.try_send(frame).is_err() {
            tracing::warn!(user = %user.user.username, "admin socket too slow; closed");
            break;
        }
    }
}
