//! The hub: which agents and pages are connected, and the correlation of signed commands with
//! their replies.
//!
//! All state sits behind one std `Mutex` that is never held across an `.await`: every method
//! locks, changes the maps, queues frames with `try_send`, and unlocks. Outgoing frames go through
//! bounded channels to each connection's writer task; a connection whose channel is full is too
//! slow to serve and is dropped.
//!
//! For run-state monitoring (R3.8) the hub also records when each terminal's agent was last
//! heard from (any frame, heartbeat pings included; kept after it disconnects), and times and
//! counts the commands it sends ([`Hub::snapshot`], [`Hub::command_figures`], `/metrics`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use protocol::envelope::VerifyError;
use protocol::HexBytes;
use protocol::agent::{
    Command, CommandBody, LocalPolicyReport, Outcome, ReaderInfo, ReaderState, Reply, ServerToAgent, SignedCommand,
    SignedReply,
};
use protocol::page::ServerToPage;
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::metrics::{CallWindow, ErrorLabel, Metrics, WindowFigures};
use crate::util::new_id;

/// How long a signed command stays valid.
const COMMAND_LIFETIME_MS: i64 = 30_000;
/// Frames queued per connection before it counts as stuck.
pub const CONNECTION_QUEUE: usize = 64;
/// Command ids remembered per agent connection after they stopped waiting, so that a late reply
/// (after a timeout) is told apart from an unsolicited one.
const RECENT_COMMANDS: usize = 256;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HubError {
    #[error("the terminal's agent is not connected")]
    AgentOffline,
    #[error("the agent did not answer in time")]
    Timeout,
    #[error("the agent's connection closed before it answered")]
    Disconnected,
    #[error("the agent's reply did not verify: {0}")]
    BadReply(String),
}

/// Why a reply from an agent was not accepted.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ReplyRefused {
    #[error("the reply names no command")]
    Unreadable,
    #[error("the connection is no longer the terminal's current one")]
    StaleConnection,
    #[error("late reply to command {0}, which no longer waits")]
    Late(String),
    /// The reply answers a command the hub never sent on this connection.
    #[error("unsolicited reply to command {command_id} (signature {})", if *signature_valid { "valid" } else { "invalid" })]
    Unsolicited { command_id: String, signature_valid: bool },
    #[error("the reply did not verify: {0}")]
    BadReply(VerifyError),
}

/// A card currently in one of the terminal's readers.
#[derive(Debug, Clone)]
pub struct PresentCard {
    pub reader: String,
    pub atr: Vec<u8>,
}

/// What the hub knows about one connected agent.
#[derive(Debug, Clone)]
pub struct AgentStatus {
    pub backend: String,
    /// The agent's own version, from its hello.
    pub agent_version: String,
    pub policy: LocalPolicyReport,
    pub readers: Vec<ReaderInfo>,
    pub card: Option<PresentCard>,
    /// A read of the present card has started: the next read needs a new tap. (A card that
    /// failed to read, or was pulled away while the reader still shows it, is not read again and
    /// again while the page re-arms.)
    pub card_read: bool,
}

struct AgentConn {
    conn_id: u64,
    tx: mpsc::Sender<ServerToAgent>,
    key: VerifyingKey,
    /// The connection's session (from its challenge nonce); every command carries it.
    session: HexBytes,
    pending: HashMap<String, oneshot::Sender<Result<Reply, HubError>>>,
    /// Ids of commands sent on this connection that no longer wait, newest last.
    finished: VecDeque<String>,
    status: AgentStatus,
    /// A read is running on this terminal: one at a time.
    busy: bool,
    /// The instance that claimed the running read, when another one did (its claim is freed if
    /// it dies with the read in flight).
    claimed_by: Option<String>,
    /// When a frame (a heartbeat ping included) last arrived on this connection, by the clock.
    last_seen_ms: i64,
}

impl AgentConn {
    fn finish(&mut self, command_id: String) {
        if self.finished.len() == RECENT_COMMANDS {
            self.finished.pop_front();
        }
        self.finished.push_back(command_id);
    }

    /// The connection is gone: every command still waiting for a reply fails now.
    fn fail_pending(self) {
        for (_, waiter) in self.pending {
            let _ = waiter.send(Err(HubError::Disconnected));
        }
    }
}

/// One page connection.
struct PageConn {
    terminal_id: String,
    user_id: String,
    session_hash: String,
    pairing_id: String,
    tx: mpsc::Sender<ServerToPage>,
    armed: bool,
    armed_at: i64,
}

/// Who opened a page connection, for [`Hub::page_connected`].
#[derive(Debug, Clone, Copy)]
pub struct NewPage<'a> {
    pub terminal_id: &'a str,
    pub user_id: &'a str,
    pub session_hash: &'a str,
    pub pairing_id: &'a str,
}

/// A page connection as other modules see it.
#[derive(Debug, Clone)]
pub struct PageRef {
    pub page_id: u64,
    pub user_id: String,
    pub session_hash: String,
    /// The browser pairing the page's socket was opened with (re-checked for every read).
    pub pairing_id: String,
    /// The instance the page is connected to, when it is not this one (a read run here, on the
    /// instance holding the agent, for a page of another instance).
    pub instance: Option<String>,
}

impl PageConn {
    fn page_ref(&self, page_id: u64) -> PageRef {
        PageRef {
            page_id,
            user_id: self.user_id.clone(),
            session_hash: self.session_hash.clone(),
            pairing_id: self.pairing_id.clone(),
            instance: None,
        }
    }
}

/// What a kiosk connection is told about its terminal (internal; the kiosk task decides what to
/// do and what to send to its page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KioskSignal {
    /// A card appeared on the terminal's reader.
    CardPresent,
    /// The card left the reader.
    CardRemoved,
    /// Something else changed (agent connected or gone, permission): refresh the view.
    Changed,
}

/// One top-up kiosk connection (`/ws/kiosk`).
struct KioskConn {
    terminal_id: String,
    tx: mpsc::Sender<KioskSignal>,
}

#[derive(Default)]
struct Inner {
    agents: HashMap<String, AgentConn>,
    pages: HashMap<u64, PageConn>,
    kiosks: HashMap<u64, KioskConn>,
    next_conn_id: u64,
    /// Commands handed to each terminal's agent since start (for monitoring and tests).
    commands_sent: HashMap<String, u64>,
    /// When each terminal's agent was last heard from (or left), by the clock; kept after its
    /// connection ends.
    last_seen: HashMap<String, i64>,
}

/// One connected agent, as [`Hub::snapshot`] shows it.
#[derive(Debug, Clone)]
pub struct AgentSnapshot {
    pub terminal_id: String,
    pub status: AgentStatus,
    /// The last frame on the connection, by the clock.
    pub last_seen_ms: i64,
}

/// Connections as they are now, for monitoring.
#[derive(Debug, Clone, Default)]
pub struct HubSnapshot {
    pub agents: Vec<AgentSnapshot>,
    /// When each terminal's agent was last heard from, connected or not (since the start).
    pub last_seen: HashMap<String, i64>,
    pub pages: usize,
    pub kiosks: usize,
}

/// Commands the hub sent: since the start, and over a recent window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CommandFigures {
    pub sent: u64,
    pub failed: u64,
    pub window: WindowFigures,
}

pub struct Hub {
    inner: Mutex<Inner>,
    server_key: SigningKey,
    command_timeout: Duration,
    /// Stamps commands (`issued_at_ms`, `expires_at_ms`) and arming. The agent checks a command's
    /// expiry against its own clock, so a test clock far from real time makes agents refuse.
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// Recent command round trips (monitoring's window).
    commands: CallWindow,
    sent: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hub { .. }")
    }
}

impl Hub {
    pub fn new(server_key: SigningKey, command_timeout: Duration, clock: Arc<dyn Clock>) -> Arc<Hub> {
        Hub::with_metrics(server_key, command_timeout, clock, Arc::new(Metrics::new()))
    }

    /// [`Hub::new`] counting its commands and connections into `metrics`.
    pub fn with_metrics(server_key: SigningKey, command_timeout: Duration, clock: Arc<dyn Clock>, metrics: Arc<Metrics>) -> Arc<Hub> {
        Arc::new(Hub {
            inner: Mutex::new(Inner::default()),
            server_key,
            command_timeout,
            clock,
            metrics,
            commands: CallWindow::default(),
            sent: Default::default(),
            failed: Default::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain maps behind; they stay usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn server_public_key(&self) -> VerifyingKey {
        self.server_key.verifying_key()
    }

    // ---- agents ----

    /// Register an authenticated agent connection with its `session`
    /// ([`protocol::envelope::session_id`] of its challenge); an older connection of the same
    /// terminal is replaced (its pending commands fail). Returns the connection id.
    pub fn agent_connected(
        &self,
        terminal_id: &str,
        key: VerifyingKey,
        session: HexBytes,
        tx: mpsc::Sender<ServerToAgent>,
        hello: AgentHello,
    ) -> u64 {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        inner.next_conn_id += 1;
        let conn_id = inner.next_conn_id;
        let AgentHello { backend, agent_version, policy } = hello;
        let status = AgentStatus { backend, agent_version, policy, readers: Vec::new(), card: None, card_read: false };
        inner.last_seen.insert(terminal_id.to_string(), now);
        if let Some(old) = inner.agents.insert(
            terminal_id.to_string(),
            AgentConn {
                conn_id,
                tx,
                key,
                session,
                pending: HashMap::new(),
                finished: VecDeque::new(),
                status,
                busy: false,
                claimed_by: None,
                last_seen_ms: now,
            },
        ) {
            old.fail_pending();
        }
        conn_id
    }

    /// A frame (or a heartbeat ping) arrived on an agent connection: it is alive now.
    pub fn agent_seen(&self, terminal_id: &str, conn_id: u64) {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        if let Some(agent) = inner.agents.get_mut(terminal_id).filter(|a| a.conn_id == conn_id) {
            agent.last_seen_ms = now;
            inner.last_seen.insert(terminal_id.to_string(), now);
        }
    }

    /// Forget an agent connection (only if it is still the current one for its terminal).
    pub fn agent_disconnected(&self, terminal_id: &str, conn_id: u64) {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        if inner.agents.get(terminal_id).is_some_and(|a| a.conn_id == conn_id) {
            if let Some(old) = inner.agents.remove(terminal_id) {
                old.fail_pending();
            }
            inner.last_seen.insert(terminal_id.to_string(), now);
        }
    }

    /// Close the agent connection of a terminal (revocation). Dropping the sender ends its writer.
    pub fn disconnect_agent(&self, terminal_id: &str) {
        let mut inner = self.lock();
        if let Some(old) = inner.agents.remove(terminal_id) {
            old.fail_pending();
        }
    }

    pub fn agent_status(&self, terminal_id: &str) -> Option<AgentStatus> {
        self.lock().agents.get(terminal_id).map(|a| a.status.clone())
    }

    pub fn set_readers(&self, terminal_id: &str, conn_id: u64, readers: Vec<ReaderInfo>) {
        let mut inner = self.lock();
        if let Some(agent) = inner.agents.get_mut(terminal_id).filter(|a| a.conn_id == conn_id) {
            if let Some(card) = &agent.status.card {
                let still_there = readers.iter().any(|r| r.name == card.reader && r.state == ReaderState::CardPresent);
                if !still_there {
                    agent.status.card = None;
                }
            }
            agent.status.readers = readers;
        }
    }

    /// A card appeared in one of the terminal's readers.
    pub fn card_present(&self, terminal_id: &str, conn_id: u64, card: PresentCard) {
        if let Some(agent) = self.lock().agents.get_mut(terminal_id).filter(|a| a.conn_id == conn_id) {
            agent.status.card = Some(card);
            agent.status.card_read = false;
        }
    }

    /// The card left `reader` (a removal from another reader leaves the present card alone).
    pub fn card_removed(&self, terminal_id: &str, conn_id: u64, reader: &str) {
        if let Some(agent) = self.lock().agents.get_mut(terminal_id).filter(|a| a.conn_id == conn_id) {
            if agent.status.card.as_ref().is_some_and(|c| c.reader == reader) {
                agent.status.card = None;
            }
        }
    }

    /// Mark the terminal busy for a read of its present card and return that card; `None` if a
    /// read is already running, the present card was already read (one read per tap), there is
    /// no card, or no agent is there. Pages and kiosks claim cards through this one rule.
    /// `claimant`: the instance that asked, when not this one ([`crate::router`]).
    pub fn try_begin_read(&self, terminal_id: &str, claimant: Option<&str>) -> Option<PresentCard> {
        let mut inner = self.lock();
        match inner.agents.get_mut(terminal_id) {
            Some(agent) if !agent.busy && !agent.status.card_read => {
                let card = agent.status.card.clone()?;
                agent.busy = true;
                agent.claimed_by = claimant.map(str::to_string);
                agent.status.card_read = true;
                Some(card)
            }
            _ => None,
        }
    }

    pub fn end_read(&self, terminal_id: &str) {
        if let Some(agent) = self.lock().agents.get_mut(terminal_id) {
            agent.busy = false;
            agent.claimed_by = None;
        }
    }

    /// Free the reads claimed by instances not in `live` (they died with a read in flight).
    pub fn release_claims_except(&self, live: &std::collections::HashSet<String>) {
        for (terminal_id, agent) in self.lock().agents.iter_mut() {
            if agent.claimed_by.as_ref().is_some_and(|by| !live.contains(by)) {
                tracing::warn!(terminal_id, "freeing a read claimed by an instance that is gone");
                agent.busy = false;
                agent.claimed_by = None;
            }
        }
    }

    /// Sign `body` for the terminal's current connection, send it to its agent, and wait for the
    /// verified reply.
    ///
    /// This is transport only: callers check the terminal's permission and the user's consent
    /// first (see [`crate::reader`]); nothing else calls it.
    pub async fn send_command(&self, terminal_id: &str, body: CommandBody) -> Result<Outcome, HubError> {
        let started = std::time::Instant::now();
        let result = self.send_command_untimed(terminal_id, body).await;
        self.count_command(started.elapsed(), &result);
        result
    }

    /// Count a command's round trip (metrics and the monitoring window).
    fn count_command(&self, took: Duration, result: &Result<Outcome, HubError>) {
        use std::sync::atomic::Ordering::Relaxed;
        self.sent.fetch_add(1, Relaxed);
        match result {
            Ok(_) => self.metrics.agent_command_duration.observe(took.as_secs_f64()),
            Err(e) => {
                self.failed.fetch_add(1, Relaxed);
                let error = match e {
                    HubError::AgentOffline => "offline",
                    HubError::Timeout => "timeout",
                    HubError::Disconnected => "disconnected",
                    HubError::BadReply(_) => "bad_reply",
                };
                self.metrics.agent_command_errors.get_or_create(&ErrorLabel { error }).inc();
            }
        }
        self.commands.record(self.clock.now_ms(), took, result.is_ok());
    }

    async fn send_command_untimed(&self, terminal_id: &str, body: CommandBody) -> Result<Outcome, HubError> {
        let command_id = new_id("c");
        let (waiter_tx, waiter_rx) = oneshot::channel();
        let conn_id = {
            let mut inner = self.lock();
            let agent = inner.agents.get_mut(terminal_id).ok_or(HubError::AgentOffline)?;
            // Signed under the lock (no await; microseconds) so that the command carries the
            // session of exactly the connection it is queued on.
            let issued_at_ms = self.clock.now_ms();
            let command = Command {
                v: protocol::PROTOCOL_VERSION,
                terminal_id: terminal_id.to_string(),
                session: agent.session.clone(),
                command_id: command_id.clone(),
                issued_at_ms,
                expires_at_ms: issued_at_ms + COMMAND_LIFETIME_MS,
                nonce: protocol::envelope::fresh_nonce(),
                body,
            };
            let signed = SignedCommand::sign(&command, &self.server_key);
            agent.pending.insert(command_id.clone(), waiter_tx);
            if agent.tx.try_send(ServerToAgent::Command(signed)).is_err() {
                agent.pending.remove(&command_id);
                return Err(HubError::Disconnected);
            }
            let conn_id = agent.conn_id;
            *inner.commands_sent.entry(terminal_id.to_string()).or_default() += 1;
            conn_id
        };
        let result = tokio::time::timeout(self.command_timeout, waiter_rx).await;
        match result {
            Ok(Ok(reply)) => reply.map(|r| r.outcome),
            Ok(Err(_)) => Err(HubError::Disconnected),
            Err(_) => {
                if let Some(agent) = self.lock().agents.get_mut(terminal_id).filter(|a| a.conn_id == conn_id) {
                    if agent.pending.remove(&command_id).is_some() {
                        agent.finish(command_id);
                    }
                }
                Err(HubError::Timeout)
            }
        }
    }

    /// A reply arrived on an agent connection: verify it against the terminal key and the command
    /// it claims to answer, and hand it to the waiter. A reply to a command never sent on this
    /// connection is [`ReplyRefused::Unsolicited`].
    pub fn reply_received(&self, terminal_id: &str, conn_id: u64, signed: SignedReply) -> Result<(), ReplyRefused> {
        let command_id = signed.claimed_command_id().ok_or(ReplyRefused::Unreadable)?;
        let mut inner = self.lock();
        let agent = inner
            .agents
            .get_mut(terminal_id)
            .filter(|a| a.conn_id == conn_id)
            .ok_or(ReplyRefused::StaleConnection)?;
        let Some(waiter) = agent.pending.remove(&command_id) else {
            if agent.finished.contains(&command_id) {
                return Err(ReplyRefused::Late(command_id));
            }
            let signature_valid = signed.verify(&agent.key, terminal_id, &command_id).is_ok();
            return Err(ReplyRefused::Unsolicited { command_id, signature_valid });
        };
        let verified = signed.verify(&agent.key, terminal_id, &command_id);
        agent.finish(command_id);
        match verified {
            Ok(reply) => {
                let _ = waiter.send(Ok(reply));
                Ok(())
            }
            Err(e) => {
                let _ = waiter.send(Err(HubError::BadReply(e.to_string())));
                Err(ReplyRefused::BadReply(e))
            }
        }
    }

    // ---- pages ----

    pub fn page_connected(&self, page: NewPage<'_>, tx: mpsc::Sender<ServerToPage>) -> u64 {
        let mut inner = self.lock();
        inner.next_conn_id += 1;
        let id = inner.next_conn_id;
        inner.pages.insert(
            id,
            PageConn {
                terminal_id: page.terminal_id.into(),
                user_id: page.user_id.into(),
                session_hash: page.session_hash.into(),
                pairing_id: page.pairing_id.into(),
                tx,
                armed: false,
                armed_at: 0,
            },
        );
        id
    }

    pub fn page_disconnected(&self, page_id: u64) {
        self.lock().pages.remove(&page_id);
    }

    pub fn set_armed(&self, page_id: u64, armed: bool) {
        if let Some(page) = self.lock().pages.get_mut(&page_id) {
            page.armed = armed;
            page.armed_at = self.clock.now_ms();
        }
    }

    pub fn is_armed(&self, page_id: u64) -> bool {
        self.lock().pages.get(&page_id).is_some_and(|p| p.armed)
    }

    /// The page that should receive the next card read on a terminal: the most recently armed.
    pub fn armed_page(&self, terminal_id: &str) -> Option<PageRef> {
        self.lock()
            .pages
            .iter()
            .filter(|(_, p)| p.terminal_id == terminal_id && p.armed)
            .max_by_key(|(_, p)| p.armed_at)
            .map(|(id, p)| p.page_ref(*id))
    }

    /// Queue a frame to one page; a page that cannot keep up is dropped.
    pub fn send_to_page(&self, page_id: u64, message: ServerToPage) {
        let mut inner = self.lock();
        let full = match inner.pages.get(&page_id) {
            Some(page) => page.tx.try_send(message).is_err(),
            None => false,
        };
        if full {
            inner.pages.remove(&page_id);
        }
    }

    /// Pages watching a terminal.
    pub fn pages_of(&self, terminal_id: &str) -> Vec<PageRef> {
        self.lock()
            .pages
            .iter()
            .filter(|(_, p)| p.terminal_id == terminal_id)
            .map(|(id, p)| p.page_ref(*id))
            .collect()
    }

    // ---- kiosks ----

    /// Register a kiosk connection on `terminal_id`; it is told of card and terminal changes on
    /// `tx`. Returns its id.
    pub fn kiosk_connected(&self, terminal_id: &str, tx: mpsc::Sender<KioskSignal>) -> u64 {
        let mut inner = self.lock();
        inner.next_conn_id += 1;
        let id = inner.next_conn_id;
        inner.kiosks.insert(id, KioskConn { terminal_id: terminal_id.to_string(), tx });
        id
    }

    pub fn kiosk_disconnected(&self, kiosk_id: u64) {
        self.lock().kiosks.remove(&kiosk_id);
    }

    /// Tell every kiosk of a terminal. A kiosk whose queue is full already has signals to
    /// handle; this one is dropped (each signal makes it look at the terminal afresh).
    pub fn signal_kiosks(&self, terminal_id: &str, signal: KioskSignal) {
        for kiosk in self.lock().kiosks.values().filter(|k| k.terminal_id == terminal_id) {
            let _ = kiosk.tx.try_send(signal);
        }
    }

    /// The card on the terminal's reader, if any.
    pub fn present_card(&self, terminal_id: &str) -> Option<PresentCard> {
        self.lock().agents.get(terminal_id).and_then(|a| a.status.card.clone())
    }

    /// How many commands have been handed to a terminal's agent since start.
    pub fn commands_sent(&self, terminal_id: &str) -> u64 {
        self.lock().commands_sent.get(terminal_id).copied().unwrap_or(0)
    }

    /// Terminals whose agent is connected.
    pub fn online_terminals(&self) -> Vec<String> {
        self.lock().agents.keys().cloned().collect()
    }

    /// Connected agents (with when each was last heard from), pages and kiosks, now; the
    /// connection gauges of `/metrics` are set from it.
    pub fn snapshot(&self) -> HubSnapshot {
        let snapshot = {
            let inner = self.lock();
            HubSnapshot {
                agents: inner
                    .agents
                    .iter()
                    .map(|(id, a)| AgentSnapshot { terminal_id: id.clone(), status: a.status.clone(), last_seen_ms: a.last_seen_ms })
                    .collect(),
                last_seen: inner.last_seen.clone(),
                pages: inner.pages.len(),
                kiosks: inner.kiosks.len(),
            }
        };
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics.connected_agents.set(gauge(snapshot.agents.len()));
        self.metrics.connected_pages.set(gauge(snapshot.pages));
        self.metrics.connected_kiosks.set(gauge(snapshot.kiosks));
        snapshot
    }

    /// Commands sent and failed since the start, and round trips over the last `window_ms`.
    pub fn command_figures(&self, window_ms: i64) -> CommandFigures {
        use std::sync::atomic::Ordering::Relaxed;
        CommandFigures {
            sent: self.sent.load(Relaxed),
            failed: self.failed.load(Relaxed),
            window: self.commands.figures(self.clock.now_ms(), window_ms),
        }
    }
}

/// What an agent said of itself in its hello.
#[derive(Debug, Clone)]
pub struct AgentHello {
    pub backend: String,
    pub agent_version: String,
    pub policy: LocalPolicyReport,
}
