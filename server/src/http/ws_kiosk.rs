//! `/ws/kiosk`: the top-up kiosk page's connection. Only allowed Origins, only browsers paired with a terminal; no login (the card is the identity, see `crate::kiosk`). Carries the kiosk frames of `protocol::kiosk`

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use axum_extra::extract::cookie::CookieJar;
use futures_util::SinkExt;
use protocol::agent::CommandBody;
use protocol::kiosk::{KioskToServer, ServerToKiosk};
use protocol::page::Refusal;
use tokio::sync::{broadcast, mpsc};

use super::socket::Connection;
use crate::auth::PAIRING_COOKIE;
use crate::hub::{KioskSignal, CONNECTION_QUEUE};
use crate::kiosk::Kiosk;
use crate::state::AppState;
use crate::store::{BrowserPairing, StoreError};

const MAX_FRAME: usize = 4 * 1024;

pub fn router() -> Router<AppState> {
    Router::new().route("/ws/kiosk", get(upgrade))
}

#[utoipa::path(
    get,
    path = "/ws/kiosk",
    operation_id = "kiosk_socket",
    tag = "sockets",
    summary = "The top-up kiosk's WebSocket",
    description = "WebSocket upgrade. Frames are `protocol::kiosk` (`KioskToServer` up, `ServerToKiosk` down; `docs/protocol.md`). No login (the card is the identity); only allowed Origins and browsers paired with a terminal: without a live pairing the upgrade still succeeds and the first frame is `refused` (`not_paired`).",
    security(("pairing" = [])),
    responses(
        (status = 101, description = "Switching protocols: the socket is open"),
        (status = 400, description = "Not a WebSocket handshake (axum's plain-text rejection)", content_type = "text/plain", body = String),
        (status = 403, description = "The Origin is not allowed", content_type = "text/plain", body = String),
        (status = 500, response = crate::http::openapi::Internal),
    ),
)]
async fn upgrade(State(state): State<AppState>, headers: HeaderMap, jar: CookieJar, ws: WebSocketUpgrade) -> Response {
    let origin = headers.get("origin").and_then(|o| o.to_str().ok()).unwrap_or("");
    if !state.is_allowed_origin(origin) {
        tracing::warn!(%origin, "kiosk socket refused: origin not allowed");
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let pairing = match jar.get(PAIRING_COOKIE) {
        Some(binding) => match state.store.pairing_by_binding(binding.value()).await {
            Ok(p) if p.revoked_at.is_none() => Some(p),
            Ok(_) | Err(StoreError::NotFound) => None,
            Err(e) => return crate::http::error::ApiError::from(e).into_response(),
        },
        None => None,
    };
    super::socket::limit_frames(ws, MAX_FRAME).on_upgrade(move |socket| handle(state, socket, pairing))
}

async fn handle(state: AppState, mut socket: WebSocket, pairing: Option<BrowserPairing>) {
    let Some(pairing) = pairing else {
        let refused = ServerToKiosk::Refused { reason: Refusal::NotPaired };
        let _ = socket.send(Message::Text(protocol::encode(&refused).into())).await;
        let _ = socket.close().await;
        return;
    };
    let terminal_id = pairing.terminal_id.clone();
    let (out_tx, out_rx) = mpsc::channel::<ServerToKiosk>(CONNECTION_QUEUE);
    let (signal_tx, mut signals) = mpsc::channel::<KioskSignal>(8);
    let kiosk_id = state.hub.kiosk_connected(&terminal_id, signal_tx);
    let mut changes = state.topups.subscribe();
    let mut kiosk = Kiosk::new(state.clone(), terminal_id.clone(), pairing.pairing_id, out_tx);
    let mut connection = Connection::new(socket, out_rx, MAX_FRAME, state.draining.clone());
    kiosk.send_view().await;
    loop {
        tokio::select! {
            text = connection.next_text() => {
                let Some(text) = text else { break };
                match protocol::decode::<KioskToServer>(&text) {
                    Ok(message) => on_message(&mut kiosk, message).await,
                    Err(e) => {
                        tracing::warn!(error = %crate::util::ErrorChain(&e), "malformed kiosk frame");
                        kiosk.refuse(Refusal::BadRequest);
                    }
                }
            }
            Some(signal) = signals.recv() => match signal {
                KioskSignal::CardPresent => kiosk.card_present().await,
                KioskSignal::CardRemoved | KioskSignal::Changed => kiosk.send_view().await,
            },
            change = changes.recv() => match change {
                Ok(change) => kiosk.on_change(change).await,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if let Some(id) = kiosk.following() {
                        kiosk.announce_current(&id).await;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    drop(connection);
    state.hub.kiosk_disconnected(kiosk_id);
}

async fn on_message(kiosk: &mut Kiosk, message: KioskToServer) {
    match message {
        KioskToServer::Arm => kiosk.arm().await,
        KioskToServer::ReadBankCard => kiosk.read_bank_card().await,
        KioskToServer::StartBinding { phone, card_number } => kiosk.start_binding(phone, card_number).await,
        KioskToServer::ResendCode => kiosk.resend_code().await,
        KioskToServer::ConfirmCode { code } => kiosk.confirm_code(code).await,
        KioskToServer::TopUp { amount_minor } => kiosk.top_up(amount_minor).await,
        KioskToServer::Cancel => kiosk.cancel(),
        KioskToServer::DemoTap { card } => kiosk.demo(CommandBody::SimulateTap { card }).await,
        KioskToServer::DemoRemove => kiosk.demo(CommandBody::SimulateRemove).await,
    }
}
