//! The connection to the server: dial out, authenticate, serve commands, redial on loss.
//!
//! ```text
//! agent                                   server (/ws/agent)
//!   ──── WebSocket (wss when https) ────►
//!   ◄─── Challenge{protocol_version, nonce}
//!   ──── Hello{terminal_id, signature over nonce, backend, policy} ─►
//!   ◄─── Welcome | Refused{reason}
//!   ──── Event(Readers), Event(CardPresent)…  (snapshot)
//!   ◄─── Command(SignedCommand) … ──── Reply(SignedReply), Event(…) …
//! ```
//!
//! Every command is bound to the session of its connection (derived from the challenge nonce):
//! the [`CommandVerifier`], one for the process, accepts only the current connection's session,
//! and remembers nonces, so a command replayed across a reconnect is refused. Before answering a
//! challenge the session is recorded in the state directory ([`SessionLog`]), and a challenge
//! whose session was ever joined is not answered: a restarted agent, which knows no nonces, never
//! joins a session whose commands an earlier process accepted. Commands run
//! one at a time, in arrival order, on a per-connection executor task; the frame loop keeps
//! reading (pings, more commands, card events) while a batch runs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::anyhow;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use protocol::agent::{
    AgentToServer, Command, CommandBody, ConnectRefusal, ReaderEvent, ReaderInfo, Reply, ServerToAgent, SignedReply,
};
use protocol::envelope::CommandVerifier;
use protocol::PROTOCOL_VERSION;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::backend::{BackendEvent, ReaderBackend, ReaderHandle, ReaderState, ReaderStatus};
use crate::backoff::Backoff;
use crate::config::AgentConfig;
use crate::sessions::{JoinError, SessionLog};

/// Run the agent until `shutdown` completes: connect, serve, reconnect with backoff.
///
/// Returns an error only when retrying cannot help (the server revoked or does not know this
/// terminal, or the reader thread cannot start).
pub async fn run(
    config: AgentConfig,
    backend: Box<dyn ReaderBackend>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (reader, events) = ReaderHandle::spawn(backend)?;
    run_with_reader(config, reader, events, shutdown).await
}

/// [`run`] on a reader thread that is already running (so that other tasks, such as the
/// `--console`, can hold a [`ReaderHandle`] too).
pub async fn run_with_reader(
    config: AgentConfig,
    reader: ReaderHandle,
    mut events: mpsc::UnboundedReceiver<BackendEvent>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let mut verifier = CommandVerifier::new(config.server_key, config.terminal_id.clone());
    let mut sessions = SessionLog::load(&config.state_dir, crate::now_ms())?;
    let mut backoff = Backoff::new(config.connection.backoff_initial, config.connection.backoff_max);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut events_open = true;

    loop {
        let session = Session {
            config: &config,
            reader: &reader,
            events: &mut events,
            events_open: &mut events_open,
            verifier: &mut verifier,
            backoff: &mut backoff,
        };
        let end = session.run(shutdown.as_mut(), &mut sessions).await;
        verifier.end_session();
        if let Err(error) = sessions.end_open_sessions(crate::now_ms()) {
            tracing::error!(error = %format!("{error:#}"), "cannot record the end of the connection's session");
        }
        match end {
            End::Shutdown => {
                tracing::info!("agent stopped");
                return Ok(());
            }
            End::Fatal(error) => {
                tracing::error!(error = %format!("{error:#}"), "the server refused this terminal");
                return Err(error);
            }
            End::Lost(error) => {
                tracing::warn!(error = %format!("{error:#}"), "not connected to the server");
            }
        }

        let delay = backoff.next_delay();
        tracing::info!(delay_ms = delay.as_millis() as u64, "reconnecting");
        let wake = Instant::now() + delay;
        loop {
            tokio::select! {
                () = shutdown.as_mut() => {
                    tracing::info!("agent stopped");
                    return Ok(());
                }
                () = sleep_until(wake) => break,
                // Events while offline are dropped: the next connection starts with a snapshot.
                event = events.recv(), if events_open => {
                    if event.is_none() {
                        events_open = false;
                    }
                }
            }
        }
    }
}

/// How one connection ended.
enum End {
    /// `shutdown` completed.
    Shutdown,
    /// Worth redialling after a backoff delay.
    Lost(anyhow::Error),
    /// Retrying cannot help.
    Fatal(anyhow::Error),
}

struct Session<'a> {
    config: &'a Arc<AgentConfig>,
    reader: &'a ReaderHandle,
    events: &'a mut mpsc::UnboundedReceiver<BackendEvent>,
    events_open: &'a mut bool,
    verifier: &'a mut CommandVerifier,
    backoff: &'a mut Backoff,
}

impl Session<'_> {
    async fn run<F: Future<Output = ()>>(self, mut shutdown: Pin<&mut F>, sessions: &mut SessionLog) -> End {
        let url = self.config.agent_socket_url();
        tracing::info!(server = %url, "connecting");
        let connect = timeout(self.config.connection.handshake_timeout, tokio_tungstenite::connect_async_with_config(
            url.as_str(),
            None,
            // Commands and replies are small request/response frames: never let Nagle hold them.
            true,
        ));
        let mut socket = tokio::select! {
            () = shutdown.as_mut() => return End::Shutdown,
            connected = connect => match connected {
                Err(_) => return End::Lost(anyhow!("connecting to {url} timed out")),
                Ok(Err(error)) => return End::Lost(anyhow!("cannot connect to {url}: {error}")),
                Ok(Ok((socket, _response))) => socket,
            },
        };

        let welcome = tokio::select! {
            () = shutdown.as_mut() => return End::Shutdown,
            welcome = handshake(self.config, self.reader.backend_name(), &mut socket, sessions) => welcome,
        };
        let (terminal_name, session) = match welcome {
            Ok(welcomed) => welcomed,
            Err(end) => return end,
        };
        self.verifier.begin_session(session);
        self.backoff.reset();
        tracing::info!(terminal_id = %self.config.terminal_id, %terminal_name, "connected to the server");

        serve(self, &mut socket, shutdown).await
    }
}

/// Challenge → Hello → Welcome. Returns the terminal name the server knows us by and the
/// connection's session, which is recorded in `sessions` before the hello leaves.
async fn handshake<S>(
    config: &AgentConfig,
    backend_name: &str,
    socket: &mut S,
    sessions: &mut SessionLog,
) -> Result<(String, protocol::HexBytes), End>
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    let wait = config.connection.handshake_timeout;
    let nonce = match next_message(socket, wait, "challenge").await? {
        ServerToAgent::Challenge { protocol_version, nonce, server_time_ms }
            if protocol_version == PROTOCOL_VERSION =>
        {
            warn_on_clock_skew(server_time_ms);
            nonce
        }
        ServerToAgent::Challenge { protocol_version, .. } => {
            return Err(End::Lost(anyhow!(
                "the server speaks protocol version {protocol_version} and this agent version \
                 {PROTOCOL_VERSION}; update the agent"
            )))
        }
        ServerToAgent::Refused { reason } => return Err(refused(reason, config)),
        _ => return Err(End::Lost(anyhow!("the server did not start with a challenge"))),
    };
    if nonce.as_slice().len() < protocol::envelope::MIN_NONCE_LEN {
        return Err(End::Lost(anyhow!("the server's challenge nonce is too short; not answering")));
    }
    let session = protocol::envelope::session_id(nonce.as_slice(), &config.terminal_id);
    match sessions.join(session.as_slice(), crate::now_ms()) {
        Ok(()) => {}
        Err(JoinError::AlreadyJoined) => {
            return Err(End::Lost(anyhow!(
                "the server sent a challenge this terminal answered before (a replayed challenge?); not answering it"
            )))
        }
        Err(JoinError::Io(error)) => return Err(End::Lost(error.context("cannot record the connection's session"))),
    }

    let hello = AgentToServer::Hello {
        protocol_version: PROTOCOL_VERSION,
        terminal_id: config.terminal_id.clone(),
        signature: protocol::envelope::sign_challenge(nonce.as_slice(), &config.terminal_id, &config.signing_key),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        backend: backend_name.to_string(),
        policy: config.policy.report(),
    };
    send(socket, &hello).await.map_err(End::Lost)?;

    match next_message(socket, wait, "welcome").await? {
        ServerToAgent::Welcome { terminal_id, terminal_name } if terminal_id == config.terminal_id => {
            Ok((terminal_name, session))
        }
        ServerToAgent::Welcome { .. } => {
            Err(End::Lost(anyhow!("the server welcomed another terminal id; not using this connection")))
        }
        ServerToAgent::Refused { reason } => Err(refused(reason, config)),
        _ => Err(End::Lost(anyhow!("the server answered the hello with an unexpected frame"))),
    }
}

/// Commands are checked against this PC's clock: a clock far off the server's makes every command
/// look expired (or not yet valid), which is worth saying once per connection.
fn warn_on_clock_skew(server_time_ms: i64) {
    let skew_ms = crate::now_ms() - server_time_ms;
    if skew_ms.abs() > protocol::envelope::CLOCK_SKEW_MS / 2 {
        tracing::warn!(skew_ms, "this PC's clock differs from the server's; signed commands may be refused as expired");
    }
}

/// The next well-formed server message within `wait`; malformed frames are logged and skipped.
async fn next_message<S>(socket: &mut S, wait: std::time::Duration, expecting: &str) -> Result<ServerToAgent, End>
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let deadline = Instant::now() + wait;
    loop {
        let frame = match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return Err(End::Lost(anyhow!("no {expecting} from the server in {wait:?}"))),
            Ok(frame) => frame,
        };
        match frame {
            None | Some(Ok(Message::Close(_))) => {
                return Err(End::Lost(anyhow!("the server closed the connection before the {expecting}")))
            }
            Some(Err(error)) => return Err(End::Lost(anyhow!("connection failed: {error}"))),
            Some(Ok(Message::Text(text))) => match protocol::decode::<ServerToAgent>(text.as_str()) {
                Ok(message) => return Ok(message),
                Err(error) => tracing::warn!(%error, "dropped a malformed frame"),
            },
            Some(Ok(Message::Binary(_))) => tracing::warn!("dropped a binary frame"),
            Some(Ok(_)) => {}
        }
    }
}

fn refused(reason: ConnectRefusal, config: &AgentConfig) -> End {
    match reason {
        ConnectRefusal::TerminalRevoked => End::Fatal(anyhow!(
            "the server has revoked terminal {}; ask an administrator, then enrol again \
             (cardbridge-agent enrol --force)",
            config.terminal_id
        )),
        ConnectRefusal::UnknownTerminal => End::Fatal(anyhow!(
            "the server does not know terminal {}; enrol this agent again (cardbridge-agent enrol --force)",
            config.terminal_id
        )),
        ConnectRefusal::VirtualReaderRefused => End::Fatal(anyhow!(
            "the server is not in demo mode and refuses the virtual reader; run with --reader pcsc"
        )),
        other => End::Lost(anyhow!("the server refused the connection ({})", refusal_code(other))),
    }
}

fn refusal_code(reason: ConnectRefusal) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{reason:?}"))
}

// WebSocket errors are formatted into the message rather than chained: tungstenite's `Display`
// already includes its source, and `{:#}` would print it twice.
async fn send<S>(socket: &mut S, message: &AgentToServer) -> anyhow::Result<()>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    socket
        .send(Message::text(protocol::encode(message)))
        .await
        .map_err(|error| anyhow!("cannot send to the server: {error}"))
}

/// Aborts the task when dropped, so no executor outlives its connection.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// After the welcome: snapshot, then frames, replies and events until the connection ends.
async fn serve<S, F>(session: Session<'_>, socket: &mut S, mut shutdown: Pin<&mut F>) -> End
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
    F: Future<Output = ()>,
{
    let Session { config, reader, events, events_open, verifier, .. } = session;

    // Events queued while offline are stale: the snapshot below supersedes them.
    while events.try_recv().is_ok() {}
    if let Err(error) = send_snapshot(config, reader, socket).await {
        return End::Lost(error);
    }

    let (commands, queue) = mpsc::unbounded_channel::<Command>();
    let (replies, mut outbox) = mpsc::unbounded_channel::<SignedReply>();
    let _executor = AbortOnDrop(tokio::spawn(executor(config.clone(), reader.clone(), queue, replies)));

    let settings = &config.connection;
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval_at(Instant::now() + settings.ping_interval, settings.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            () = shutdown.as_mut() => {
                let _ = socket.send(Message::Close(None)).await;
                return End::Shutdown;
            }
            frame = socket.next() => {
                last_heard = Instant::now();
                let frame = match frame {
                    None => return End::Lost(anyhow!("the server closed the connection")),
                    Some(Err(error)) => return End::Lost(anyhow!("connection failed: {error}")),
                    Some(Ok(frame)) => frame,
                };
                match frame {
                    Message::Text(text) => match protocol::decode::<ServerToAgent>(text.as_str()) {
                        Ok(ServerToAgent::Command(signed)) => {
                            match verifier.verify(&signed, crate::now_ms()) {
                                Ok(command) => {
                                    tracing::info!(command_id = %command.command_id, op = op_name(&command.body), "command accepted");
                                    let _ = commands.send(command);
                                }
                                Err(reason) => tracing::warn!(%reason, "dropped a command that does not verify"),
                            }
                        }
                        Ok(ServerToAgent::Refused { reason }) => return refused(reason, config),
                        Ok(ServerToAgent::Challenge { .. } | ServerToAgent::Welcome { .. }) => {
                            tracing::warn!("dropped a handshake frame on an established connection");
                        }
                        Err(error) => tracing::warn!(%error, "dropped a malformed frame"),
                    },
                    Message::Binary(_) => tracing::warn!("dropped a binary frame"),
                    Message::Close(_) => return End::Lost(anyhow!("the server closed the connection")),
                    // Pings are answered by tungstenite; pongs only prove the server is there.
                    _ => {}
                }
            }
            Some(reply) = outbox.recv() => {
                if let Err(error) = send(socket, &AgentToServer::Reply(reply)).await {
                    return End::Lost(error);
                }
            }
            event = events.recv(), if *events_open => {
                let Some(event) = event else {
                    *events_open = false;
                    tracing::error!("the reader thread has stopped; no more card events");
                    continue;
                };
                for message in event_messages(config, event) {
                    if let Err(error) = send(socket, &message).await {
                        return End::Lost(error);
                    }
                    // While the server checks whether it may read the card, connect to it.
                    if let AgentToServer::Event(ReaderEvent::CardPresent { reader: name, .. }) = &message {
                        reader.card_arrived(name);
                    }
                }
            }
            _ = ping.tick() => {
                if let Err(error) = socket.send(Message::Ping(Default::default())).await {
                    return End::Lost(anyhow!("cannot ping the server: {error}"));
                }
            }
            () = sleep_until(last_heard + settings.idle_timeout) => {
                return End::Lost(anyhow!("nothing heard from the server for {:?}", settings.idle_timeout));
            }
        }
    }
}

/// Runs accepted commands one at a time and hands back their signed replies.
async fn executor(
    config: Arc<AgentConfig>,
    reader: ReaderHandle,
    mut queue: mpsc::UnboundedReceiver<Command>,
    replies: mpsc::UnboundedSender<SignedReply>,
) {
    while let Some(command) = queue.recv().await {
        let outcome = crate::execute::execute(&reader, &config.policy, &command).await;
        match &outcome {
            protocol::agent::Outcome::Failed { error, message } => {
                tracing::info!(command_id = %command.command_id, ?error, %message, "command failed");
            }
            _ => tracing::info!(command_id = %command.command_id, "command done"),
        }
        let reply = Reply { terminal_id: config.terminal_id.clone(), command_id: command.command_id, outcome };
        if replies.send(SignedReply::sign(&reply, &config.signing_key)).is_err() {
            break;
        }
    }
}

fn op_name(body: &CommandBody) -> &'static str {
    match body {
        CommandBody::Transmit { .. } => "transmit",
        CommandBody::SimulateTap { .. } => "simulate_tap",
        CommandBody::SimulateRemove => "simulate_remove",
    }
}

/// The reader list and any present cards, as the first frames after the welcome.
async fn send_snapshot<S>(config: &AgentConfig, reader: &ReaderHandle, socket: &mut S) -> anyhow::Result<()>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    let readers = match reader.readers().await {
        Ok(readers) => readers,
        Err(error) => {
            tracing::error!(%error, "cannot list the readers");
            Vec::new()
        }
    };
    let readers: Vec<ReaderStatus> = readers.into_iter().filter(|r| config.policy.reader_allowed(&r.name)).collect();
    send(socket, &AgentToServer::Event(ReaderEvent::Readers { readers: reader_infos(&readers) })).await?;
    for status in readers {
        if let ReaderState::CardPresent { atr } = status.state {
            send(socket, &AgentToServer::Event(ReaderEvent::CardPresent { reader: status.name, atr: atr.into() }))
                .await?;
        }
    }
    Ok(())
}

fn reader_infos(readers: &[ReaderStatus]) -> Vec<ReaderInfo> {
    readers
        .iter()
        .map(|r| ReaderInfo {
            name: r.name.clone(),
            state: match r.state {
                ReaderState::Empty => protocol::agent::ReaderState::Empty,
                ReaderState::CardPresent { .. } => protocol::agent::ReaderState::CardPresent,
                ReaderState::Unavailable => protocol::agent::ReaderState::Unavailable,
            },
        })
        .collect()
}

/// What the server is told about a backend event; nothing about readers the policy excludes.
fn event_messages(config: &AgentConfig, event: BackendEvent) -> Vec<AgentToServer> {
    let policy = &config.policy;
    let event = match event {
        BackendEvent::CardPresent { reader, atr } if policy.reader_allowed(&reader) => {
            tracing::info!(%reader, "card present");
            ReaderEvent::CardPresent { reader, atr: atr.into() }
        }
        BackendEvent::CardRemoved { reader } if policy.reader_allowed(&reader) => {
            tracing::info!(%reader, "card removed");
            ReaderEvent::CardRemoved { reader }
        }
        BackendEvent::ReadersChanged(readers) => {
            let readers: Vec<ReaderStatus> = readers.into_iter().filter(|r| policy.reader_allowed(&r.name)).collect();
            ReaderEvent::Readers { readers: reader_infos(&readers) }
        }
        _ => return Vec::new(),
    };
    vec![AgentToServer::Event(event)]
}
