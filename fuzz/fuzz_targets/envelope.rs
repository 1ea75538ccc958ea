//! The signed envelope and its verifiers: a frame's `SignedCommand` through the agent's `CommandVerifier::verify`, a frame's `SignedReply` through the server's `SignedReply::verify` and `claimed_command_id`, the hello's `verify_challenge`, `envelope::verifying_key`; and any payload text signed with the right key (`sign_payload`), to reach every check behind the signature
//!
//! Input: one mode byte, then the text (frame or payload) or the key and signature bytes.
#![no_main]

use cardbridge_fuzz::{server_key, terminal_key, CHALLENGE_NONCE, COMMAND_ID, NOW_MS, TERMINAL_ID};
use libfuzzer_sys::fuzz_target;
use protocol::agent::{AgentToServer, ServerToAgent, SignedCommand, SignedReply};
use protocol::envelope::{self, CommandVerifier, VerifyError};
use protocol::HexBytes;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut verifier = CommandVerifier::new(server_key().verifying_key(), TERMINAL_ID);
    verifier.begin_session(envelope::session_id(CHALLENGE_NONCE, TERMINAL_ID));
    let terminal = terminal_key().verifying_key();
    match mode % 4 {
        // A frame as it arrives, signature and all.
        0 => {
            let Ok(text) = std::str::from_utf8(rest) else { return };
            if let Ok(ServerToAgent::Command(signed)) = protocol::decode::<ServerToAgent>(text) {
                let _ = verifier.verify(&signed, NOW_MS);
            }
            match protocol::decode::<AgentToServer>(text) {
                Ok(AgentToServer::Reply(signed)) => {
                    let _ = signed.claimed_command_id();
                    let _ = signed.verify(&terminal, TERMINAL_ID, COMMAND_ID);
                }
                Ok(AgentToServer::Hello { terminal_id, signature, .. }) => {
                    let _ = envelope::verify_challenge(CHALLENGE_NONCE, &terminal_id, &signature, &terminal);
                }
                _ => {}
            }
        }
        // A command payload the server key signed: every check after the signature.
        1 => {
            let Ok(text) = std::str::from_utf8(rest) else { return };
            let signed = SignedCommand::sign_payload(text.to_string(), &server_key());
            if let Ok(command) = verifier.verify(&signed, NOW_MS) {
                assert_eq!(command.terminal_id, TERMINAL_ID);
                assert_eq!(command.v, protocol::PROTOCOL_VERSION);
                assert!(command.expires_at_ms > command.issued_at_ms);
                // The same command twice is a replay.
                assert_eq!(verifier.verify(&signed, NOW_MS), Err(VerifyError::Replayed));
                // Between connections nothing verifies.
                verifier.end_session();
                assert!(verifier.verify(&signed, NOW_MS).is_err());
            }
            // Under another key nothing verifies.
            let forged = SignedCommand::sign_payload(text.to_string(), &terminal_key());
            assert_eq!(verifier.verify(&forged, NOW_MS), Err(VerifyError::BadSignature));
        }
        // A reply payload the terminal key signed.
        2 => {
            let Ok(text) = std::str::from_utf8(rest) else { return };
            let signed = SignedReply::sign_payload(text.to_string(), &terminal_key());
            if let Ok(reply) = signed.verify(&terminal, TERMINAL_ID, COMMAND_ID) {
                assert_eq!(signed.claimed_command_id().as_deref(), Some(COMMAND_ID));
                assert_eq!(reply.terminal_id, TERMINAL_ID);
            }
            let server = server_key().verifying_key();
            assert!(signed.verify(&server, TERMINAL_ID, COMMAND_ID).is_err());
        }
        // A public key and a signature from the input.
        _ => {
            let (key, signature) = rest.split_at(rest.len().min(32));
            if let Ok(key) = envelope::verifying_key(key) {
                assert!(!key.is_weak());
                let signature = HexBytes(signature.to_vec());
                let _ = envelope::verify_challenge(CHALLENGE_NONCE, TERMINAL_ID, &signature, &key);
                let reply = SignedReply { payload: String::new(), signature };
                let _ = reply.verify(&key, TERMINAL_ID, COMMAND_ID);
            }
        }
    }
});
