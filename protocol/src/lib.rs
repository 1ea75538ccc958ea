//! The wire format of cardbridge: every message that crosses a process boundary.
//!
//! # Layout
//!
//! - [`agent`]: frames between the bridge agent and the server over `/ws/agent`, including the
//!   signed command envelope ([`agent::SignedCommand`]) and the signed reply ([`agent::SignedReply`]).
//! - [`page`]: frames between the page module (WebAssembly) and the server over `/ws/page`.
//! - [`kiosk`]: frames between the top-up kiosk page and the server over `/ws/kiosk`.
//! - [`api`]: JSON bodies of the HTTP API used by the pages and scripts.
//! - [`admin`]: run-state monitoring (R3.8): `/ws/admin` frames, the alarm and monitor API
//!   bodies, the alarm webhook's body, `/readyz`'s answer.
//! - [`settlement`]: daily settlement (R3.7): the bodies of `/api/admin/settlements`.
//! - [`cluster`]: calls, answers and events between server instances sharing one PostgreSQL
//!   database (the PostgreSQL notifications and the `cluster_message` table).
//! - [`bank`]: the bank-gateway API (`/v1/…`) and, with `crypto`, its HMAC request/reply signatures.
//! - [`envelope`] (feature `crypto`): Ed25519 signing and verification of commands, replies and the
//!   connection challenge, with replay protection.
//! - [`checkpoint`] (feature `crypto`): the signed checkpoint of the audit log's head.
//!
//! Architecture invariant: this is the only crate that knows the wire format. Types elsewhere are
//! internal and never `Serialize`; they are converted to and from the types here at the edges.

pub mod admin;
pub mod agent;
pub mod api;
pub mod bank;
pub mod bytes;
pub mod cluster;
#[cfg(feature = "crypto")]
pub mod checkpoint;
#[cfg(feature = "crypto")]
pub mod envelope;
pub mod kiosk;
pub mod page;
pub mod settlement;

pub use bytes::HexBytes;

/// Version of the wire protocol. Bumped on any incompatible change; peers refuse other versions.
///
/// Version 2: commands carry the `session` of the connection they were issued for.
/// Version 3: batch groups may carry conditions (`when`); an agent that ignored them would run
/// commands the server meant to skip.
pub const PROTOCOL_VERSION: u16 = 3;

/// Decode one JSON text frame into a message, with a typed error.
pub fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, DecodeError> {
    serde_json::from_str(text).map_err(|e| DecodeError(e.to_string()))
}

/// Encode a message as one JSON text frame.
pub fn encode<T: serde::Serialize>(message: &T) -> String {
    // Serialising these plain data types cannot fail (no maps with non-string keys, no I/O).
    serde_json::to_string(message).expect("wire messages always serialise")
}

/// A frame that is not a valid message of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed frame: {0}")]
pub struct DecodeError(pub String);
