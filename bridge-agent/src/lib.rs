//! The bridge agent (`cardbridge-agent`): a tiny, card-agnostic executor of signed server commands.
//!
//! The agent only dials out. It authenticates each connection by signing the server's challenge
//! with the terminal key, reports reader and card events, and runs APDU batches the server signed.
//! Card knowledge (EMV reads, purse loads) lives on the server; the agent never interprets a
//! response (a batch's conditions compare bytes the server named, see `docs/protocol.md`).
//!
//! # Layout
//!
//! - [`state`]: the state directory (`terminal.key`, `terminal.toml`, `policy.toml`).
//! - [`config`]: [`AgentConfig`], loaded from the state directory; URLs of the server endpoints.
//! - [`policy`]: the terminal owner's local policy (read-only terminal, allowed readers).
//! - [`enrol`]: `enrol` and pairing links over the server's HTTP API.
//! - [`session`]: the WebSocket connection: handshake, command verification, replies, reconnects.
//! - [`sessions`]: the connection sessions this terminal joined, persisted so that a restarted
//!   agent never joins one again.
//! - `execute`: one verified command → local policy → reader thread → outcome.
//! - [`backend`]: the [`ReaderBackend`] trait, the reader thread ([`ReaderHandle`]) and the
//!   `virtual` and `pcsc` backends.
//! - [`console`]: `--console` for tapping simulated cards.
//! - [`backoff`]: reconnect delays.
//!
//! # Invariants
//!
//! - Nothing reaches a card unless its command verified against the server key pinned at
//!   enrolment, was addressed to this terminal and to the current connection's session, is
//!   unexpired, was never seen before (one [`protocol::envelope::CommandVerifier`] per process,
//!   kept across reconnects; a session is never joined twice, also across restarts), and passed
//!   the local policy.
//! - Blocking reader calls run only on the reader thread; the async side waits on channels.
//! - Logs carry command ids, reasons and reader names, never APDUs, responses or keys.
//! - Only `protocol` knows the wire format: internal types ([`backend::ReaderStatus`],
//!   [`backend::BackendEvent`]) are converted at the edge.

pub mod backend;
pub mod backoff;
pub mod config;
pub mod console;
pub mod enrol;
mod execute;
pub mod policy;
pub mod session;
pub mod sessions;
pub mod state;

pub use backend::{BackendError, BackendEvent, EventSink, ReaderBackend, ReaderChoice, ReaderHandle};
pub use config::{AgentConfig, ConnectionSettings};
pub use enrol::{enrol, request_pairing, Enrolment};
pub use execute::to_card_batch;
pub use policy::LocalPolicy;
pub use session::{run, run_with_reader};

/// Milliseconds since the Unix epoch, the clock commands are stamped with.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
