//! The audit log: append-only and hash-chained, so that any edit or deletion is detectable.
//!
//! Each event's hash is SHA-256 over the previous hash and the event's fields; appends are
//! serialised (SQLite: `begin immediate`; PostgreSQL: a transaction-scoped advisory lock) so the
//! chain never forks, even with several server instances.
//!
//! A chain alone cannot show that its newest events were deleted: the signed checkpoints of its
//! head (`audit_checkpoint`, written by [`crate::checkpoint`]) anchor it.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};

use super::{Dialect, Store, StoreResult, StoreTx};
use crate::util::{now_ms, truncate};

/// Longest actor, subject or detail an audit event stores, in bytes (before the marker).
pub const MAX_AUDIT_FIELD_BYTES: usize = 512;

#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub audit_id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const AUDIT_LOCK_KEY: i64 = 0x0CA4_DB41;

fn chain_hash(prev: &str, at: i64, actor: &str, action: &str, subject: &str, detail: &str) -> String {
    let mut h = Sha256::new();
    for part in [prev.as_bytes(), &at.to_be_bytes(), actor.as_bytes(), action.as_bytes(), subject.as_bytes(), detail.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

type AuditRow = (i64, i64, String, String, String, String, String, String);

impl StoreTx {
    /// Append one event to the chain inside this transaction: it is there if and only if the
    /// transaction commits. Appends are serialised (SQLite: the transaction began `immediate`;
    /// PostgreSQL: a transaction-scoped advisory lock, taken here) so the chain never forks.
    pub async fn audit(&mut self, actor: &str, action: &str, subject: &str, detail: &str) -> StoreResult<()> {
        let (actor, subject, detail) = (
            truncate(actor, MAX_AUDIT_FIELD_BYTES),
            truncate(subject, MAX_AUDIT_FIELD_BYTES),
            truncate(detail, MAX_AUDIT_FIELD_BYTES),
        );
        if self.dialect == Dialect::Postgres && !self.audit_locked {
            sqlx::query("select pg_advisory_xact_lock($1)").bind(AUDIT_LOCK_KEY).execute(self.conn()).await?;
            self.audit_locked = true;
        }
        let prev: Option<(String,)> =
            sqlx::query_as("select hash from audit_event order by audit_id desc limit 1").fetch_optional(self.conn()).await?;
        let prev = prev.map(|(h,)| h).unwrap_or_else(|| GENESIS.to_string());
        let at = now_ms();
        let hash = chain_hash(&prev, at, &actor, action, &subject, &detail);
        sqlx::query("insert into audit_event (at, actor, action, subject, detail, prev_hash, hash) values ($1, $2, $3, $4, $5, $6, $7)")
            .bind(at)
            .bind(actor.as_ref())
            .bind(action)
            .bind(subject.as_ref())
            .bind(detail.as_ref())
            .bind(&prev)
            .bind(&hash)
            .execute(self.conn())
            .await?;
        Ok(())
    }
}

impl Store {
    /// Append one event to the chain, in a transaction of its own. `actor`, `subject` and
    /// `detail` may come from users: each is cut to [`MAX_AUDIT_FIELD_BYTES`] with a marker. To
    /// audit a change in the same transaction as the change, use [`StoreTx::audit`].
    pub async fn audit(&self, actor: &str, action: &str, subject: &str, detail: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        tx.audit(actor, action, subject, detail).await?;
        tx.commit().await
    }

    pub async fn audit_events(&self, limit: i64) -> StoreResult<Vec<AuditEvent>> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "select audit_id, at, actor, action, subject, detail, prev_hash, hash from audit_event order by audit_id desc limit $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(audit_from).collect())
    }

    /// A page of the log, newest first: up to `limit` events with an id below `before` (all when
    /// `None`).
    pub async fn audit_page(&self, before: Option<i64>, limit: i64) -> StoreResult<Vec<AuditEvent>> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "select audit_id, at, actor, action, subject, detail, prev_hash, hash from audit_event where audit_id < $1 order by audit_id desc limit $2",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(audit_from).collect())
    }

    /// The number of events and the hash of the newest, read in one statement (one snapshot), so
    /// the two always belong together even while events are appended.
    pub async fn audit_head(&self) -> StoreResult<ChainHead> {
        let (event_count, head_hash): (i64, Option<String>) = sqlx::query_as(
            "select count(*), (select hash from audit_event order by audit_id desc limit 1) from audit_event",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(ChainHead { event_count, head_hash: head_hash.unwrap_or_else(|| GENESIS.to_string()) })
    }

    /// The stored hash of event number `position` (from 1, in `audit_id` order), if there is one.
    pub async fn audit_hash_at(&self, position: i64) -> StoreResult<Option<String>> {
        if position < 1 {
            return Ok(None);
        }
        let row: Option<(String,)> = sqlx::query_as("select hash from audit_event order by audit_id limit 1 offset $1")
            .bind(position - 1)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(h,)| h))
    }

    /// Walk the whole chain; returns the id of the first event that does not verify, if any.
    pub async fn verify_audit_chain(&self) -> StoreResult<Result<usize, i64>> {
        let walk = self.walk_audit_chain(&BTreeSet::new()).await?;
        Ok(match walk.broken_at {
            None => Ok(walk.event_count as usize),
            Some(audit_id) => Err(audit_id),
        })
    }

    /// Walk the whole chain (streamed, not loaded at once), checking every link, and note the
    /// stored hash of the events at `positions` (from 1, in `audit_id` order).
    pub async fn walk_audit_chain(&self, positions: &BTreeSet<i64>) -> StoreResult<ChainWalk> {
        let mut rows = sqlx::query_as::<_, AuditRow>(
            "select audit_id, at, actor, action, subject, detail, prev_hash, hash from audit_event order by audit_id",
        )
        .fetch(&self.pool);
        let mut walk = ChainWalk { event_count: 0, broken_at: None, hashes_at: BTreeMap::new() };
        let mut prev = GENESIS.to_string();
        while let Some(row) = rows.try_next().await? {
            let event = audit_from(row);
            walk.event_count += 1;
            let expected = chain_hash(&prev, event.at, &event.actor, &event.action, &event.subject, &event.detail);
            if walk.broken_at.is_none() && (event.prev_hash != prev || event.hash != expected) {
                walk.broken_at = Some(event.audit_id);
            }
            if positions.contains(&walk.event_count) {
                walk.hashes_at.insert(walk.event_count, event.hash.clone());
            }
            prev = event.hash;
        }
        Ok(walk)
    }
}

/// The newest end of the chain: how many events there are and the hash of the last one (the
/// genesis hash for an empty log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub event_count: i64,
    pub head_hash: String,
}

/// What a walk over the chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainWalk {
    pub event_count: i64,
    /// The first event whose link does not verify.
    pub broken_at: Option<i64>,
    /// Stored hashes of the events at the positions asked for (absent: the log is shorter).
    pub hashes_at: BTreeMap<i64, String>,
}

fn audit_from(r: AuditRow) -> AuditEvent {
    AuditEvent { audit_id: r.0, at: r.1, actor: r.2, action: r.3, subject: r.4, detail: r.5, prev_hash: r.6, hash: r.7 }
}
