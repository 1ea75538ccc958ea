//! Integration tests of the agent, driven in-process against a test peer that speaks the real
//! protocol: a WebSocket server (tokio-tungstenite) signing commands with a test server key, and a
//! one-request HTTP responder for enrolment and pairing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cardbridge_agent::backend::{GroupResponses, ReaderState, ReaderStatus, VIRTUAL_READER_NAME};
use cardbridge_agent::{
    AgentConfig, BackendError, BackendEvent, ConnectionSettings, EventSink, LocalPolicy, ReaderBackend,
};
use ed25519_dalek::{SigningKey, VerifyingKey};
use futures_util::{SinkExt, StreamExt};
use protocol::agent::{
    AgentError, AgentToServer, ApduBatch, ApduGroup, Command, CommandBody, ConnectRefusal, GroupMode, Outcome,
    ReaderEvent, Reply, ServerToAgent, SignedCommand,
};
use protocol::envelope::{fresh_nonce, generate_key, session_id, verify_challenge};
use protocol::{HexBytes, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Every wait in these tests has this deadline: a stuck agent fails the test instead of hanging it.
const DEADLINE: Duration = Duration::from_secs(10);
const TERMINAL_ID: &str = "term-test-1";
const TEST_READER: &str = "Test Reader";
const TEST_ATR: [u8; 4] = [0x3B, 0x02, 0x14, 0x50];

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

// ---------------------------------------------------------------------------------------------
// A reader backend that records what reaches the "card".

#[derive(Clone, Default)]
struct CardLog {
    batches: Arc<AtomicUsize>,
    apdus: Arc<Mutex<Vec<Vec<u8>>>>,
    sink: Arc<Mutex<Option<EventSink>>>,
}

impl CardLog {
    fn n_batches(&self) -> usize {
        self.batches.load(Ordering::SeqCst)
    }

    fn push_event(&self, event: BackendEvent) {
        self.sink.lock().unwrap().as_ref().expect("backend attached").send(event);
    }
}

/// One reader with a card that answers every APDU with its INS byte and `9000`.
struct RecordingBackend {
    log: CardLog,
}

impl ReaderBackend for RecordingBackend {
    fn name(&self) -> &'static str {
        "recording"
    }

    fn attach(&mut self, events: EventSink) {
        *self.log.sink.lock().unwrap() = Some(events);
    }

    fn readers(&mut self) -> Vec<ReaderStatus> {
        vec![ReaderStatus { name: TEST_READER.into(), state: ReaderState::CardPresent { atr: TEST_ATR.to_vec() } }]
    }

    fn transmit(
        &mut self,
        reader: Option<&str>,
        batch: &card::batch::Batch,
    ) -> Result<(String, GroupResponses), BackendError> {
        if let Some(reader) = reader {
            if reader != TEST_READER {
                return Err(BackendError::NoReader(reader.into()));
            }
        }
        self.log.batches.fetch_add(1, Ordering::SeqCst);
        let groups = batch
            .groups
            .iter()
            .map(|group| {
                group
                    .apdus
                    .iter()
                    .map(|apdu| {
                        self.log.apdus.lock().unwrap().push(apdu.clone());
                        vec![apdu[1], 0x90, 0x00]
                    })
                    .collect()
            })
            .collect();
        Ok((TEST_READER.into(), groups))
    }
}

// ---------------------------------------------------------------------------------------------
// The agent under test.

struct Agent {
    public_key: VerifyingKey,
    log: CardLog,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
    /// The state directory, when this agent owns it (a restart test keeps it itself).
    _state_dir: Option<TempDir>,
}

impl Agent {
    async fn stopped(self) -> anyhow::Result<()> {
        timeout(DEADLINE, self.task).await.expect("the agent stops").expect("the agent task does not panic")
    }

    async fn shut_down(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().expect("running").send(());
        self.stopped().await
    }
}

/// A fresh, existing state directory.
fn state_dir() -> TempDir {
    let dir = TempDir::new();
    std::fs::create_dir_all(&dir.0).unwrap();
    dir
}

fn config_for(peer: &Peer, policy: LocalPolicy, terminal_key: &SigningKey, state_dir: &std::path::Path) -> AgentConfig {
    AgentConfig {
        server_url: format!("http://{}", peer.address).parse().unwrap(),
        terminal_id: TERMINAL_ID.into(),
        signing_key: terminal_key.clone(),
        server_key: peer.server_key.verifying_key(),
        policy,
        connection: ConnectionSettings {
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(200),
            handshake_timeout: Duration::from_secs(5),
            ..ConnectionSettings::default()
        },
        state_dir: state_dir.to_path_buf(),
    }
}

fn start_agent(peer: &Peer, policy: LocalPolicy) -> Agent {
    let log = CardLog::default();
    let backend = Box::new(RecordingBackend { log: log.clone() });
    start_agent_with(peer, policy, backend, log, |_| {})
}

fn start_agent_with(
    peer: &Peer,
    policy: LocalPolicy,
    backend: Box<dyn ReaderBackend>,
    log: CardLog,
    tune: impl FnOnce(&mut ConnectionSettings),
) -> Agent {
    let dir = state_dir();
    let mut agent = start_agent_in(peer, policy, &generate_key(), &dir.0, backend, log, tune);
    agent._state_dir = Some(dir);
    agent
}

/// An agent with the given terminal key and state directory (to start it again after a stop).
fn start_agent_in(
    peer: &Peer,
    policy: LocalPolicy,
    terminal_key: &SigningKey,
    state_dir: &std::path::Path,
    backend: Box<dyn ReaderBackend>,
    log: CardLog,
    tune: impl FnOnce(&mut ConnectionSettings),
) -> Agent {
    let mut config = config_for(peer, policy, terminal_key, state_dir);
    tune(&mut config.connection);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(cardbridge_agent::run(config, backend, async move {
        let _ = stopped.await;
    }));
    Agent { public_key: terminal_key.verifying_key(), log, stop: Some(stop), task, _state_dir: None }
}

/// A recording agent with the given terminal key and state directory.
fn start_recording_agent_in(peer: &Peer, terminal_key: &SigningKey, state_dir: &std::path::Path) -> Agent {
    let log = CardLog::default();
    let backend = Box::new(RecordingBackend { log: log.clone() });
    start_agent_in(peer, LocalPolicy::default(), terminal_key, state_dir, backend, log, |_| {})
}

// ---------------------------------------------------------------------------------------------
// The test server's side of /ws/agent.

struct Peer {
    listener: TcpListener,
    address: std::net::SocketAddr,
    server_key: SigningKey,
    /// The session of the connection accepted last: [`Peer::command`] binds commands to it.
    session: Mutex<HexBytes>,
}

impl Peer {
    async fn new() -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        Peer { listener, address, server_key: generate_key(), session: Mutex::new(HexBytes(Vec::new())) }
    }

    /// Accept the agent's next connection and send the challenge; returns it with the agent's hello.
    async fn accept_hello(&self) -> (Connection, AgentToServer, HexBytes) {
        self.accept_hello_with(fresh_nonce()).await
    }

    /// [`Peer::accept_hello`] with a challenge nonce of the test's choosing.
    async fn accept_hello_with(&self, nonce: HexBytes) -> (Connection, AgentToServer, HexBytes) {
        let mut connection = self.accept_raw().await;
        *self.session.lock().unwrap() = session_id(nonce.as_slice(), TERMINAL_ID);
        connection
            .send(&ServerToAgent::Challenge {
                protocol_version: PROTOCOL_VERSION,
                nonce: nonce.clone(),
                server_time_ms: now_ms(),
            })
            .await;
        let hello = connection.next_message().await;
        (connection, hello, nonce)
    }

    /// Accept and authenticate the agent's next connection, checking its hello signature.
    async fn accept(&self, agent: &Agent) -> Connection {
        self.accept_with(agent, fresh_nonce()).await
    }

    /// [`Peer::accept`] with a challenge nonce of the test's choosing.
    async fn accept_with(&self, agent: &Agent, nonce: HexBytes) -> Connection {
        let (mut connection, hello, nonce) = self.accept_hello_with(nonce).await;
        let AgentToServer::Hello { terminal_id, signature, protocol_version, .. } = hello else {
            panic!("expected a hello, got {hello:?}");
        };
        assert_eq!(protocol_version, PROTOCOL_VERSION);
        assert_eq!(terminal_id, TERMINAL_ID);
        verify_challenge(nonce.as_slice(), TERMINAL_ID, &signature, &agent.public_key).expect("hello signature");
        connection
            .send(&ServerToAgent::Welcome { terminal_id: TERMINAL_ID.into(), terminal_name: "Desk 1".into() })
            .await;
        connection
    }

    async fn accept_raw(&self) -> Connection {
        let (tcp, _) = timeout(DEADLINE, self.listener.accept()).await.expect("the agent connects").unwrap();
        let socket = tokio_tungstenite::accept_hdr_async(tcp, agent_path_only).await.unwrap();
        Connection { socket, server_key: self.server_key.clone() }
    }

    /// A command addressed to this test's terminal on the connection accepted last, valid for 30 s
    /// from now.
    fn command(&self, body: CommandBody) -> Command {
        Command {
            v: PROTOCOL_VERSION,
            terminal_id: TERMINAL_ID.into(),
            session: self.session.lock().unwrap().clone(),
            command_id: format!("cmd-{}", hex::encode(fresh_nonce().0)),
            issued_at_ms: now_ms(),
            expires_at_ms: now_ms() + 30_000,
            nonce: fresh_nonce(),
            body,
        }
    }

    fn sign(&self, command: &Command) -> SignedCommand {
        SignedCommand::sign(command, &self.server_key)
    }
}

#[allow(clippy::result_large_err)] // the callback type is tungstenite's
fn agent_path_only(request: &Request, response: Response) -> Result<Response, ErrorResponse> {
    assert_eq!(request.uri().path(), "/ws/agent");
    Ok(response)
}

struct Connection {
    socket: WebSocketStream<TcpStream>,
    server_key: SigningKey,
}

impl Connection {
    async fn send(&mut self, message: &ServerToAgent) {
        self.socket.send(Message::text(protocol::encode(message))).await.unwrap();
    }

    async fn send_signed(&mut self, signed: &SignedCommand) {
        self.send(&ServerToAgent::Command(signed.clone())).await;
    }

    /// Sign and send; returns the command id.
    async fn send_command(&mut self, command: &Command) -> String {
        self.send_signed(&SignedCommand::sign(command, &self.server_key)).await;
        command.command_id.clone()
    }

    /// The next message from the agent, or `None` when it closed the connection.
    async fn try_next_message(&mut self) -> Option<AgentToServer> {
        loop {
            match timeout(DEADLINE, self.socket.next()).await.expect("a frame from the agent in time") {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
                Some(Ok(Message::Text(text))) => {
                    return Some(protocol::decode(text.as_str()).expect("the agent sends well-formed frames"))
                }
                Some(Ok(_)) => {}
            }
        }
    }

    async fn next_message(&mut self) -> AgentToServer {
        self.try_next_message().await.expect("the connection stays open")
    }

    /// The next reply, skipping events.
    async fn next_reply(&mut self, agent: &Agent) -> (String, Reply) {
        loop {
            if let AgentToServer::Reply(signed) = self.next_message().await {
                let command_id = signed.claimed_command_id().expect("a reply names its command");
                let reply = signed
                    .verify(&agent.public_key, TERMINAL_ID, &command_id)
                    .expect("the reply verifies with the agent key");
                return (command_id, reply);
            }
        }
    }

    /// The next event, skipping nothing.
    async fn next_event(&mut self) -> ReaderEvent {
        match self.next_message().await {
            AgentToServer::Event(event) => event,
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

fn batch(apdus: &[&str]) -> ApduBatch {
    ApduBatch {
        groups: vec![ApduGroup {
            mode: GroupMode::Sequence,
            apdus: apdus.iter().map(|a| HexBytes(hex::decode(a).unwrap())).collect(),
            when: vec![],
        }],
    }
}

fn select_ppse() -> CommandBody {
    CommandBody::Transmit { reader: None, batch: batch(&["00A404000E325041592E5359532E444446303100"]) }
}

// ---------------------------------------------------------------------------------------------
// Connection and handshake.

#[tokio::test]
async fn the_hello_is_signed_and_followed_by_a_reader_snapshot() {
    let peer = Peer::new().await;
    let policy = LocalPolicy { read_only: true, allowed_readers: vec![] };
    let agent = start_agent(&peer, policy);

    let (mut connection, hello, nonce) = peer.accept_hello().await;
    let AgentToServer::Hello { terminal_id, signature, backend, policy, agent_version, .. } = hello else {
        panic!("expected a hello");
    };
    assert_eq!(terminal_id, TERMINAL_ID);
    assert_eq!(backend, "recording");
    assert!(policy.read_only);
    assert!(!agent_version.is_empty());
    verify_challenge(nonce.as_slice(), TERMINAL_ID, &signature, &agent.public_key).unwrap();
    assert!(verify_challenge(nonce.as_slice(), "someone-else", &signature, &agent.public_key).is_err());

    connection.send(&ServerToAgent::Welcome { terminal_id: TERMINAL_ID.into(), terminal_name: "Desk".into() }).await;

    let ReaderEvent::Readers { readers } = connection.next_event().await else { panic!("readers first") };
    assert_eq!(readers.len(), 1);
    assert_eq!(readers[0].name, TEST_READER);
    assert_eq!(readers[0].state, protocol::agent::ReaderState::CardPresent);
    assert_eq!(
        connection.next_event().await,
        ReaderEvent::CardPresent { reader: TEST_READER.into(), atr: TEST_ATR.to_vec().into() }
    );
    agent.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_revoked_terminal_stops_the_agent_with_a_clear_error() {
    let peer = Peer::new().await;
    let agent = start_agent(&peer, LocalPolicy::default());

    let (mut connection, _hello, _) = peer.accept_hello().await;
    connection.send(&ServerToAgent::Refused { reason: ConnectRefusal::TerminalRevoked }).await;

    let error = agent.stopped().await.unwrap_err();
    assert!(format!("{error:#}").contains("revoked"), "{error:#}");
}

#[tokio::test]
async fn an_unknown_terminal_stops_the_agent() {
    let peer = Peer::new().await;
    let agent = start_agent(&peer, LocalPolicy::default());

    let (mut connection, _hello, _) = peer.accept_hello().await;
    connection.send(&ServerToAgent::Refused { reason: ConnectRefusal::UnknownTerminal }).await;

    let error = agent.stopped().await.unwrap_err();
    assert!(format!("{error:#}").contains("enrol"), "{error:#}");
}

#[tokio::test]
async fn a_refused_virtual_reader_stops_the_agent_with_a_clear_error() {
    let peer = Peer::new().await;
    let agent = start_agent(&peer, LocalPolicy::default());

    let (mut connection, _hello, _) = peer.accept_hello().await;
    connection.send(&ServerToAgent::Refused { reason: ConnectRefusal::VirtualReaderRefused }).await;

    let error = agent.stopped().await.unwrap_err();
    assert!(format!("{error:#}").contains("demo mode"), "{error:#}");
}

#[tokio::test]
async fn other_refusals_are_retried() {
    let peer = Peer::new().await;
    let agent = start_agent(&peer, LocalPolicy::default());

    let (mut first, _hello, _) = peer.accept_hello().await;
    first.send(&ServerToAgent::Refused { reason: ConnectRefusal::BadSignature }).await;
    drop(first);

    let mut second = peer.accept(&agent).await;
    assert!(matches!(second.next_event().await, ReaderEvent::Readers { .. }));
    agent.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_challenge_of_another_protocol_version_gets_no_hello() {
    let peer = Peer::new().await;
    let agent = start_agent(&peer, LocalPolicy::default());

    let mut first = peer.accept_raw().await;
    first
        .send(&ServerToAgent::Challenge {
            protocol_version: PROTOCOL_VERSION + 1,
            nonce: fresh_nonce(),
            server_time_ms: now_ms(),
        })
        .await;

    assert_eq!(first.try_next_message().await, None, "the agent hangs up instead of answering");
    // …and tries again later, as a server rollback may fix it.
    let _second = peer.accept(&agent).await;
    agent.shut_down().await.unwrap();
}

#[tokio::test]
async fn the_agent_reconnects_after_the_peer_drops_the_connection() {
    let peer = Peer::new().await;
    let agent = start_agent(&peer, LocalPolicy::default());
    let mut first = peer.accept(&agent).await;
    let command = peer.command(select_ppse());
    first.send_command(&command).await;
    first.next_reply(&agent).await;

    drop(first);
    let mut second = peer.accept(&agent).await;

    // The new connection works, and a command already run on the old one stays refused.
    second.send_signed(&peer.sign(&command)).await;
    let marker = second.send_command(&peer.command(select_ppse())).await;
    let (answered, _) = second.next_reply(&agent).await;
    assert_eq!(answered, marker);
    assert_eq!(agent.log.n_batches(), 2);
    agent.shut_down().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_the_connection_and_returns_ok() {
    let peer = Peer::new().await;
    let agent = start_agent(&peer, LocalPolicy::default());
    let mut connection = peer.accept(&agent).await;
    connection.next_event().await;

    agent.shut_down().await.unwrap();

    loop {
        if connection.try_next_message().await.is_none() {
            break;
        }
    }
}

#[tokio::test]
async fn shutdown_while_disconnected_returns_ok() {
    let peer = Peer::new().await;
    let agent = start_agent(&peer, LocalPolicy::default());
    // Nobody answers the handshake: the agent keeps redialling.
    drop(peer.accept_raw().await);
    drop(peer.accept_raw().await);

    agent.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_server_that_stops_answering_pings_is_dropped_and_redialled() {
    let peer = Peer::new().await;
    let log = CardLog::default();
    let backend = Box::new(RecordingBackend { log: log.clone() });
    let agent = start_agent_with(&peer, LocalPolicy::default(), backend, log, |settings| {
        settings.ping_interval = Duration::from_millis(50);
        settings.idle_timeout = Duration::from_millis(300);
    });
    // The first connection is welcomed, then never read again: no pongs.
    let _silent = peer.accept(&agent).await;

    let mut second = peer.accept(&agent).await;

    assert!(matches!(second.next_event().await, ReaderEvent::Readers { .. }));
    agent.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_server_that_answers_pings_is_kept() {
    let peer = Peer::new().await;
    let log = CardLog::default();
    let backend = Box::new(RecordingBackend { log: log.clone() });
    let agent = start_agent_with(&peer, LocalPolicy::default(), backend, log, |settings| {
        settings.ping_interval = Duration::from_millis(50);
        settings.idle_timeout = Duration::from_millis(300);
    });
    let mut connection = peer.accept(&agent).await;

    // Keep reading (tungstenite answers the pings) for several idle timeouts.
    let watch = timeout(Duration::from_millis(1200), async {
        loop {
            if connection.try_next_message().await.is_none() {
                break;
            }
        }
    })
    .await;

    assert!(watch.is_err(), "the agent hung up on a server that answers pings");
    let marker = connection.send_command(&peer.command(select_ppse())).await;
    assert_eq!(connection.next_reply(&agent).await.0, marker);
    agent.shut_down().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Commands.

#[tokio::test]
async fn a_valid_command_runs_and_its_reply_is_signed_and_bound_to_it() {
    let peer = Peer::new().await;
    let agent = start_agent(&peer, LocalPolicy::default());
    let mut connection = peer.accept(&agent).await;
    let command = peer.command(CommandBody::Transmit {
        reader: Some(TEST_READER.into()),
        batch: ApduBatch {
            groups: vec![
                ApduGroup { mode: GroupMode::Sequence, apdus: vec![HexBytes(vec![0x00, 0xA4, 0x04, 0x00])], when: vec![] },
                ApduGroup {
                    mode: GroupMode::FirstSuccess,
                    apdus: vec![HexBytes(vec![0x00, 0xB2, 0x01, 0x0C])],
                    when: vec![],
                },
            ],
        },
    });

    connection.send_command(&command).await;

    let signed = loop {
        if let AgentToServer::Reply(signed) = connection.next_message().await {
            break signed;
        }
    };
    let reply = signed.verify(&agent.public_key, TERMINAL_ID, &command.command_id).unwrap();
    assert_eq!(
        reply.outcome,
        Outcome::Transmitted {
            reader: TEST_READER.into(),
            groups: vec![vec![HexBytes(vec![0xA4, 0x90, 0x00])], vec![HexBytes(vec![0xB2, 0x90, 0x00])]],
        }
    );
    assert_eq!(
        signed.verify(&agent.public_key, TERMINAL_ID, "another-command"),
        Err(protocol::envelope::VerifyError::WrongCommand)
    );
    assert_eq!(
        signed.verify(&generate_key().verifying_key(), TERMINAL_ID, &command.command_id),
        Err(protocol::envelope::VerifyError::BadSignature)
    );
    assert_eq!(agent.log.n_batches(), 1);
    agent.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_replayed_command_is_not_run_twice() {
    let peer = Peer::new().await;
    let agent = start_agent(&peer, LocalPolicy::default());
    let mut connection = peer.accept(&agent).await;
    let signed = peer.sign(&peer.command(select_ppse()));
    connection.send_signed(&signed).await;
    connection.next_reply(&agent).await;

    connection.send_signed(&signed).await;
    // Commands are handled in order: once the marker is answered, the replay has been dropped.
    let marker = connection.send_command(&peer.command(select_ppse())).await;

    let (answered, _) = connection.next_reply(&agent).await;
    assert_eq!(answered, marker, "the replay gets no reply");
    assert_eq!(agent.log.n_batches(), 2, "the first command and the marker; not the replay");
    agent.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_command_signed_for_one_connection_is_refused_on_the_next() {
    let peer = Peer::new().await;
    let agent = start_agent(&peer, LocalPolicy::default());
    let first = peer.accept(&agent).await;
    // Never sent on its own connection, so its nonce is unseen: only the session refuses it.
    let for_first = peer.sign(&peer.command(select_ppse()));
    drop(first);
    let mut second = peer.accept(&agent).await;

    second.send_signed(&for_first).await;
    let marker = second.send_command(&peer.command(select_ppse())).await;

    let (answered, _) = second.next_reply(&agent).await;
    assert_eq!(answered, marker, "the other connection's command gets no reply");
    assert_eq!(agent.log.n_batches(), 1, "only the marker reached the card");
    agent.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_command_captured_before_a_restart_is_refused_after_it() {
    let peer = Peer::new().await;
    let (key, dir) = (generate_key(), state_dir());
    let before = start_recording_agent_in(&peer, &key, &dir.0);
    let mut connection = peer.accept(&before).await;
    let captured = peer.sign(&peer.command(select_ppse()));
    connection.send_signed(&captured).await;
    connection.next_reply(&before).await;
    before.shut_down().await.unwrap();
    drop(connection);

    // The same terminal, restarted: a new process with no nonces in memory, on a new connection.
    let after = start_recording_agent_in(&peer, &key, &dir.0);
    let mut connection = peer.accept(&after).await;
    connection.send_signed(&captured).await;
    let marker = connection.send_command(&peer.command(select_ppse())).await;

    let (answered, _) = connection.next_reply(&after).await;
    assert_eq!(answered, marker, "the captured command gets no reply");
    assert_eq!(after.log.n_batches(), 1, "only the marker reached the card");
    after.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_restarted_agent_does_not_answer_a_challenge_it_answered_before() {
    let peer = Peer::new().await;
    let (key, dir) = (generate_key(), state_dir());
    let before = start_recording_agent_in(&peer, &key, &dir.0);
    let nonce = fresh_nonce();
    let mut connection = peer.accept_with(&before, nonce.clone()).await;
    let captured = peer.sign(&peer.command(select_ppse()));
    connection.send_signed(&captured).await;
    connection.next_reply(&before).await;
    // Stopped by a crash, not a clean shutdown: the session was never marked as ended.
    before.task.abort();
    let _ = before.task.await;
    drop(connection);

    // Someone replays the old challenge to the restarted agent, to get the old session back.
    let after = start_recording_agent_in(&peer, &key, &dir.0);
    let mut replayed = peer.accept_raw().await;
    replayed
        .send(&ServerToAgent::Challenge { protocol_version: PROTOCOL_VERSION, nonce, server_time_ms: now_ms() })
        .await;
    let answer = replayed.try_next_message().await;

    assert_eq!(answer, None, "the agent hangs up instead of answering a challenge it answered before");
    // It redials; the next connection works, and the captured command stays refused.
    let mut next = peer.accept(&after).await;
    next.send_signed(&captured).await;
    let marker = next.send_command(&peer.command(select_ppse())).await;
    assert_eq!(next.next_reply(&after).await.0, marker);
    assert_eq!(after.log.n_batches(), 1, "only the marker reached the card");
    after.shut_down().await.unwrap();
}

#[tokio::test]
async fn commands_that_do_not_verify_get_no_reply_and_never_run() {
    let peer = Peer::new().await;
    let agent = start_agent(&peer, LocalPolicy::default());
    let mut connection = peer.accept(&agent).await;

    let impostor = SignedCommand::sign(&peer.command(select_ppse()), &generate_key());
    let mut elsewhere = peer.command(select_ppse());
    elsewhere.terminal_id = "term-someone-else".into();
    let mut expired = peer.command(select_ppse());
    expired.issued_at_ms = now_ms() - 200_000;
    expired.expires_at_ms = now_ms() - 100_000;
    let mut unsigned = peer.sign(&peer.command(select_ppse()));
    unsigned.signature = HexBytes(vec![0; 64]);
    let mut future_version = peer.command(select_ppse());
    future_version.v = PROTOCOL_VERSION + 1;

    connection.send_signed(&impostor).await;
    connection.send_signed(&peer.sign(&elsewhere)).await;
    connection.send_signed(&peer.sign(&expired)).await;
    connection.send_signed(&unsigned).await;
    connection.send_signed(&peer.sign(&future_version)).await;
    let marker = connection.send_command(&peer.command(select_ppse())).await;

    let (answered, _) = connection.next_reply(&agent).await;
    assert_eq!(answered, marker, "no reply to any of the invalid commands");
    assert_eq!(agent.log.n_batches(), 1, "only the marker reached the card");
    agent.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_malformed_frame_does_not_close_the_connection() {
    let peer = Peer::new().await;
    let agent = start_agent(&peer, LocalPolicy::default());
    let mut connection = peer.accept(&agent).await;

    connection.socket.send(Message::text("not json at all")).await.unwrap();
    connection.socket.send(Message::text(r#"{"type":"command","payload":42}"#)).await.unwrap();
    connection.socket.send(Message::text(r#"{"type":"format_disk"}"#)).await.unwrap();
    connection.socket.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
    connection.socket.send(Message::Ping(vec![1u8, 2].into())).await.unwrap();
    let marker = connection.send_command(&peer.command(select_ppse())).await;

    let (answered, reply) = connection.next_reply(&agent).await;
    assert_eq!(answered, marker);
    assert!(matches!(reply.outcome, Outcome::Transmitted { .. }));
    agent.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_read_only_terminal_refuses_a_signed_write_before_it_reaches_the_card() {
    let peer = Peer::new().await;
    let agent = start_agent(&peer, LocalPolicy { read_only: true, allowed_readers: vec![] });
    let mut connection = peer.accept(&agent).await;
    // A read then a purse credit in one batch: nothing of it may run.
    let command = peer.command(CommandBody::Transmit {
        reader: None,
        batch: batch(&["805C000204", "805200000B0000000000000000000000000004"]),
    });

    let id = connection.send_command(&command).await;

    let (answered, reply) = connection.next_reply(&agent).await;
    assert_eq!(answered, id);
    let Outcome::Failed { error, message } = reply.outcome else { panic!("expected a refusal") };
    assert_eq!(error, AgentError::PolicyRefused);
    assert!(message.contains("CREDIT FOR LOAD"), "{message}");
    assert_eq!(agent.log.n_batches(), 0);
    assert!(agent.log.apdus.lock().unwrap().is_empty());

    // Reads still work.
    connection.send_command(&peer.command(CommandBody::Transmit { reader: None, batch: batch(&["805C000204"]) })).await;
    let (_, reply) = connection.next_reply(&agent).await;
    assert!(matches!(reply.outcome, Outcome::Transmitted { .. }));
    agent.shut_down().await.unwrap();
}

#[tokio::test]
async fn readers_outside_the_allow_list_are_hidden_and_refused() {
    let peer = Peer::new().await;
    let policy = LocalPolicy { read_only: false, allowed_readers: vec!["Front Desk Reader".into()] };
    let agent = start_agent(&peer, policy);
    let mut connection = peer.accept(&agent).await;

    assert_eq!(connection.next_event().await, ReaderEvent::Readers { readers: vec![] });
    connection
        .send_command(
            &peer.command(CommandBody::Transmit { reader: Some(TEST_READER.into()), batch: batch(&["00A40400"]) }),
        )
        .await;
    let (_, named) = connection.next_reply(&agent).await;
    connection.send_command(&peer.command(select_ppse())).await;
    let (_, unnamed) = connection.next_reply(&agent).await;

    assert!(matches!(named.outcome, Outcome::Failed { error: AgentError::PolicyRefused, .. }), "{named:?}");
    // With no reader named, the only allowed reader has no card.
    assert!(matches!(unnamed.outcome, Outcome::Failed { error: AgentError::NoCard, .. }), "{unnamed:?}");
    assert_eq!(agent.log.n_batches(), 0);

    // Events of an excluded reader are not reported: the next frame is the marker's reply.
    agent.log.push_event(BackendEvent::CardPresent { reader: TEST_READER.into(), atr: TEST_ATR.to_vec() });
    let marker = peer.command(CommandBody::SimulateRemove);
    connection.send_command(&marker).await;
    let AgentToServer::Reply(signed) = connection.next_message().await else { panic!("an event leaked") };
    assert_eq!(signed.claimed_command_id(), Some(marker.command_id));
    agent.shut_down().await.unwrap();
}

#[tokio::test]
async fn card_events_are_forwarded_as_they_happen() {
    let peer = Peer::new().await;
    let agent = start_agent(&peer, LocalPolicy::default());
    let mut connection = peer.accept(&agent).await;
    assert!(matches!(connection.next_event().await, ReaderEvent::Readers { .. }));
    assert!(matches!(connection.next_event().await, ReaderEvent::CardPresent { .. }));

    agent.log.push_event(BackendEvent::CardRemoved { reader: TEST_READER.into() });

    assert_eq!(connection.next_event().await, ReaderEvent::CardRemoved { reader: TEST_READER.into() });
    agent.shut_down().await.unwrap();
}

#[tokio::test]
async fn simulated_cards_are_unsupported_outside_the_virtual_reader() {
    let peer = Peer::new().await;
    let agent = start_agent(&peer, LocalPolicy::default());
    let mut connection = peer.accept(&agent).await;

    connection.send_command(&peer.command(CommandBody::SimulateTap { card: "anything".into() })).await;

    let (_, reply) = connection.next_reply(&agent).await;
    assert!(matches!(reply.outcome, Outcome::Failed { error: AgentError::Unsupported, .. }), "{reply:?}");
    agent.shut_down().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The virtual reader over the wire.

fn first_simulated_card() -> String {
    card::sim::catalogue().into_iter().next().expect("the simulator has cards").name.to_string()
}

#[tokio::test]
async fn the_virtual_reader_taps_reads_and_removes_a_simulated_card() {
    let peer = Peer::new().await;
    let backend = Box::new(cardbridge_agent::backend::VirtualReader::new());
    let agent = start_agent_with(&peer, LocalPolicy::default(), backend, CardLog::default(), |_| {});
    let mut connection = peer.accept(&agent).await;
    let card = first_simulated_card();

    connection.send_command(&peer.command(CommandBody::SimulateTap { card: card.clone() })).await;
    let (_, tapped) = connection.next_reply(&agent).await;
    connection.send_command(&peer.command(select_ppse())).await;
    let (_, read) = connection.next_reply(&agent).await;
    connection.send_command(&peer.command(CommandBody::SimulateRemove)).await;
    let (_, removed) = connection.next_reply(&agent).await;
    connection.send_command(&peer.command(select_ppse())).await;
    let (_, no_card) = connection.next_reply(&agent).await;
    connection.send_command(&peer.command(CommandBody::SimulateTap { card: "no-such-card".into() })).await;
    let (_, unknown) = connection.next_reply(&agent).await;

    assert_eq!(tapped.outcome, Outcome::Done);
    let Outcome::Transmitted { reader, groups } = read.outcome else { panic!("{read:?}") };
    assert_eq!(reader, VIRTUAL_READER_NAME);
    assert_eq!(groups.len(), 1);
    assert!(groups[0][0].0.len() >= 2);
    assert_eq!(removed.outcome, Outcome::Done);
    assert!(matches!(no_card.outcome, Outcome::Failed { error: AgentError::NoCard, .. }), "{no_card:?}");
    let Outcome::Failed { error, message } = unknown.outcome else { panic!("{unknown:?}") };
    assert_eq!(error, AgentError::ReaderError);
    assert!(message.contains("no-such-card"), "{message}");
    agent.shut_down().await.unwrap();
}

#[tokio::test]
async fn virtual_taps_are_reported_as_card_events() {
    let peer = Peer::new().await;
    let backend = Box::new(cardbridge_agent::backend::VirtualReader::new());
    let agent = start_agent_with(&peer, LocalPolicy::default(), backend, CardLog::default(), |_| {});
    let mut connection = peer.accept(&agent).await;
    let ReaderEvent::Readers { readers } = connection.next_event().await else { panic!("readers first") };
    assert_eq!(readers[0].name, VIRTUAL_READER_NAME);
    assert_eq!(readers[0].state, protocol::agent::ReaderState::Empty);

    connection.send_command(&peer.command(CommandBody::SimulateTap { card: first_simulated_card() })).await;

    let mut saw_present = false;
    let mut saw_reply = false;
    while !(saw_present && saw_reply) {
        match connection.next_message().await {
            AgentToServer::Event(ReaderEvent::CardPresent { reader, atr }) => {
                assert_eq!(reader, VIRTUAL_READER_NAME);
                assert!(!atr.0.is_empty());
                saw_present = true;
            }
            AgentToServer::Reply(_) => saw_reply = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    agent.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_virtual_reader_started_with_a_card_reports_it_on_connect() {
    let peer = Peer::new().await;
    let card = first_simulated_card();
    let backend = cardbridge_agent::backend::open(&cardbridge_agent::ReaderChoice::Virtual, Some(&card)).unwrap();
    let agent = start_agent_with(&peer, LocalPolicy::default(), backend, CardLog::default(), |_| {});
    let mut connection = peer.accept(&agent).await;

    let ReaderEvent::Readers { readers } = connection.next_event().await else { panic!("readers first") };
    let present = connection.next_event().await;

    assert_eq!(readers[0].state, protocol::agent::ReaderState::CardPresent);
    let expected_atr = card::sim::load(&card).unwrap().atr();
    assert_eq!(present, ReaderEvent::CardPresent { reader: VIRTUAL_READER_NAME.into(), atr: expected_atr.into() });
    agent.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_card_that_vanishes_mid_batch_is_reported_as_removed() {
    let peer = Peer::new().await;
    let mut reader = cardbridge_agent::backend::VirtualReader::new();
    let card = card::sim::load(&first_simulated_card()).unwrap();
    reader.insert_card(Box::new(card::sim::Misbehave::new(card).vanish(card::sim::Vanish::AfterCommands(1))));
    let agent = start_agent_with(&peer, LocalPolicy::default(), Box::new(reader), CardLog::default(), |_| {});
    let mut connection = peer.accept(&agent).await;
    let two_apdus = CommandBody::Transmit {
        reader: None,
        batch: batch(&["00A404000E325041592E5359532E444446303100", "00B2010C00"]),
    };

    connection.send_command(&peer.command(two_apdus)).await;

    let (_, reply) = connection.next_reply(&agent).await;
    let Outcome::Failed { error, message } = reply.outcome else { panic!("{reply:?}") };
    assert_eq!(error, AgentError::CardRemoved);
    assert!(message.contains("unknown"), "{message}");
    agent.shut_down().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Enrolment and pairing over HTTP.

struct HttpRequest {
    path: String,
    body: String,
}

/// Serve one HTTP request per canned `(status, body)` answer, in order; returns what was asked.
fn http_serve(listener: TcpListener, answers: Vec<(u16, String)>) -> JoinHandle<Vec<HttpRequest>> {
    tokio::spawn(async move {
        let mut requests = Vec::new();
        for (status, body) in answers {
            let (mut tcp, _) = timeout(DEADLINE, listener.accept()).await.expect("a request").unwrap();
            requests.push(serve_one(&mut tcp, status, &body).await);
        }
        requests
    })
}

async fn serve_one(tcp: &mut TcpStream, status: u16, body: &str) -> HttpRequest {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let (head_end, content_length) = loop {
        let n = tcp.read(&mut buffer).await.unwrap();
        assert!(n > 0, "the client hung up mid-request");
        received.extend_from_slice(&buffer[..n]);
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse::<usize>().unwrap())
                .unwrap_or(0);
            break (end + 4, length);
        }
    };
    while received.len() < head_end + content_length {
        let n = tcp.read(&mut buffer).await.unwrap();
        assert!(n > 0, "the client hung up mid-body");
        received.extend_from_slice(&buffer[..n]);
    }
    let head = String::from_utf8_lossy(&received[..head_end]).to_string();
    let path = head.split_whitespace().nth(1).unwrap().to_string();
    let request_body = String::from_utf8_lossy(&received[head_end..head_end + content_length]).to_string();
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(response.as_bytes()).await.unwrap();
    tcp.shutdown().await.unwrap();
    HttpRequest { path, body: request_body }
}

async fn http_listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("cardbridge-agent-it-{}", hex::encode(fresh_nonce().0)));
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn enrol_response(server_key: &SigningKey) -> String {
    protocol::encode(&protocol::api::EnrolResponse {
        terminal_id: TERMINAL_ID.into(),
        terminal_name: "Desk 1".into(),
        server_public_key: server_key.verifying_key().to_bytes().to_vec().into(),
    })
}

#[tokio::test]
async fn enrolment_saves_a_private_key_and_pins_the_server_key() {
    let (listener, url) = http_listener().await;
    let server_key = generate_key();
    let server = http_serve(listener, vec![(200, enrol_response(&server_key))]);
    let dir = TempDir::new();

    let enrolment = cardbridge_agent::enrol(&url, "ABCD-1234", &dir.0, false).await.unwrap();

    let request = server.await.unwrap().remove(0);
    assert_eq!(request.path, "/api/agent/enrol");
    let sent: protocol::api::EnrolRequest = serde_json::from_str(&request.body).unwrap();
    assert_eq!(sent.enrolment_code, "ABCD-1234");
    assert_eq!(sent.public_key.0, enrolment.public_key.to_bytes().to_vec());
    let config = AgentConfig::load(&dir.0).unwrap();
    assert_eq!(config.terminal_id, TERMINAL_ID);
    assert_eq!(config.server_key, server_key.verifying_key());
    assert_eq!(config.signing_key.verifying_key(), enrolment.public_key);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.0.join("terminal.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn an_existing_enrolment_is_kept_unless_forced() {
    let (listener, url) = http_listener().await;
    let server = http_serve(listener, vec![(200, enrol_response(&generate_key())); 2]);
    let dir = TempDir::new();
    let first = cardbridge_agent::enrol(&url, "CODE-1", &dir.0, false).await.unwrap();

    let error = cardbridge_agent::enrol(&url, "CODE-2", &dir.0, false).await.unwrap_err();
    assert!(format!("{error:#}").contains("--force"), "{error:#}");
    assert_eq!(AgentConfig::load(&dir.0).unwrap().signing_key.verifying_key(), first.public_key);

    let second = cardbridge_agent::enrol(&url, "CODE-2", &dir.0, true).await.unwrap();
    let requests = server.await.unwrap();
    // The refused attempt never reached the server: the code was not spent.
    let codes: Vec<String> = requests
        .iter()
        .map(|r| serde_json::from_str::<protocol::api::EnrolRequest>(&r.body).unwrap().enrolment_code)
        .collect();
    assert_eq!(codes, ["CODE-1", "CODE-2"]);
    assert_ne!(second.public_key, first.public_key);
    assert_eq!(AgentConfig::load(&dir.0).unwrap().signing_key.verifying_key(), second.public_key);
}

#[tokio::test]
async fn a_refused_enrolment_shows_the_server_message_and_writes_nothing() {
    let (listener, url) = http_listener().await;
    let body = protocol::encode(&protocol::api::ApiError {
        code: "enrolment_code_expired".into(),
        message: "This enrolment code has expired".into(),
    });
    let server = http_serve(listener, vec![(410, body)]);
    let dir = TempDir::new();

    let error = cardbridge_agent::enrol(&url, "OLD-CODE", &dir.0, false).await.unwrap_err();

    server.await.unwrap();
    assert!(format!("{error:#}").contains("This enrolment code has expired"), "{error:#}");
    assert!(!dir.0.join("terminal.key").exists());
    assert!(!dir.0.join("terminal.toml").exists());
}

#[tokio::test]
async fn a_pairing_request_is_signed_by_the_terminal_key() {
    let (listener, url) = http_listener().await;
    let link = protocol::api::PairingLink { url: "https://bank.example/pair/xyz".into(), expires_at: "soon".into() };
    let server = http_serve(listener, vec![(200, enrol_response(&generate_key())), (200, protocol::encode(&link))]);
    let dir = TempDir::new();
    let enrolment = cardbridge_agent::enrol(&url, "CODE", &dir.0, false).await.unwrap();

    let answered = cardbridge_agent::request_pairing(&dir.0).await.unwrap();

    let request = server.await.unwrap().remove(1);
    assert_eq!(request.path, "/api/agent/pairing");
    assert_eq!(answered, link);
    let sent: protocol::api::PairingRequest = serde_json::from_str(&request.body).unwrap();
    assert_eq!(sent.terminal_id, TERMINAL_ID);
    protocol::envelope::verify_pairing(&sent.terminal_id, sent.issued_at_ms, &sent.signature, &enrolment.public_key)
        .expect("the pairing request verifies with the terminal key");
}

// ---------------------------------------------------------------------------------------------
// Tidiness.

#[test]
fn every_module_starts_with_a_doc_line() {
    fn visit(dir: &std::path::Path, missing: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                visit(&path, missing);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                if !text.starts_with("//!") {
                    missing.push(path.display().to_string());
                }
            }
        }
    }
    let mut missing = Vec::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    visit(&root.join("src"), &mut missing);
    visit(&root.join("tests"), &mut missing);

    assert!(missing.is_empty(), "modules without a //! line: {missing:?}");
}
