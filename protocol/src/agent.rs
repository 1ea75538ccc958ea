//! Frames between the bridge agent and the server (`/ws/agent`), one JSON text frame each.
//!
//! Connection: the server sends [`ServerToAgent::Challenge`]; the agent answers with
//! [`AgentToServer::Hello`] carrying its signature over the challenge; the server answers
//! [`ServerToAgent::Welcome`] or [`ServerToAgent::Refused`] and closes. After that the server sends
//! only [`ServerToAgent::Command`] (signed) and the agent sends events and signed replies.

use serde::{Deserialize, Serialize};

use crate::HexBytes;

/// Server → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerToAgent {
    /// First frame on every connection: a fresh random nonce the agent must sign.
    Challenge { protocol_version: u16, nonce: HexBytes, server_time_ms: i64 },
    /// The agent is authenticated.
    Welcome { terminal_id: String, terminal_name: String },
    /// The connection is refused; the server closes it after this frame.
    Refused { reason: ConnectRefusal },
    /// A signed command (see [`crate::envelope`]).
    Command(SignedCommand),
}

/// Why the server refused an agent connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectRefusal {
    UnsupportedVersion,
    UnknownTerminal,
    BadSignature,
    TerminalRevoked,
    Malformed,
    /// The agent runs the virtual (simulated) reader and the server is not in demo mode.
    VirtualReaderRefused,
}

/// Agent → server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentToServer {
    /// Answer to the challenge: Ed25519 signature by the terminal key over
    /// [`crate::envelope::challenge_message`].
    Hello {
        protocol_version: u16,
        terminal_id: String,
        signature: HexBytes,
        agent_version: String,
        backend: String,
        policy: LocalPolicyReport,
    },
    /// A reader or card event.
    Event(ReaderEvent),
    /// A signed reply to a command.
    Reply(SignedReply),
}

/// What the terminal owner's local policy allows, reported to the server and shown to admins.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LocalPolicyReport {
    /// Write/credit instructions are refused even when signed.
    pub read_only: bool,
    /// Readers this agent may use; empty means all.
    pub allowed_readers: Vec<String>,
}

/// Reader and card events, sent as they happen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ReaderEvent {
    /// The full list of readers and their state (sent on connect and whenever it changes).
    Readers { readers: Vec<ReaderInfo> },
    /// A card was inserted or tapped.
    CardPresent { reader: String, atr: HexBytes },
    /// The card was removed.
    CardRemoved { reader: String },
}

/// One reader as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReaderInfo {
    pub name: String,
    pub state: ReaderState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ReaderState {
    Empty,
    CardPresent,
    /// The reader or the PC/SC service is not available right now.
    Unavailable,
}

/// A command as signed by the server. Travels inside [`SignedCommand::payload`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Protocol version the command was issued under.
    pub v: u16,
    pub terminal_id: String,
    /// The connection this command belongs to: [`crate::envelope::session_id`] of the connection's
    /// challenge nonce and the terminal id. The agent refuses a command of any other connection.
    pub session: HexBytes,
    pub command_id: String,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    /// Random, never reused: the agent refuses a nonce it has seen before.
    pub nonce: HexBytes,
    pub body: CommandBody,
}

/// What the agent is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CommandBody {
    /// Exchange a batch of APDUs with the card in `reader` (or the only card present).
    Transmit { reader: Option<String>, batch: ApduBatch },
    /// Virtual reader only: present the named simulated card, as if tapped.
    SimulateTap { card: String },
    /// Virtual reader only: take the simulated card away.
    SimulateRemove,
}

/// APDUs sent to the card in one round trip. The groups run in order; within a group the mode says
/// when to stop. The agent handles `61xx` (GET RESPONSE) and `6Cxx` (resend with Le) itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApduBatch {
    pub groups: Vec<ApduGroup>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApduGroup {
    pub mode: GroupMode,
    pub apdus: Vec<HexBytes>,
    /// Since protocol version 3: the group runs only if every condition holds on the responses
    /// of the earlier groups of the batch; otherwise it is skipped and answers no response.
    /// Absent (empty): the group always runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// A condition on an earlier group of the same batch. It compares bytes and nothing else: the
/// agent never interprets a response. A condition naming a group that is not an earlier one, or an
/// APDU that did not run, does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Group `group` ran (was not skipped).
    Ran { group: u16 },
    /// The response (data and status word) to APDU `apdu` of group `group` is `len` bytes long and
    /// holds each segment's bytes at the segment's offset; other bytes may be anything.
    Response { group: u16, apdu: u16, len: u16, segments: Vec<Segment> },
}

/// Bytes expected at offset `at` of a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub at: u16,
    pub bytes: HexBytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupMode {
    /// Run each APDU in turn; stop the group after the first whose status word is not `9000`.
    Sequence,
    /// Try each APDU in turn; stop the group after the first whose status word is `9000`.
    FirstSuccess,
}

/// A reply as signed by the agent. Travels inside [`SignedReply::payload`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub terminal_id: String,
    /// The command this answers; the signature binds the two.
    pub command_id: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// Responses (data and status word) of the APDUs that ran, group by group.
    Transmitted { reader: String, groups: Vec<Vec<HexBytes>> },
    /// The command was carried out and has nothing to return.
    Done,
    /// The command failed on the terminal.
    Failed { error: AgentError, message: String },
}

/// Typed failures the agent reports; the page shows each with its own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentError {
    /// The card left the field during the batch; the outcome of the last APDU is unknown.
    CardRemoved,
    /// The card was reset by another application during the batch.
    CardReset,
    /// No card is present.
    NoCard,
    /// The addressed reader is not there.
    NoReader,
    /// The PC/SC service or the reader is not available.
    ReaderUnavailable,
    /// The terminal owner's local policy refuses this command.
    PolicyRefused,
    /// The card did not answer in time.
    Timeout,
    /// The command is not supported by this agent's reader backend.
    Unsupported,
    /// Any other reader or card failure.
    ReaderError,
}

/// A command with the server's Ed25519 signature over its exact JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCommand {
    pub payload: String,
    pub signature: HexBytes,
}

/// A reply with the agent's Ed25519 signature over its exact JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReply {
    pub payload: String,
    pub signature: HexBytes,
}
