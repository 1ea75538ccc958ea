//! Signed checkpoints of the audit log's head, and the check of the log against them.
//!
//! The hash chain shows an edited or removed event in the middle, but deleting the newest events
//! leaves a shorter chain that still verifies. A checkpoint anchors the head: the number of events
//! and the hash of the last one, signed with the server key (see `protocol::checkpoint`). The
//! server writes one periodically when the head moved ([`Checkpointer`], a supervised task) and
//! one at shutdown; `cardbridge audit-verify` ([`verify_log`]) then requires, for every
//! checkpoint, a valid signature and a log that still has at least that many events, the one at
//! that position carrying the checkpoint's hash. Someone who can write the database can delete checkpoints too:
//! that is why the head is exported (`GET /api/admin/audit/head`) for an external system to hold
//! and hand back as an [`ExpectedHead`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ed25519_dalek::{SigningKey, VerifyingKey};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::secrets::Secrets;
use crate::store::{AuditCheckpoint, Store};
use crate::util::ErrorChain;

/// Sign the current head and store it, unless it is where the latest checkpoint left it (or the
/// log is empty). Refuses to sign a head that does not extend the latest checkpoint: the server
/// never vouches for a log that lost events. Stamped with the system's time; a running server
/// stamps with its clock ([`Checkpointer::checkpoint`]).
pub async fn write_checkpoint(store: &Store, server_key: &SigningKey) -> anyhow::Result<Option<AuditCheckpoint>> {
    write_checkpoint_at(store, server_key, crate::util::now_ms()).await
}

/// [`write_checkpoint`] with the checkpoint's instant (unix ms) given, from the server's clock.
pub async fn write_checkpoint_at(store: &Store, server_key: &SigningKey, at: i64) -> anyhow::Result<Option<AuditCheckpoint>> {
    let head = store.audit_head().await.context("reading the audit head")?;
    if head.event_count == 0 {
        return Ok(None);
    }
    if let Some(last) = store.latest_audit_checkpoint().await.context("reading the latest checkpoint")? {
        if last.event_count == head.event_count && last.head_hash == head.head_hash {
            return Ok(None);
        }
        let at_last = store.audit_hash_at(last.event_count).await.context("reading the checkpointed event")?;
        anyhow::ensure!(
            head.event_count >= last.event_count && at_last.as_deref() == Some(last.head_hash.as_str()),
            "the audit log no longer extends checkpoint {} (run `cardbridge audit-verify`); not signing its head",
            last.audit_checkpoint_id
        );
    }
    let hash = head_bytes(&head.head_hash).context("the audit head hash")?;
    let count = u64::try_from(head.event_count).context("event count")?;
    let signature = protocol::checkpoint::sign_checkpoint(count, &hash, at, server_key);
    let public_key = hex::encode(server_key.verifying_key().as_bytes());
    let checkpoint = store
        .insert_audit_checkpoint(head.event_count, &head.head_hash, at, &hex::encode(signature.as_slice()), &public_key)
        .await
        .context("storing the checkpoint")?;
    tracing::debug!(checkpoint_id = checkpoint.audit_checkpoint_id, event_count = checkpoint.event_count, "audit checkpoint");
    Ok(Some(checkpoint))
}

fn head_bytes(text: &str) -> anyhow::Result<[u8; protocol::checkpoint::HEAD_HASH_LEN]> {
    let bytes = hex::decode(text).context("not hex")?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("not 32 bytes"))
}

/// The audit checkpoints of a running server: the periodic task ([`Checkpointer::run`], supervised
/// by the application) and the last checkpoint at shutdown ([`Checkpointer::finish`]). Instants
/// come from the server's clock.
#[derive(Debug, Clone)]
pub struct Checkpointer {
    store: Store,
    secrets: Arc<Secrets>,
    clock: Arc<dyn Clock>,
    interval: Duration,
}

impl Checkpointer {
    /// A checkpointer writing every `interval`; a zero interval writes none until
    /// [`Checkpointer::finish`].
    pub fn new(store: Store, secrets: Arc<Secrets>, clock: Arc<dyn Clock>, interval: Duration) -> Checkpointer {
        Checkpointer { store, secrets, clock, interval }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Sign and store the current head now (see [`write_checkpoint_at`]).
    pub async fn checkpoint(&self) -> anyhow::Result<Option<AuditCheckpoint>> {
        write_checkpoint_at(&self.store, &self.secrets.server_key, self.clock.now_ms()).await
    }

    /// Write a checkpoint every interval (the first one interval after start, on `tokio::time`)
    /// until `stop` is cancelled; a write in progress completes first. A failed write ends the run
    /// with its error, for the supervisor to log and restart. With a zero interval it only waits.
    pub async fn run(&self, stop: CancellationToken) -> anyhow::Result<()> {
        if self.interval.is_zero() {
            stop.cancelled().await;
            return Ok(());
        }
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    self.checkpoint().await.context("periodic audit checkpoint")?;
                }
                _ = stop.cancelled() => return Ok(()),
            }
        }
    }

    /// Checkpoint the final head (after the periodic task stopped): no event of this run goes
    /// unanchored. A failure is logged; shutdown goes on.
    pub async fn finish(&self) {
        match self.checkpoint().await {
            Ok(Some(c)) => tracing::info!(checkpoint_id = c.audit_checkpoint_id, event_count = c.event_count, "audit checkpoint at shutdown"),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %ErrorChain(e.as_ref()), "audit checkpoint at shutdown failed"),
        }
    }
}

/// A head held outside the database (e.g. taken from `GET /api/admin/audit/head`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedHead {
    pub event_count: i64,
    /// The head hash, lower-case hex.
    pub head_hash: String,
}

impl ExpectedHead {
    /// From a count and a hex hash (either case).
    pub fn parse(event_count: u64, head_hex: &str) -> anyhow::Result<ExpectedHead> {
        let hash = head_bytes(head_hex.trim()).context("the expected head must be 32 bytes of hex")?;
        anyhow::ensure!(event_count > 0, "the expected event count must be at least 1");
        Ok(ExpectedHead { event_count: i64::try_from(event_count).context("event count")?, head_hash: hex::encode(hash) })
    }

    /// From an exported checkpoint, whose signature must verify under `server_key`.
    pub fn from_signed(head: &protocol::api::AuditHead, server_key: &VerifyingKey) -> anyhow::Result<ExpectedHead> {
        protocol::checkpoint::verify_head(head, server_key)
            .with_context(|| format!("the held checkpoint {} does not verify under the server key", head.checkpoint_id))?;
        ExpectedHead::parse(head.event_count, &hex::encode(head.head_hash.as_slice()))
    }
}

/// What a head is anchored by, in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Checkpoint(i64),
    Expected,
}

impl std::fmt::Display for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Anchor::Checkpoint(id) => write!(f, "checkpoint {id}"),
            Anchor::Expected => f.write_str("the expected head"),
        }
    }
}

/// One thing wrong with the audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("audit chain broken at event {audit_id}")]
    ChainBroken { audit_id: i64 },
    #[error("checkpoint {checkpoint_id} does not verify under the server key (forged or altered)")]
    BadSignature { checkpoint_id: i64 },
    #[error("{anchor} covers {event_count} events but the log has only {events}: events were deleted")]
    Truncated { anchor: Anchor, event_count: i64, events: i64 },
    #[error("event {event_count} does not carry the head hash of {anchor}: events were replaced")]
    HeadMismatch { anchor: Anchor, event_count: i64 },
}

/// The outcome of [`verify_log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub events: i64,
    /// Checkpoints whose signature verified.
    pub checkpoints_verified: usize,
    pub problems: Vec<Problem>,
}

impl Verification {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Check the chain, every checkpoint (signature under `server_key`, and the head it anchors) and,
/// if given, a head held outside the database. Without a key (a server that never ran has none)
/// only a log without checkpoints can be checked.
pub async fn verify_log(
    store: &Store,
    server_key: Option<&VerifyingKey>,
    expected: Option<&ExpectedHead>,
) -> anyhow::Result<Verification> {
    let checkpoints = store.audit_checkpoints().await.context("reading the checkpoints")?;
    if server_key.is_none() && !checkpoints.is_empty() {
        anyhow::bail!("the log has {} checkpoint(s) but there is no server key to check them with", checkpoints.len());
    }
    let mut problems = Vec::new();
    let mut anchors = Vec::new();
    for c in &checkpoints {
        if server_key.is_some_and(|key| checkpoint_signature_valid(c, key)) {
            anchors.push((Anchor::Checkpoint(c.audit_checkpoint_id), c.event_count, c.head_hash.to_lowercase()));
        } else {
            problems.push(Problem::BadSignature { checkpoint_id: c.audit_checkpoint_id });
        }
    }
    let checkpoints_verified = anchors.len();
    if let Some(e) = expected {
        anchors.push((Anchor::Expected, e.event_count, e.head_hash.clone()));
    }
    let positions: BTreeSet<i64> = anchors.iter().map(|(_, count, _)| *count).collect();
    let walk = store.walk_audit_chain(&positions).await.context("walking the audit chain")?;
    if let Some(audit_id) = walk.broken_at {
        problems.insert(0, Problem::ChainBroken { audit_id });
    }
    for (anchor, event_count, head_hash) in anchors {
        match walk.hashes_at.get(&event_count) {
            None => problems.push(Problem::Truncated { anchor, event_count, events: walk.event_count }),
            Some(stored) if *stored != head_hash => problems.push(Problem::HeadMismatch { anchor, event_count }),
            Some(_) => {}
        }
    }
    Ok(Verification { events: walk.event_count, checkpoints_verified, problems })
}

fn checkpoint_signature_valid(c: &AuditCheckpoint, server_key: &VerifyingKey) -> bool {
    let (Ok(count), Ok(head), Ok(signature)) = (u64::try_from(c.event_count), hex::decode(&c.head_hash), hex::decode(&c.signature)) else {
        return false;
    };
    protocol::checkpoint::verify_checkpoint(count, &head, c.at, &signature, server_key).is_ok()
}
