//! ISO 7816 APDUs, BER-TLV, the EMV/PBOC card-number read, and the card simulator
//!
//! # Layout
//!
//! - [`apdu`]: command APDUs, status words, and [`apdu::exchange`], the one place that follows
//!   `61xx` and `6Cxx`.
//! - [`crypto`]: DES, triple DES, ISO 9797-1 MACs, EMV key derivation (cryptograms, purse MACs).
//! - [`batch`]: groups of APDUs run in one agent round trip; the agent runs them with
//!   [`batch::execute`].
//! - [`tlv`]: the BER-TLV decoder (hostile input is an error, never a panic).
//! - [`pan`]: the card-number newtype; Debug and Display are masked.
//! - [`emv`]: the server-side read as a state machine emitting batches ([`emv::ReadSession`]).
//! - [`purse`]: the PBOC e-purse, host side: balance read, the authenticated inquiry
//!   ([`purse::inquiry_batch`]), the load as a state machine emitting batches
//!   ([`purse::LoadSession`]), and the resolution of a torn load ([`purse::RecoverySession`]).
//! - [`sim`]: simulated cards speaking real APDUs: replays of recorded cards, small card models,
//!   and a wrapper that misbehaves.
//!
//! Architecture invariant: the card logic (APDUs, TLV, the EMV read, the purse) does no I/O; the transport is
//! always a `transmit` function handed in by the caller. Only the simulator's `sim::vpcd` front
//! touches the network (it connects a simulated card to vsmartcard's vpcd).

pub mod apdu;
pub mod batch;
pub mod crypto;
pub mod emv;
pub mod pan;
pub mod purse;
pub mod sim;
pub mod tlv;
