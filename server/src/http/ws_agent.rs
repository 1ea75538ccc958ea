//! `/ws/agent`: the bridge agents' connections. Challenge → signed Hello → Welcome; then reader
//! events up and signed commands down (bound to the connection's session), replies correlated by
//! the hub. Outside demo mode a virtual reader is refused at hello; unsolicited replies are audited.
//! Every frame (the agent's heartbeat pings included) marks the agent seen; an agent silent for
//! `[monitoring] agent_offline_after_ms` is offline and its connection is closed.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use protocol::agent::{AgentToServer, ConnectRefusal, ReaderEvent, ServerToAgent};
use protocol::cluster::EventKind;
use protocol::PROTOCOL_VERSION;
use tokio::sync::mpsc;

use super::socket::{self, Connection, Incoming};
use crate::hub::{AgentHello, KioskSignal, PresentCard, ReplyRefused, CONNECTION_QUEUE};
use crate::state::AppState;
use crate::store::StoreError;

/// Largest frame an agent may send (a batch of APDU responses fits many times over).
const MAX_FRAME: usize = 256 * 1024;
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest claimed command id copied into the audit log.
const AUDIT_ID_LEN: usize = 80;

pub fn router() -> Router<AppState> {
    Router::new().route("/ws/agent", get(upgrade))
}

#[utoipa::path(
    get,
    path = "/ws/agent",
    operation_id = "agent_socket",
    tag = "sockets",
    summary = "The bridge agents' WebSocket",
    description = "WebSocket upgrade. Frames are `protocol::agent` (`docs/protocol.md`). Authenticated inside the socket: the server sends a challenge, the agent answers with a hello signed by its enrolled Ed25519 key, and every command down is signed by the server's key and bound to the connection. OpenAPI has no security scheme for that; `x-cardbridge-signature` says the same.",
    extensions(("x-cardbridge-signature" = json!({"algorithm": "Ed25519", "key": "the terminal's enrolled public key", "signed": "the challenge nonce and the terminal id (the hello)"}))),
    responses(
        (status = 101, description = "Switching protocols: the socket is open"),
        (status = 400, description = "Not a WebSocket handshake (axum's plain-text rejection)", content_type = "text/plain", body = String),
    ),
)]
async fn upgrade(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    socket::limit_frames(ws, MAX_FRAME).on_upgrade(move |socket| handle(state, socket))
}

async fn send(socket: &mut WebSocket, message: &ServerToAgent) -> Result<(), axum::Error> {
    socket.send(Message::Text(protocol::encode(message).into())).await
}

async fn refuse(mut socket: WebSocket, reason: ConnectRefusal) {
    tracing::warn!(?reason, "agent connection refused");
    let _ = send(&mut socket, &ServerToAgent::Refused { reason }).await;
    let _ = socket.close().await;
}

async fn handle(state: AppState, mut socket: WebSocket) {
    let nonce = protocol::envelope::fresh_nonce();
    let challenge = ServerToAgent::Challenge { protocol_version: PROTOCOL_VERSION, nonce: nonce.clone(), server_time_ms: state.now_ms() };
    if send(&mut socket, &challenge).await.is_err() {
        return;
    }
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, socket.next()).await {
        Ok(frame) => match socket::judge(frame, MAX_FRAME) {
            Incoming::Text(text) => protocol::decode::<AgentToServer>(&text),
            Incoming::TooBig { size, readable } => return socket::close_too_big(&mut socket, MAX_FRAME, size, readable).await,
            Incoming::Other | Incoming::End => return,
        },
        Err(_) => return,
    };
    let Ok(AgentToServer::Hello { protocol_version, terminal_id, signature, agent_version, backend, policy }) = hello else {
        return refuse(socket, ConnectRefusal::Malformed).await;
    };
    if protocol_version != PROTOCOL_VERSION {
        return refuse(socket, ConnectRefusal::UnsupportedVersion).await;
    }
    let terminal = match state.store.terminal(&terminal_id).await {
        Ok(t) => t,
        Err(StoreError::NotFound) => return refuse(socket, ConnectRefusal::UnknownTerminal).await,
        Err(e) => {
            tracing::error!(error = %crate::util::ErrorChain(&e), "loading a terminal for an agent");
            return;
        }
    };
    if terminal.revoked_at.is_some() {
        return refuse(socket, ConnectRefusal::TerminalRevoked).await;
    }
    let Some(key) = terminal.public_key.as_deref().and_then(|k| protocol::envelope::verifying_key(k).ok()) else {
        return refuse(socket, ConnectRefusal::UnknownTerminal).await;
    };
    if protocol::envelope::verify_challenge(&nonce.0, &terminal_id, &signature, &key).is_err() {
        return refuse(socket, ConnectRefusal::BadSignature).await;
    }
    // Authenticated from here on: refusals below are worth an audit entry.
    if backend == "virtual" && !state.config.demo {
        if let Err(e) = state.store.audit("agent", "agent.virtual_reader_refused", &terminal_id, &agent_version).await {
            tracing::error!(error = %crate::util::ErrorChain(&e), "auditing a refused virtual reader");
        }
        return refuse(socket, ConnectRefusal::VirtualReaderRefused).await;
    }
    // Registered before the welcome leaves: once an agent is welcomed it is online. Commands
    // queued meanwhile wait in the channel until the writer starts, after the welcome.
    let (tx, rx) = mpsc::channel::<ServerToAgent>(CONNECTION_QUEUE);
    let session = protocol::envelope::session_id(&nonce.0, &terminal_id);
    let hello = AgentHello { backend: backend.clone(), agent_version: agent_version.clone(), policy };
    let conn_id = state.hub.agent_connected(&terminal_id, key, session, tx, hello);
    state.router.agent_arrived(&terminal_id).await;
    let welcome = ServerToAgent::Welcome { terminal_id: terminal_id.clone(), terminal_name: terminal.name.clone() };
    if send(&mut socket, &welcome).await.is_err() {
        state.hub.agent_disconnected(&terminal_id, conn_id);
        state.router.agent_left(&terminal_id).await;
        return;
    }
    tracing::info!(terminal_id, %agent_version, %backend, "agent connected");
    state.monitor.poke();
    crate::reader::refresh_pages(&state, &terminal_id).await;

    let idle = Duration::from_millis(state.config.monitoring.agent_offline_after_ms);
    let (hub, seen_id) = (state.hub.clone(), terminal_id.clone());
    let mut connection = Connection::new(socket, rx, MAX_FRAME, state.draining.clone()).with_heartbeat(idle, move || hub.agent_seen(&seen_id, conn_id));
    while let Some(text) = connection.next_text().await {
        match protocol::decode::<AgentToServer>(&text) {
            Ok(AgentToServer::Event(event)) => on_event(&state, &terminal_id, conn_id, event).await,
            Ok(AgentToServer::Reply(reply)) => match state.hub.reply_received(&terminal_id, conn_id, reply) {
                Ok(()) => {}
                Err(ReplyRefused::Unsolicited { command_id, signature_valid }) => {
                    tracing::warn!(terminal_id, signature_valid, "unsolicited agent reply refused");
                    let claimed: String = command_id.chars().take(AUDIT_ID_LEN).collect();
                    let detail = format!("command_id={claimed:?} signature={}", if signature_valid { "valid" } else { "invalid" });
                    if let Err(e) = state.store.audit("agent", "agent.unsolicited_reply", &terminal_id, &detail).await {
                        tracing::error!(error = %crate::util::ErrorChain(&e), "auditing an unsolicited reply");
                    }
                }
                Err(e) => tracing::warn!(terminal_id, error = %crate::util::ErrorChain(&e), "agent reply dropped"),
            },
            Ok(AgentToServer::Hello { .. }) => tracing::warn!(terminal_id, "unexpected second hello ignored"),
            Err(e) => tracing::warn!(terminal_id, error = %crate::util::ErrorChain(&e), "malformed agent frame dropped"),
        }
    }
    if connection.went_silent() {
        tracing::warn!(terminal_id, idle_ms = idle.as_millis() as u64, "agent silent past the heartbeat window; offline, connection closed");
    }
    drop(connection);
    state.hub.agent_disconnected(&terminal_id, conn_id);
    state.router.agent_left(&terminal_id).await;
    tracing::info!(terminal_id, "agent disconnected");
    state.monitor.poke();
    crate::reader::refresh_pages(&state, &terminal_id).await;
}

async fn on_event(state: &AppState, terminal_id: &str, conn_id: u64, event: ReaderEvent) {
    match event {
        ReaderEvent::Readers { readers } => state.hub.set_readers(terminal_id, conn_id, readers),
        ReaderEvent::CardPresent { reader, atr } => {
            tracing::info!(terminal_id, %reader, "card present");
            state.hub.card_present(terminal_id, conn_id, PresentCard { reader, atr: atr.0 });
            state.hub.signal_kiosks(terminal_id, KioskSignal::CardPresent);
            // Read first: the pages' refresh (database queries, and the browser re-rendering)
            // would compete with the read; the read task refreshes them when it is done.
            let reading = crate::reader::start_read_if_armed(state, terminal_id);
            // Pages and kiosks of this terminal on other instances may be waiting for it too.
            state.router.announce(EventKind::CardPresent { terminal_id: terminal_id.into() }).await;
            if reading {
                return;
            }
        }
        ReaderEvent::CardRemoved { reader } => {
            tracing::info!(terminal_id, %reader, "card removed");
            state.hub.card_removed(terminal_id, conn_id, &reader);
            state.hub.signal_kiosks(terminal_id, KioskSignal::CardRemoved);
            state.router.announce(EventKind::CardRemoved { terminal_id: terminal_id.into() }).await;
        }
    }
    crate::reader::refresh_pages(state, terminal_id).await;
}
