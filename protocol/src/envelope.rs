//! Ed25519 signing and verification of commands, replies, the connection challenge and pairing
//! requests.
//!
//! Every signature covers a domain-separation prefix and the exact bytes that travel, so the
//! verifier never re-serialises: it checks the signature over the received text, then parses it.

use std::collections::HashMap;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::agent::{Command, Reply, SignedCommand, SignedReply};
use crate::{HexBytes, PROTOCOL_VERSION};

const COMMAND_DOMAIN: &[u8] = b"cardbridge/command/v1\0";
const REPLY_DOMAIN: &[u8] = b"cardbridge/reply/v1\0";
const CHALLENGE_DOMAIN: &[u8] = b"cardbridge/challenge/v1\0";
const PAIRING_DOMAIN: &[u8] = b"cardbridge/pairing/v1\0";

/// Longest validity a command may claim; anything longer is refused as malformed.
pub const MAX_COMMAND_LIFETIME_MS: i64 = 5 * 60 * 1000;
/// Clock skew tolerated between server and agent.
pub const CLOCK_SKEW_MS: i64 = 30 * 1000;

/// Why a signed command or reply was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("signature does not verify")]
    BadSignature,
    #[error("malformed envelope: {0}")]
    Malformed(String),
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    #[error("addressed to another terminal")]
    WrongTerminal,
    #[error("expired")]
    Expired,
    #[error("issued in the future")]
    NotYetValid,
    #[error("nonce already seen (replay)")]
    Replayed,
    #[error("reply is bound to another command")]
    WrongCommand,
}

fn prefixed(domain: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(domain.len() + payload.len());
    message.extend_from_slice(domain);
    message.extend_from_slice(payload);
    message
}

fn signature_from(bytes: &HexBytes) -> Result<Signature, VerifyError> {
    let array: [u8; 64] = bytes
        .0
        .as_slice()
        .try_into()
        .map_err(|_| VerifyError::Malformed("signature must be 64 bytes".into()))?;
    Ok(Signature::from_bytes(&array))
}

/// Parse a 32-byte Ed25519 public key.
pub fn verifying_key(bytes: &[u8]) -> Result<VerifyingKey, VerifyError> {
    let array: [u8; 32] =
        bytes.try_into().map_err(|_| VerifyError::Malformed("public key must be 32 bytes".into()))?;
    VerifyingKey::from_bytes(&array).map_err(|_| VerifyError::Malformed("invalid public key".into()))
}

/// A fresh random nonce (16 bytes).
pub fn fresh_nonce() -> HexBytes {
    use rand::RngCore;
    let mut nonce = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    HexBytes(nonce.to_vec())
}

/// A fresh Ed25519 key pair from the operating system's random source.
pub fn generate_key() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

impl SignedCommand {
    /// Sign `command` with the server key.
    pub fn sign(command: &Command, server_key: &SigningKey) -> SignedCommand {
        let payload = crate::encode(command);
        let signature = server_key.sign(&prefixed(COMMAND_DOMAIN, payload.as_bytes()));
        SignedCommand { payload, signature: HexBytes(signature.to_bytes().to_vec()) }
    }
}

impl SignedReply {
    /// Sign `reply` with the terminal key.
    pub fn sign(reply: &Reply, terminal_key: &SigningKey) -> SignedReply {
        let payload = crate::encode(reply);
        let signature = terminal_key.sign(&prefixed(REPLY_DOMAIN, payload.as_bytes()));
        SignedReply { payload, signature: HexBytes(signature.to_bytes().to_vec()) }
    }

    /// Verify the terminal's signature and that the reply answers `command_id` from `terminal_id`.
    pub fn verify(
        &self,
        terminal_key: &VerifyingKey,
        terminal_id: &str,
        command_id: &str,
    ) -> Result<Reply, VerifyError> {
        let signature = signature_from(&self.signature)?;
        terminal_key
            .verify(&prefixed(REPLY_DOMAIN, self.payload.as_bytes()), &signature)
            .map_err(|_| VerifyError::BadSignature)?;
        let reply: Reply =
            serde_json::from_str(&self.payload).map_err(|e| VerifyError::Malformed(e.to_string()))?;
        if reply.terminal_id != terminal_id {
            return Err(VerifyError::WrongTerminal);
        }
        if reply.command_id != command_id {
            return Err(VerifyError::WrongCommand);
        }
        Ok(reply)
    }

    /// The command id a reply claims to answer, read without verification (for routing only).
    pub fn claimed_command_id(&self) -> Option<String> {
        serde_json::from_str::<Reply>(&self.payload).ok().map(|r| r.command_id)
    }
}

/// The bytes an agent signs to authenticate a connection.
pub fn challenge_message(nonce: &[u8], terminal_id: &str) -> Vec<u8> {
    let mut message = prefixed(CHALLENGE_DOMAIN, nonce);
    message.extend_from_slice(terminal_id.as_bytes());
    message
}

/// Sign a connection challenge with the terminal key.
pub fn sign_challenge(nonce: &[u8], terminal_id: &str, terminal_key: &SigningKey) -> HexBytes {
    HexBytes(terminal_key.sign(&challenge_message(nonce, terminal_id)).to_bytes().to_vec())
}

/// Check an agent's signature over a connection challenge.
pub fn verify_challenge(
    nonce: &[u8],
    terminal_id: &str,
    signature: &HexBytes,
    terminal_key: &VerifyingKey,
) -> Result<(), VerifyError> {
    let signature = signature_from(signature)?;
    terminal_key
        .verify(&challenge_message(nonce, terminal_id), &signature)
        .map_err(|_| VerifyError::BadSignature)
}

/// The bytes an agent signs to ask for a pairing link.
pub fn pairing_message(terminal_id: &str, issued_at_ms: i64) -> Vec<u8> {
    let mut message = prefixed(PAIRING_DOMAIN, terminal_id.as_bytes());
    message.push(0);
    message.extend_from_slice(&issued_at_ms.to_be_bytes());
    message
}

pub fn sign_pairing(terminal_id: &str, issued_at_ms: i64, terminal_key: &SigningKey) -> HexBytes {
    HexBytes(terminal_key.sign(&pairing_message(terminal_id, issued_at_ms)).to_bytes().to_vec())
}

pub fn verify_pairing(
    terminal_id: &str,
    issued_at_ms: i64,
    signature: &HexBytes,
    terminal_key: &VerifyingKey,
) -> Result<(), VerifyError> {
    let signature = signature_from(signature)?;
    terminal_key
        .verify(&pairing_message(terminal_id, issued_at_ms), &signature)
        .map_err(|_| VerifyError::BadSignature)
}

/// The agent's side: verifies commands against the pinned server key and remembers nonces until
/// their command expires, so that no command runs twice.
#[derive(Debug)]
pub struct CommandVerifier {
    server_key: VerifyingKey,
    terminal_id: String,
    /// nonce → expiry of the command that carried it.
    seen: HashMap<Vec<u8>, i64>,
}

impl CommandVerifier {
    pub fn new(server_key: VerifyingKey, terminal_id: impl Into<String>) -> Self {
        CommandVerifier { server_key, terminal_id: terminal_id.into(), seen: HashMap::new() }
    }

    /// Verify a signed command at time `now_ms`. On success the nonce is remembered.
    pub fn verify(&mut self, signed: &SignedCommand, now_ms: i64) -> Result<Command, VerifyError> {
        let signature = signature_from(&signed.signature)?;
        self.server_key
            .verify(&prefixed(COMMAND_DOMAIN, signed.payload.as_bytes()), &signature)
            .map_err(|_| VerifyError::BadSignature)?;
        let command: Command = serde_json::from_str(&signed.payload)
            .map_err(|e| VerifyError::Malformed(e.to_string()))?;
        if command.v != PROTOCOL_VERSION {
            return Err(VerifyError::UnsupportedVersion(command.v));
        }
        if command.terminal_id != self.terminal_id {
            return Err(VerifyError::WrongTerminal);
        }
        if command.expires_at_ms <= command.issued_at_ms
            || command.expires_at_ms - command.issued_at_ms > MAX_COMMAND_LIFETIME_MS
        {
            return Err(VerifyError::Malformed("validity window out of bounds".into()));
        }
        if command.issued_at_ms > now_ms + CLOCK_SKEW_MS {
            return Err(VerifyError::NotYetValid);
        }
        if command.expires_at_ms + CLOCK_SKEW_MS < now_ms {
            return Err(VerifyError::Expired);
        }
        if command.nonce.0.len() < 16 {
            return Err(VerifyError::Malformed("nonce must be at least 16 bytes".into()));
        }
        self.seen.retain(|_, expires| *expires + CLOCK_SKEW_MS >= now_ms);
        if self.seen.contains_key(&command.nonce.0) {
            return Err(VerifyError::Replayed);
        }
        self.seen.insert(command.nonce.0.clone(), command.expires_at_ms);
        Ok(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{CommandBody, Outcome};

    const NOW: i64 = 1_800_000_000_000;

    fn command(terminal_id: &str) -> Command {
        Command {
            v: PROTOCOL_VERSION,
            terminal_id: terminal_id.into(),
            command_id: "cmd-1".into(),
            issued_at_ms: NOW,
            expires_at_ms: NOW + 30_000,
            nonce: fresh_nonce(),
            body: CommandBody::SimulateRemove,
        }
    }

    #[test]
    fn a_signed_command_verifies_once() {
        let server = generate_key();
        let mut verifier = CommandVerifier::new(server.verifying_key(), "t1");
        let signed = SignedCommand::sign(&command("t1"), &server);

        let first = verifier.verify(&signed, NOW + 10);
        let second = verifier.verify(&signed, NOW + 20);

        assert_eq!(first.unwrap().command_id, "cmd-1");
        assert_eq!(second, Err(VerifyError::Replayed));
    }

    #[test]
    fn a_tampered_body_is_refused() {
        let server = generate_key();
        let mut verifier = CommandVerifier::new(server.verifying_key(), "t1");
        let mut signed = SignedCommand::sign(&command("t1"), &server);
        signed.payload = signed.payload.replace("simulate_remove", "simulate_tap");

        assert_eq!(verifier.verify(&signed, NOW), Err(VerifyError::BadSignature));
    }

    #[test]
    fn a_command_signed_by_another_key_is_refused() {
        let server = generate_key();
        let impostor = generate_key();
        let mut verifier = CommandVerifier::new(server.verifying_key(), "t1");
        let signed = SignedCommand::sign(&command("t1"), &impostor);

        assert_eq!(verifier.verify(&signed, NOW), Err(VerifyError::BadSignature));
    }

    #[test]
    fn a_command_for_another_terminal_is_refused() {
        let server = generate_key();
        let mut verifier = CommandVerifier::new(server.verifying_key(), "t1");
        let signed = SignedCommand::sign(&command("t2"), &server);

        assert_eq!(verifier.verify(&signed, NOW), Err(VerifyError::WrongTerminal));
    }

    #[test]
    fn an_expired_command_is_refused() {
        let server = generate_key();
        let mut verifier = CommandVerifier::new(server.verifying_key(), "t1");
        let signed = SignedCommand::sign(&command("t1"), &server);

        let late = NOW + 30_000 + CLOCK_SKEW_MS + 1;
        assert_eq!(verifier.verify(&signed, late), Err(VerifyError::Expired));
    }

    #[test]
    fn a_command_from_the_future_is_refused() {
        let server = generate_key();
        let mut verifier = CommandVerifier::new(server.verifying_key(), "t1");
        let signed = SignedCommand::sign(&command("t1"), &server);

        let early = NOW - CLOCK_SKEW_MS - 1;
        assert_eq!(verifier.verify(&signed, early), Err(VerifyError::NotYetValid));
    }

    #[test]
    fn an_unknown_version_is_refused() {
        let server = generate_key();
        let mut verifier = CommandVerifier::new(server.verifying_key(), "t1");
        let mut c = command("t1");
        c.v = PROTOCOL_VERSION + 1;
        let signed = SignedCommand::sign(&c, &server);

        assert_eq!(verifier.verify(&signed, NOW), Err(VerifyError::UnsupportedVersion(2)));
    }

    #[test]
    fn an_overlong_validity_is_refused() {
        let server = generate_key();
        let mut verifier = CommandVerifier::new(server.verifying_key(), "t1");
        let mut c = command("t1");
        c.expires_at_ms = c.issued_at_ms + MAX_COMMAND_LIFETIME_MS + 1;
        let signed = SignedCommand::sign(&c, &server);

        assert!(matches!(verifier.verify(&signed, NOW), Err(VerifyError::Malformed(_))));
    }

    #[test]
    fn a_truncated_signature_is_malformed_not_a_panic() {
        let server = generate_key();
        let mut verifier = CommandVerifier::new(server.verifying_key(), "t1");
        let mut signed = SignedCommand::sign(&command("t1"), &server);
        signed.signature.0.truncate(10);

        assert!(matches!(verifier.verify(&signed, NOW), Err(VerifyError::Malformed(_))));
    }

    #[test]
    fn a_reply_is_bound_to_its_command_and_terminal() {
        let terminal = generate_key();
        let reply = Reply { terminal_id: "t1".into(), command_id: "cmd-1".into(), outcome: Outcome::Done };
        let signed = SignedReply::sign(&reply, &terminal);
        let key = terminal.verifying_key();

        assert_eq!(signed.verify(&key, "t1", "cmd-1").unwrap(), reply);
        assert_eq!(signed.verify(&key, "t1", "cmd-2"), Err(VerifyError::WrongCommand));
        assert_eq!(signed.verify(&key, "t2", "cmd-1"), Err(VerifyError::WrongTerminal));
        assert_eq!(signed.verify(&generate_key().verifying_key(), "t1", "cmd-1"), Err(VerifyError::BadSignature));
    }

    #[test]
    fn a_challenge_signature_is_bound_to_nonce_and_terminal() {
        let terminal = generate_key();
        let key = terminal.verifying_key();
        let signature = sign_challenge(b"nonce-a", "t1", &terminal);

        assert!(verify_challenge(b"nonce-a", "t1", &signature, &key).is_ok());
        assert_eq!(verify_challenge(b"nonce-b", "t1", &signature, &key), Err(VerifyError::BadSignature));
        assert_eq!(verify_challenge(b"nonce-a", "t2", &signature, &key), Err(VerifyError::BadSignature));
    }

    #[test]
    fn frames_round_trip_through_json() {
        use crate::agent::{ApduBatch, ApduGroup, GroupMode};
        let body = CommandBody::Transmit {
            reader: None,
            batch: ApduBatch {
                groups: vec![ApduGroup { mode: GroupMode::Sequence, apdus: vec![HexBytes(vec![0, 0xA4])] }],
            },
        };
        let text = crate::encode(&body);
        assert_eq!(text, r#"{"op":"transmit","reader":null,"batch":{"groups":[{"mode":"sequence","apdus":["00A4"]}]}}"#);
        assert_eq!(crate::decode::<CommandBody>(&text).unwrap(), body);
        assert!(crate::decode::<CommandBody>(r#"{"op":"format_disk"}"#).is_err());
    }
}
