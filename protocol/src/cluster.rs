//! Messages between server instances sharing one PostgreSQL database: calls to the instance that
//! holds a terminal's agent (and their answers), and the events every instance hears.
//!
//! Calls and answers travel in the `cluster_message` table, sealed with the instances' shared key
//! (an answer to a command holds the card's APDU answers); the PostgreSQL notification that
//! announces one carries only its row id. Events are small and carry ids only: they travel in
//! the notification itself.

use serde::{Deserialize, Serialize};

use crate::agent::{CommandBody, LocalPolicyReport, Outcome, ReaderInfo};
use crate::page::ServerToPage;
use crate::HexBytes;

/// Version of the messages between instances; an instance drops messages of another version.
pub const CLUSTER_VERSION: u16 = 1;

/// One sealed message: a call to the instance holding an agent, or the answer to one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub v: u16,
    /// The sending instance (answers go back to it).
    pub from: String,
    /// The caller's id for the call; an answer repeats it.
    pub call_id: u64,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    Call { call: Call },
    Answer { answer: Answer },
    /// A frame for a page connected to the recipient (from a read run on the instance holding the
    /// agent); `disarm`: the page waits for no card any more (it got its number, or a refusal).
    PageFrame { page_id: u64, disarm: bool, frame: ServerToPage },
}

/// The page a read is for, on the instance that asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub page_id: u64,
    pub user_id: String,
    /// The SHA-256 of the page's session token (never the token).
    pub session_hash: String,
    pub pairing_id: String,
}

/// What one instance asks of the instance that holds a terminal's agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Call {
    /// The agent's status (online, readers, policy, card present).
    Status { terminal_id: String },
    /// Claim the card on the reader for one read (one read per tap; one read at a time).
    ClaimCard { terminal_id: String },
    /// The claimed read is over.
    EndRead { terminal_id: String },
    /// Sign and send a command to the agent on its connection; answer with its outcome.
    Command { terminal_id: String, body: CommandBody },
    /// Read the card on the terminal's reader for a page of the caller (S200 checks, the read,
    /// S400 delivery through `PageFrame`s), here where the agent is.
    ReadForPage { terminal_id: String, page: Page },
}

/// The answer to a [`Call`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Answer {
    Status { status: Option<AgentStatus> },
    /// The claimed card; `None`: no card, already read, a read running, or no agent here.
    Card { card: Option<PresentCard> },
    Done,
    Outcome { result: CommandResult },
    /// Whether a read ran (`false`: no card to claim, already read, or another read running).
    Read { read: bool },
}

/// A command's outcome, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CommandResult {
    Ok { outcome: Outcome },
    Offline,
    Timeout,
    Disconnected,
    BadReply { reason: String },
}

/// A connected agent as its instance knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub backend: String,
    pub agent_version: String,
    pub policy: LocalPolicyReport,
    pub readers: Vec<ReaderInfo>,
    pub card: Option<PresentCard>,
    pub card_read: bool,
}

/// The card on one of the terminal's readers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresentCard {
    pub reader: String,
    pub atr: HexBytes,
}

/// What every instance hears (in the notification itself: ids only, never card data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub v: u16,
    pub from: String,
    #[serde(flatten)]
    pub what: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// A terminal's state changed (agent connected or gone, permission, consent): pages and
    /// kiosks of it refresh their view.
    TerminalChanged { terminal_id: String },
    /// A card appeared on a terminal's reader: an armed page or a kiosk of it may read it.
    CardPresent { terminal_id: String },
    /// The card left a terminal's reader.
    CardRemoved { terminal_id: String },
    /// A terminal's agent connected to the sending instance: another instance still holding an
    /// older connection of it closes that one.
    AgentConnected { terminal_id: String },
    /// The terminal was revoked: the instance holding its agent closes the connection.
    TerminalRevoked { terminal_id: String },
    /// A top-up changed state: kiosks following it reload it.
    TopUpChanged { topup_id: String },
    /// A top-up was recorded (or needs the bank worker): the instance running the worker wakes it.
    WorkerWake,
}
