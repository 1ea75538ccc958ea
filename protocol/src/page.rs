//! Frames between the page module and the server (`/ws/page`), one JSON text frame each.
//!
//! The server knows the user from the session cookie and the terminal from the browser's pairing
//! cookie; the page never names either. Flow: the server sends [`ServerToPage::State`]; when the
//! user has not yet decided for this terminal it sends [`ServerToPage::ConsentNeeded`]; the page
//! answers [`PageToServer::Consent`]; the page sends [`PageToServer::Arm`]; when a card is tapped
//! the server reads it through the agent and sends [`ServerToPage::CardNumber`], which the module
//! puts into the marked input before clicking the marked submit button.

use serde::{Deserialize, Serialize};

/// Page → server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PageToServer {
    /// The user's answer to "may this terminal read cards for you?" (S200).
    Consent { decision: ConsentDecision },
    /// Wait for a card on this terminal and read it (S300).
    Arm,
    /// Stop waiting for a card.
    Disarm,
    /// Demo terminals only: tap a simulated card from the demo card tray.
    DemoTap { card: String },
    /// Demo terminals only: take the simulated card away.
    DemoRemove,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentDecision {
    AllowOnce,
    AllowAlways,
    Deny,
}

/// Server → page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerToPage {
    /// The terminal as this user may use it now. Sent on connect and whenever it changes.
    State(TerminalView),
    /// The user must decide whether this terminal may read cards for them.
    ConsentNeeded { terminal_name: String },
    /// Armed: waiting for a card to be tapped.
    WaitingForCard,
    /// A card is present and being read.
    Reading,
    /// The card number, read on this terminal. `read_id` proves it at submit time.
    CardNumber { read_id: String, card_number: String, kind: CardKind },
    /// Nothing will be sent to the terminal, and why.
    Refused { reason: Refusal },
    /// The read failed; the page may ask to tap again.
    ReadFailed { reason: ReadFailure },
}

/// Everything the page shows about its terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalView {
    pub terminal_id: String,
    pub terminal_name: String,
    pub agent_online: bool,
    pub permitted: bool,
    pub consent: ConsentState,
    pub card_present: bool,
    pub armed: bool,
    /// The agent runs the virtual reader: the demo card tray may be used.
    pub demo_reader: bool,
    /// Names of the simulated cards the tray offers (empty unless `demo_reader`).
    pub demo_cards: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentState {
    /// Not yet asked in this session.
    Unknown,
    /// Allowed for this session only.
    AllowedOnce,
    /// Allowed until the user revokes it.
    AllowedAlways,
    Denied,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardKind {
    /// A bank card (EMV/PBOC); the number is the PAN.
    Bank,
    /// Any other IC card, identified by its UID.
    Uid,
}

/// Why a read will not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    NotLoggedIn,
    /// This browser is not paired with a terminal (or its pairing was revoked).
    NotPaired,
    /// An admin switched this terminal's permission off.
    TerminalForbidden,
    /// The user denied this terminal.
    ConsentDenied,
    /// The user has not answered the consent question yet.
    ConsentRequired,
    /// The terminal's agent is not connected.
    AgentOffline,
    /// The terminal was revoked by an admin.
    TerminalRevoked,
    /// The demo card tray is only for terminals running the virtual reader.
    NotADemoTerminal,
    /// The frame was not understood.
    BadRequest,
    /// Too many arms or reads in a short time on this terminal or by this user: wait a moment.
    TooManyRequests,
    /// The server could not check the permission (a failure of ours, not a refusal): try again later.
    Unavailable,
}

/// Why a read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFailure {
    /// The card was taken away during the read: tap again.
    CardRemoved,
    /// The card answered, but no card number could be found.
    UnsupportedCard,
    /// The terminal did not answer in time.
    Timeout,
    /// The reader failed.
    ReaderError,
    /// The terminal owner's local policy refused the read.
    PolicyRefused,
}
