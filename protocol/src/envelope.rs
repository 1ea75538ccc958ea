//! Ed25519 signing and verification of commands, replies, the connection challenge and pairing
//! requests.
//!
//! Every signature covers a domain-separation prefix and the exact bytes that travel, so the
//! verifier never re-serialises: it checks the signature over the received text, then parses it.
//!
//! Every check is `verify_strict`: it refuses small-order (weak) public keys and small-order or
//! non-canonical `R`, with which a signature could be made to verify for almost any message. Public
//! keys are parsed only through [`verifying_key`], which refuses weak keys outright.

use std::collections::HashMap;

use ed25519_dalek::{Signature, Signer};
/// The key types of this module's API.
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::agent::{Command, Reply, SignedCommand, SignedReply};
use crate::{HexBytes, PROTOCOL_VERSION};

const COMMAND_DOMAIN: &[u8] = b"cardbridge/command/v1\0";
const REPLY_DOMAIN: &[u8] = b"cardbridge/reply/v1\0";
const CHALLENGE_DOMAIN: &[u8] = b"cardbridge/challenge/v1\0";
const PAIRING_DOMAIN: &[u8] = b"cardbridge/pairing/v1\0";
const SESSION_DOMAIN: &[u8] = b"cardbridge/session/v1\0";
/// Shortest challenge nonce either side accepts.
pub const MIN_NONCE_LEN: usize = 16;

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
    #[error("issued for another connection")]
    WrongSession,
    #[error("weak (small-order) public key")]
    WeakKey,
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

/// Parse a 32-byte Ed25519 public key, refusing weak (small-order) keys: with one, a signature can
/// be forged that verifies for almost any message (under non-strict verification).
pub fn verifying_key(bytes: &[u8]) -> Result<VerifyingKey, VerifyError> {
    let array: [u8; 32] =
        bytes.try_into().map_err(|_| VerifyError::Malformed("public key must be 32 bytes".into()))?;
    let key =
        VerifyingKey::from_bytes(&array).map_err(|_| VerifyError::Malformed("invalid public key".into()))?;
    if key.is_weak() {
        return Err(VerifyError::WeakKey);
    }
    Ok(key)
}

/// Strict Ed25519 verification of `signature` over `domain ‖ payload`.
fn verify_strict(key: &VerifyingKey, message: &[u8], signature: &HexBytes) -> Result<(), VerifyError> {
    let signature = signature_from(signature)?;
    key.verify_strict(message, &signature).map_err(|_| VerifyError::BadSignature)
}

/// The session of a connection: SHA-256 over a domain prefix, the length and bytes of the
/// server's challenge nonce, and the terminal id. Both sides derive it; every command carries it.
pub fn session_id(challenge_nonce: &[u8], terminal_id: &str) -> HexBytes {
    let mut hash = Sha256::new();
    hash.update(SESSION_DOMAIN);
    hash.update((challenge_nonce.len() as u64).to_be_bytes());
    hash.update(challenge_nonce);
    hash.update(terminal_id.as_bytes());
    HexBytes(hash.finalize().to_vec())
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
        SignedCommand::sign_payload(crate::encode(command), server_key)
    }

    /// Sign the exact text `payload` as a command, whatever it holds: what [`Self::sign`] does
    /// after encoding, and how the fuzzer reaches the verifier's checks behind the signature.
    pub fn sign_payload(payload: String, server_key: &SigningKey) -> SignedCommand {
        let signature = server_key.sign(&prefixed(COMMAND_DOMAIN, payload.as_bytes()));
        SignedCommand { payload, signature: HexBytes(signature.to_bytes().to_vec()) }
    }
}

impl SignedReply {
    /// Sign `reply` with the terminal key.
    pub fn sign(reply: &Reply, terminal_key: &SigningKey) -> SignedReply {
        SignedReply::sign_payload(crate::encode(reply), terminal_key)
    }

    /// Sign the exact text `payload` as a reply (see [`SignedCommand::sign_payload`]).
    pub fn sign_payload(payload: String, terminal_key: &SigningKey) -> SignedReply {
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
        verify_strict(terminal_key, &prefixed(REPLY_DOMAIN, self.payload.as_bytes()), &self.signature)?;
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
    verify_strict(terminal_key, &challenge_message(nonce, terminal_id), signature)
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
    verify_strict(terminal_key, &pairing_message(terminal_id, issued_at_ms), signature)
}

/// The agent's side: verifies commands against the pinned server key, accepts only commands of
/// the current connection's session, and remembers nonces until their command expires, so that no
/// command runs twice in this process. (Across restarts, the agent never joins a session twice;
/// see the agent's `sessions` module.)
#[derive(Debug)]
pub struct CommandVerifier {
    server_key: VerifyingKey,
    terminal_id: String,
    /// The session of the current connection; `None` between connections (every command refused).
    session: Option<HexBytes>,
    /// nonce → expiry of the command that carried it.
    seen: HashMap<Vec<u8>, i64>,
}

impl CommandVerifier {
    pub fn new(server_key: VerifyingKey, terminal_id: impl Into<String>) -> Self {
        CommandVerifier { server_key, terminal_id: terminal_id.into(), session: None, seen: HashMap::new() }
    }

    /// A connection was established: from now on only commands of `session` verify.
    pub fn begin_session(&mut self, session: HexBytes) {
        self.session = Some(session);
    }

    /// The connection ended: no command verifies until the next [`Self::begin_session`].
    pub fn end_session(&mut self) {
        self.session = None;
    }

    /// Verify a signed command at time `now_ms`. On success the nonce is remembered.
    pub fn verify(&mut self, signed: &SignedCommand, now_ms: i64) -> Result<Command, VerifyError> {
        verify_strict(&self.server_key, &prefixed(COMMAND_DOMAIN, signed.payload.as_bytes()), &signed.signature)?;
        let command: Command = serde_json::from_str(&signed.payload)
            .map_err(|e| VerifyError::Malformed(e.to_string()))?;
        if command.v != PROTOCOL_VERSION {
            return Err(VerifyError::UnsupportedVersion(command.v));
        }
        if command.terminal_id != self.terminal_id {
            return Err(VerifyError::WrongTerminal);
        }
        if self.session.as_ref() != Some(&command.session) {
            return Err(VerifyError::WrongSession);
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

/// Encodings of the eight small-order points of edwards25519 (the torsion subgroup: the identity,
/// order 2, two of order 4, four of order 8). As Ed25519 public keys they are "weak": under
/// non-strict verification a signature can be forged that verifies for almost any message. Every
/// one of them is refused by [`verifying_key`]; tests use them as the known weak points.
pub const SMALL_ORDER_POINTS: [&str; 8] = [
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{CommandBody, Outcome};

    const NOW: i64 = 1_800_000_000_000;

    /// The session of connection "A" of terminal t1.
    fn session_a() -> HexBytes {
        session_id(b"challenge-nonce-A", "t1")
    }

    /// A verifier of terminal t1, on connection A.
    fn verifier_for(server: &SigningKey) -> CommandVerifier {
        let mut verifier = CommandVerifier::new(server.verifying_key(), "t1");
        verifier.begin_session(session_a());
        verifier
    }

    fn command(terminal_id: &str) -> Command {
        Command {
            v: PROTOCOL_VERSION,
            terminal_id: terminal_id.into(),
            session: session_a(),
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
        let mut verifier = verifier_for(&server);
        let signed = SignedCommand::sign(&command("t1"), &server);

        let first = verifier.verify(&signed, NOW + 10);
        let second = verifier.verify(&signed, NOW + 20);

        assert_eq!(first.unwrap().command_id, "cmd-1");
        assert_eq!(second, Err(VerifyError::Replayed));
    }

    #[test]
    fn a_tampered_body_is_refused() {
        let server = generate_key();
        let mut verifier = verifier_for(&server);
        let mut signed = SignedCommand::sign(&command("t1"), &server);
        signed.payload = signed.payload.replace("simulate_remove", "simulate_tap");

        assert_eq!(verifier.verify(&signed, NOW), Err(VerifyError::BadSignature));
    }

    #[test]
    fn a_command_signed_by_another_key_is_refused() {
        let server = generate_key();
        let impostor = generate_key();
        let mut verifier = verifier_for(&server);
        let signed = SignedCommand::sign(&command("t1"), &impostor);

        assert_eq!(verifier.verify(&signed, NOW), Err(VerifyError::BadSignature));
    }

    #[test]
    fn a_command_for_another_terminal_is_refused() {
        let server = generate_key();
        let mut verifier = verifier_for(&server);
        let signed = SignedCommand::sign(&command("t2"), &server);

        assert_eq!(verifier.verify(&signed, NOW), Err(VerifyError::WrongTerminal));
    }

    #[test]
    fn an_expired_command_is_refused() {
        let server = generate_key();
        let mut verifier = verifier_for(&server);
        let signed = SignedCommand::sign(&command("t1"), &server);

        let late = NOW + 30_000 + CLOCK_SKEW_MS + 1;
        assert_eq!(verifier.verify(&signed, late), Err(VerifyError::Expired));
    }

    #[test]
    fn a_command_from_the_future_is_refused() {
        let server = generate_key();
        let mut verifier = verifier_for(&server);
        let signed = SignedCommand::sign(&command("t1"), &server);

        let early = NOW - CLOCK_SKEW_MS - 1;
        assert_eq!(verifier.verify(&signed, early), Err(VerifyError::NotYetValid));
    }

    #[test]
    fn an_unknown_version_is_refused() {
        let server = generate_key();
        let mut verifier = verifier_for(&server);
        let mut c = command("t1");
        c.v = PROTOCOL_VERSION + 1;
        let signed = SignedCommand::sign(&c, &server);

        assert_eq!(verifier.verify(&signed, NOW), Err(VerifyError::UnsupportedVersion(PROTOCOL_VERSION + 1)));
    }

    #[test]
    fn an_overlong_validity_is_refused() {
        let server = generate_key();
        let mut verifier = verifier_for(&server);
        let mut c = command("t1");
        c.expires_at_ms = c.issued_at_ms + MAX_COMMAND_LIFETIME_MS + 1;
        let signed = SignedCommand::sign(&c, &server);

        assert!(matches!(verifier.verify(&signed, NOW), Err(VerifyError::Malformed(_))));
    }

    #[test]
    fn a_truncated_signature_is_malformed_not_a_panic() {
        let server = generate_key();
        let mut verifier = verifier_for(&server);
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
    fn a_command_of_another_connection_is_refused() {
        let server = generate_key();
        let mut on_b = CommandVerifier::new(server.verifying_key(), "t1");
        on_b.begin_session(session_id(b"challenge-nonce-B", "t1"));
        let for_a = SignedCommand::sign(&command("t1"), &server);

        assert_eq!(on_b.verify(&for_a, NOW), Err(VerifyError::WrongSession));
    }

    #[test]
    fn a_captured_command_is_refused_by_a_restarted_verifier_on_a_new_connection() {
        let server = generate_key();
        let mut before = verifier_for(&server);
        let captured = SignedCommand::sign(&command("t1"), &server);
        assert!(before.verify(&captured, NOW).is_ok());
        // A new process knows no nonces; only the session binding stands between it and the replay.
        let mut restarted = CommandVerifier::new(server.verifying_key(), "t1");
        restarted.begin_session(session_id(b"challenge-nonce-C", "t1"));

        assert_eq!(restarted.verify(&captured, NOW + 10), Err(VerifyError::WrongSession));
    }

    #[test]
    fn no_command_verifies_between_connections() {
        let server = generate_key();
        let fresh = CommandVerifier::new(server.verifying_key(), "t1");
        let mut ended = verifier_for(&server);
        ended.end_session();
        let signed = SignedCommand::sign(&command("t1"), &server);

        for mut verifier in [fresh, ended] {
            assert_eq!(verifier.verify(&signed, NOW), Err(VerifyError::WrongSession));
        }
    }

    #[test]
    fn the_session_is_bound_to_the_challenge_nonce_and_the_terminal() {
        let a = session_id(b"nonce-1", "t1");

        assert_eq!(a, session_id(b"nonce-1", "t1"));
        assert_eq!(a.0.len(), 32);
        assert_ne!(a, session_id(b"nonce-2", "t1"));
        assert_ne!(a, session_id(b"nonce-1", "t2"));
        // The nonce's length is hashed in: moving bytes between nonce and terminal id changes it.
        assert_ne!(session_id(b"nonce-1t", "1"), session_id(b"nonce-1", "t1"));
    }


    fn small_order_points() -> Vec<[u8; 32]> {
        super::SMALL_ORDER_POINTS.iter().map(|h| hex::decode(h).unwrap().try_into().unwrap()).collect()
    }

    /// A signature `R ‖ s` with `s = 0` and `R` a small-order point that the lenient (cofactorless,
    /// non-strict) check accepts for `message` under the weak `key`, if one of the eight works.
    fn forge(key: &[u8; 32], message: &[u8]) -> Option<HexBytes> {
        use ed25519_dalek::Verifier;
        let key = VerifyingKey::from_bytes(key).unwrap();
        small_order_points().into_iter().find_map(|r| {
            let mut bytes = [0u8; 64];
            bytes[..32].copy_from_slice(&r);
            let signature = Signature::from_bytes(&bytes);
            key.verify(message, &signature).is_ok().then(|| HexBytes(bytes.to_vec()))
        })
    }

    /// `forge` over the messages `make(0)`, `make(1)`, … until one works (each try succeeds for at
    /// least one in eight messages per candidate `R`).
    fn forge_some<T>(key: &[u8; 32], make: impl Fn(u32) -> (T, Vec<u8>)) -> (T, HexBytes) {
        (0..256)
            .find_map(|i| {
                let (value, message) = make(i);
                forge(key, &message).map(|signature| (value, signature))
            })
            .expect("a forgery for a small-order key within 256 messages")
    }

    #[test]
    fn the_test_vectors_are_the_small_order_points() {
        let points = small_order_points();
        for point in &points {
            let key = VerifyingKey::from_bytes(point).expect("a point on the curve");
            assert!(key.is_weak(), "{}", hex::encode(point));
        }
        let distinct: std::collections::HashSet<_> = points.iter().collect();
        assert_eq!(distinct.len(), 8);
        assert!(!generate_key().verifying_key().is_weak());
    }

    #[test]
    fn weak_public_keys_are_refused() {
        for point in small_order_points() {
            assert_eq!(verifying_key(&point), Err(VerifyError::WeakKey), "{}", hex::encode(point));
        }
        assert!(verifying_key(generate_key().verifying_key().as_bytes()).is_ok());
    }

    #[test]
    fn a_hello_forged_for_a_weak_key_is_refused() {
        for point in small_order_points() {
            let (nonce, signature) = forge_some(&point, |i| {
                let nonce = format!("nonce-{i:010}").into_bytes();
                let message = challenge_message(&nonce, "t1");
                (nonce, message)
            });
            // The lenient check would have let it in: `forge` found it with `verify`.
            let key = VerifyingKey::from_bytes(&point).unwrap();

            assert_eq!(verify_challenge(&nonce, "t1", &signature, &key), Err(VerifyError::BadSignature));
        }
    }

    #[test]
    fn commands_replies_and_pairings_forged_for_a_weak_key_are_refused() {
        for point in small_order_points() {
            let key = VerifyingKey::from_bytes(&point).unwrap();
            let (payload, signature) = forge_some(&point, |i| {
                let mut c = command("t1");
                c.command_id = format!("cmd-{i}");
                c.issued_at_ms = NOW;
                let payload = crate::encode(&c);
                (payload.clone(), prefixed(COMMAND_DOMAIN, payload.as_bytes()))
            });
            let mut verifier = CommandVerifier::new(key, "t1");
            verifier.begin_session(session_a());
            assert_eq!(verifier.verify(&SignedCommand { payload, signature }, NOW), Err(VerifyError::BadSignature));

            let (payload, signature) = forge_some(&point, |i| {
                let reply = Reply { terminal_id: "t1".into(), command_id: format!("cmd-{i}"), outcome: Outcome::Done };
                let payload = crate::encode(&reply);
                (payload.clone(), prefixed(REPLY_DOMAIN, payload.as_bytes()))
            });
            let command_id = serde_json::from_str::<Reply>(&payload).unwrap().command_id;
            let reply = SignedReply { payload, signature };
            assert_eq!(reply.verify(&key, "t1", &command_id), Err(VerifyError::BadSignature));

            let (issued_at_ms, signature) =
                forge_some(&point, |i| (NOW + i64::from(i), pairing_message("t1", NOW + i64::from(i))));
            assert_eq!(verify_pairing("t1", issued_at_ms, &signature, &key), Err(VerifyError::BadSignature));
        }
    }

    #[test]
    fn frames_round_trip_through_json() {
        use crate::agent::{ApduBatch, ApduGroup, GroupMode};
        let body = CommandBody::Transmit {
            reader: None,
            batch: ApduBatch {
                groups: vec![ApduGroup { mode: GroupMode::Sequence, apdus: vec![HexBytes(vec![0, 0xA4])], when: vec![] }],
            },
        };
        let text = crate::encode(&body);
        assert_eq!(text, r#"{"op":"transmit","reader":null,"batch":{"groups":[{"mode":"sequence","apdus":["00A4"]}]}}"#);
        assert_eq!(crate::decode::<CommandBody>(&text).unwrap(), body);
        assert!(crate::decode::<CommandBody>(r#"{"op":"format_disk"}"#).is_err());
    }
}
