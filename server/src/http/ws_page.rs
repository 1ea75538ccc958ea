//! `/ws/page`: the page module's connection. Only allowed Origins, only logged-in users, only
//! browsers paired with a terminal. Carries consent (S200), arming (S300) and the card number (S400).

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use axum_extra::extract::cookie::CookieJar;
use futures_util::SinkExt;
use protocol::agent::CommandBody;
use protocol::page::{ConsentDecision, ConsentState, PageToServer, Refusal, ServerToPage};
use tokio::sync::mpsc;

use crate::auth::{AuthUser, PAIRING_COOKIE};
use super::socket::Connection;
use crate::hub::{NewPage, PageRef, CONNECTION_QUEUE};
use crate::reader;
use crate::state::AppState;
use crate::store::{BrowserPairing, StoreError, StoredConsent};

const MAX_FRAME: usize = 16 * 1024;

pub fn router() -> Router<AppState> {
    Router::new().route("/ws/page", get(upgrade))
}

#[utoipa::path(
    get,
    path = "/ws/page",
    operation_id = "page_socket",
    tag = "sockets",
    summary = "The page module's WebSocket",
    description = "WebSocket upgrade. Frames are `protocol::page` (`PageToServer` up, `ServerToPage` down; `docs/protocol.md`): consent (S200), arming (S300), the card number (S400). Only allowed Origins. Without a session or a pairing the upgrade still succeeds and the first frame is `refused` (`not_logged_in`, `not_paired`).",
    security(("session" = [], "pairing" = [])),
    responses(
        (status = 101, description = "Switching protocols: the socket is open"),
        (status = 400, description = "Not a WebSocket handshake (axum's plain-text rejection)", content_type = "text/plain", body = String),
        (status = 403, description = "The Origin is not allowed", content_type = "text/plain", body = String),
        (status = 500, response = crate::http::openapi::Internal),
    ),
)]
async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    user: Result<AuthUser, crate::http::error::ApiError>,
    ws: WebSocketUpgrade,
) -> Response {
    let origin = headers.get("origin").and_then(|o| o.to_str().ok()).unwrap_or("");
    if !state.is_allowed_origin(origin) {
        tracing::warn!(%origin, "page socket refused: origin not allowed");
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let pairing = match jar.get(PAIRING_COOKIE) {
        Some(binding) => match state.store.pairing_by_binding(binding.value()).await {
            Ok(p) => Some(p),
            Err(StoreError::NotFound) => None,
            Err(e) => return crate::http::error::ApiError::from(e).into_response(),
        },
        None => None,
    };
    super::socket::limit_frames(ws, MAX_FRAME).on_upgrade(move |socket| handle(state, socket, user.ok(), pairing))
}

async fn send_now(socket: &mut WebSocket, message: &ServerToPage) {
    let _ = socket.send(Message::Text(protocol::encode(message).into())).await;
}

async fn handle(state: AppState, mut socket: WebSocket, user: Option<AuthUser>, pairing: Option<BrowserPairing>) {
    let Some(user) = user else {
        send_now(&mut socket, &ServerToPage::Refused { reason: Refusal::NotLoggedIn }).await;
        let _ = socket.close().await;
        return;
    };
    let Some(pairing) = pairing else {
        send_now(&mut socket, &ServerToPage::Refused { reason: Refusal::NotPaired }).await;
        let _ = socket.close().await;
        return;
    };

    let terminal_id = pairing.terminal_id.clone();
    let (tx, rx) = mpsc::channel::<ServerToPage>(CONNECTION_QUEUE);
    let new_page = NewPage {
        terminal_id: &terminal_id,
        user_id: &user.user.user_id,
        session_hash: &user.session_hash,
        pairing_id: &pairing.pairing_id,
    };
    let page_id = state.hub.page_connected(new_page, tx);
    let page = PageRef {
        page_id,
        user_id: user.user.user_id.clone(),
        session_hash: user.session_hash.clone(),
        pairing_id: pairing.pairing_id.clone(),
        instance: None,
    };
    let mut connection = Connection::new(socket, rx, MAX_FRAME, state.draining.clone());
    greet(&state, &terminal_id, &page).await;
    while let Some(text) = connection.next_text().await {
        match protocol::decode::<PageToServer>(&text) {
            Ok(message) => on_message(&state, &terminal_id, &page, &user, message).await,
            Err(e) => {
                tracing::warn!(error = %crate::util::ErrorChain(&e), "malformed page frame");
                state.hub.send_to_page(page_id, ServerToPage::Refused { reason: Refusal::BadRequest });
            }
        }
    }
    drop(connection);
    state.hub.page_disconnected(page_id);
}

/// First frames: the terminal's state, and the consent question if the user has not answered.
async fn greet(state: &AppState, terminal_id: &str, page: &PageRef) {
    match reader::terminal_view(state, terminal_id, page).await {
        Ok(view) => {
            let consent = view.consent;
            let name = view.terminal_name.clone();
            state.hub.send_to_page(page.page_id, ServerToPage::State(view));
            match consent {
                ConsentState::Unknown => state.hub.send_to_page(page.page_id, ServerToPage::ConsentNeeded { terminal_name: name }),
                ConsentState::Denied => {
                    state.hub.send_to_page(page.page_id, ServerToPage::Refused { reason: Refusal::ConsentDenied })
                }
                _ => {}
            }
        }
        Err(e) => tracing::error!(error = %crate::util::ErrorChain(&e), "building the first terminal view"),
    }
}

async fn on_message(state: &AppState, terminal_id: &str, page: &PageRef, user: &AuthUser, message: PageToServer) {
    let who = &user.user.username;
    match message {
        PageToServer::Consent { decision } => {
            let (stored, once, action) = match decision {
                ConsentDecision::AllowOnce => (None, true, "consent.allow_once"),
                ConsentDecision::AllowAlways => (Some(StoredConsent::Always), false, "consent.allow_always"),
                ConsentDecision::Deny => (Some(StoredConsent::Deny), false, "consent.deny"),
            };
            // The decision and its audit event commit together; if they cannot, nothing changed.
            if let Err(e) = store_consent(state, &user.user.user_id, who, terminal_id, stored, action).await {
                tracing::error!(error = %crate::util::ErrorChain(&e), "storing consent");
                state.hub.send_to_page(page.page_id, ServerToPage::Refused { reason: Refusal::Unavailable });
                return;
            }
            if let Err(e) = state.store.set_consent_once(&user.session_hash, terminal_id, once, state.now_ms()).await {
                tracing::error!(error = %crate::util::ErrorChain(&e), "storing an allow-once consent");
                state.hub.send_to_page(page.page_id, ServerToPage::Refused { reason: Refusal::Unavailable });
                return;
            }
            if decision == ConsentDecision::Deny {
                state.hub.set_armed(page.page_id, false);
                state.hub.send_to_page(page.page_id, ServerToPage::Refused { reason: Refusal::ConsentDenied });
            }
            reader::refresh_pages(state, terminal_id).await;
        }
        PageToServer::Arm => match arm_check(state, terminal_id, page).await {
            Ok(()) => {
                state.hub.set_armed(page.page_id, true);
                state.hub.send_to_page(page.page_id, ServerToPage::WaitingForCard);
                reader::start_read_if_armed(state, terminal_id);
            }
            Err(reason) => {
                state.hub.set_armed(page.page_id, false);
                state.hub.send_to_page(page.page_id, ServerToPage::Refused { reason });
            }
        },
        PageToServer::Disarm => state.hub.set_armed(page.page_id, false),
        PageToServer::DemoTap { card } => demo(state, terminal_id, page, who, CommandBody::SimulateTap { card }).await,
        PageToServer::DemoRemove => demo(state, terminal_id, page, who, CommandBody::SimulateRemove).await,
    }
}

async fn store_consent(
    state: &AppState,
    user_id: &str,
    who: &str,
    terminal_id: &str,
    stored: Option<StoredConsent>,
    action: &str,
) -> Result<(), StoreError> {
    let mut tx = state.store.begin().await?;
    tx.set_consent(user_id, terminal_id, stored).await?;
    tx.audit(who, action, terminal_id, "").await?;
    tx.commit().await
}

/// Arming (and the demo tray, which taps a card for the page) re-checks the authorization and
/// counts against the per-terminal and per-user arming limit.
async fn arm_check(state: &AppState, terminal_id: &str, page: &PageRef) -> Result<(), Refusal> {
    reader::authorize(state, terminal_id, page).await?;
    reader::throttle(&state.throttles.arm, terminal_id, page, state.now_ms()).await
}

/// The demo card tray: only in demo mode, only on virtual-reader terminals, and only through the
/// same authorization as a real read.
async fn demo(state: &AppState, terminal_id: &str, page: &PageRef, who: &str, body: CommandBody) {
    let virtual_reader = state.router.agent_status(terminal_id).await.is_some_and(|s| s.backend == "virtual");
    if !state.config.demo || !virtual_reader {
        state.hub.send_to_page(page.page_id, ServerToPage::Refused { reason: Refusal::NotADemoTerminal });
        return;
    }
    if let Err(reason) = arm_check(state, terminal_id, page).await {
        state.hub.send_to_page(page.page_id, ServerToPage::Refused { reason });
        return;
    }
    let label = match &body {
        CommandBody::SimulateTap { card } => card.clone(),
        _ => "remove".into(),
    };
    tracing::info!(terminal_id, user = who, card = %label, "demo tray");
    if let Err(e) = state.router.send_command(terminal_id, body).await {
        tracing::warn!(terminal_id, error = %crate::util::ErrorChain(&e), "demo tray command failed");
    }
}
