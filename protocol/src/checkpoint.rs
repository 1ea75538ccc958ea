//! Signed checkpoints of the audit log's head: what the server signs, and how anyone holding its
//! public key checks a checkpoint (e.g. one exported through `GET /api/admin/audit/head`).
//!
//! The signature covers `"cardbridge/audit-checkpoint/v1\0" ‖ event_count (u64, big-endian) ‖
//! head_hash (32 bytes) ‖ at_ms (i64, big-endian)`: fixed-width fields, so no two checkpoints share
//! signed bytes, and the domain prefix keeps a checkpoint signature from ever passing as a command.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::api::AuditHead;
use crate::envelope::VerifyError;
use crate::HexBytes;

const CHECKPOINT_DOMAIN: &[u8] = b"cardbridge/audit-checkpoint/v1\0";

/// Length of a head hash (SHA-256).
pub const HEAD_HASH_LEN: usize = 32;

/// The bytes the server signs for a checkpoint of `event_count` events ending in `head_hash`.
pub fn checkpoint_message(event_count: u64, head_hash: &[u8; HEAD_HASH_LEN], at_ms: i64) -> Vec<u8> {
    let mut message = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + 8 + HEAD_HASH_LEN + 8);
    message.extend_from_slice(CHECKPOINT_DOMAIN);
    message.extend_from_slice(&event_count.to_be_bytes());
    message.extend_from_slice(head_hash);
    message.extend_from_slice(&at_ms.to_be_bytes());
    message
}

/// Sign a checkpoint with the server key.
pub fn sign_checkpoint(event_count: u64, head_hash: &[u8; HEAD_HASH_LEN], at_ms: i64, server_key: &SigningKey) -> HexBytes {
    HexBytes(server_key.sign(&checkpoint_message(event_count, head_hash, at_ms)).to_bytes().to_vec())
}

/// Check a checkpoint's signature against `server_key`.
pub fn verify_checkpoint(
    event_count: u64,
    head_hash: &[u8],
    at_ms: i64,
    signature: &[u8],
    server_key: &VerifyingKey,
) -> Result<(), VerifyError> {
    let head: &[u8; HEAD_HASH_LEN] =
        head_hash.try_into().map_err(|_| VerifyError::Malformed("head hash must be 32 bytes".into()))?;
    let signature: [u8; 64] =
        signature.try_into().map_err(|_| VerifyError::Malformed("signature must be 64 bytes".into()))?;
    server_key
        .verify(&checkpoint_message(event_count, head, at_ms), &Signature::from_bytes(&signature))
        .map_err(|_| VerifyError::BadSignature)
}

/// Check an exported head against `server_key` (not against the key the head names: that one is
/// only as trustworthy as whoever handed over the head).
pub fn verify_head(head: &AuditHead, server_key: &VerifyingKey) -> Result<(), VerifyError> {
    verify_checkpoint(head.event_count, head.head_hash.as_slice(), head.at_ms, head.signature.as_slice(), server_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: [u8; 32] = [7; 32];

    #[test]
    fn a_signed_checkpoint_verifies() {
        let key = crate::envelope::generate_key();
        let signature = sign_checkpoint(12, &HEAD, 1_800_000_000_000, &key);
        assert_eq!(verify_checkpoint(12, &HEAD, 1_800_000_000_000, signature.as_slice(), &key.verifying_key()), Ok(()));
    }

    #[test]
    fn every_field_is_covered() {
        let key = crate::envelope::generate_key();
        let signature = sign_checkpoint(12, &HEAD, 1_800_000_000_000, &key);
        let public = key.verifying_key();
        assert_eq!(verify_checkpoint(11, &HEAD, 1_800_000_000_000, signature.as_slice(), &public), Err(VerifyError::BadSignature));
        assert_eq!(verify_checkpoint(12, &[8; 32], 1_800_000_000_000, signature.as_slice(), &public), Err(VerifyError::BadSignature));
        assert_eq!(verify_checkpoint(12, &HEAD, 1_800_000_000_001, signature.as_slice(), &public), Err(VerifyError::BadSignature));
    }

    #[test]
    fn another_key_is_refused() {
        let signature = sign_checkpoint(1, &HEAD, 0, &crate::envelope::generate_key());
        let other = crate::envelope::generate_key().verifying_key();
        assert_eq!(verify_checkpoint(1, &HEAD, 0, signature.as_slice(), &other), Err(VerifyError::BadSignature));
    }

    #[test]
    fn the_domain_prefix_separates_checkpoints_from_other_signatures() {
        let message = checkpoint_message(1, &HEAD, 0);
        assert!(message.starts_with(b"cardbridge/audit-checkpoint/v1\0"));
        assert_eq!(message.len(), CHECKPOINT_DOMAIN.len() + 8 + 32 + 8);
    }

    #[test]
    fn malformed_lengths_are_errors_not_panics() {
        let public = crate::envelope::generate_key().verifying_key();
        assert!(matches!(verify_checkpoint(1, &[0; 31], 0, &[0; 64], &public), Err(VerifyError::Malformed(_))));
        assert!(matches!(verify_checkpoint(1, &HEAD, 0, &[0; 63], &public), Err(VerifyError::Malformed(_))));
    }
}
