//! The audit log: append-only and hash-chained, so that any edit or deletion is detectable.
//!
//! Each event's hash is SHA-256 over the previous hash and the event's fields; appends are
//! serialised (SQLite: `begin immediate`; PostgreSQL: a transaction-scoped advisory lock) so the
//! chain never forks, even with several server instances.

use sha2::{Digest, Sha256};
use sqlx::Connection;

use super::{Dialect, Store, StoreResult};
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

impl Store {
    /// Append one event to the chain. `actor`, `subject` and `detail` may come from users: each is
    /// cut to [`MAX_AUDIT_FIELD_BYTES`] with a marker.
    pub async fn audit(&self, actor: &str, action: &str, subject: &str, detail: &str) -> StoreResult<()> {
        let (actor, subject, detail) = (
            truncate(actor, MAX_AUDIT_FIELD_BYTES),
            truncate(subject, MAX_AUDIT_FIELD_BYTES),
            truncate(detail, MAX_AUDIT_FIELD_BYTES),
        );
        let (actor, subject, detail) = (actor.as_ref(), subject.as_ref(), detail.as_ref());
        let mut conn = self.pool.acquire().await?;
        match self.dialect {
            Dialect::Sqlite => {
                sqlx::query("begin immediate").execute(&mut *conn).await?;
            }
            Dialect::Postgres => {
                sqlx::query("begin").execute(&mut *conn).await?;
                sqlx::query("select pg_advisory_xact_lock($1)").bind(AUDIT_LOCK_KEY).execute(&mut *conn).await?;
            }
        }
        let result = async {
            let prev: Option<(String,)> = sqlx::query_as("select hash from audit_event order by audit_id desc limit 1")
                .fetch_optional(&mut *conn)
                .await?;
            let prev = prev.map(|(h,)| h).unwrap_or_else(|| GENESIS.to_string());
            let at = now_ms();
            let hash = chain_hash(&prev, at, actor, action, subject, detail);
            sqlx::query("insert into audit_event (at, actor, action, subject, detail, prev_hash, hash) values ($1, $2, $3, $4, $5, $6, $7)")
                .bind(at)
                .bind(actor)
                .bind(action)
                .bind(subject)
                .bind(detail)
                .bind(&prev)
                .bind(&hash)
                .execute(&mut *conn)
                .await?;
            Ok::<(), sqlx::Error>(())
        }
        .await;
        match result {
            Ok(()) => {
                sqlx::query("commit").execute(&mut *conn).await?;
                Ok(())
            }
            Err(e) => {
                let _ = sqlx::query("rollback").execute(&mut *conn).await;
                // A connection in an unknown transaction state must not go back to the pool.
                let _ = conn.detach().close().await;
                Err(e.into())
            }
        }
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

    /// Walk the whole chain; returns the id of the first event that does not verify, if any.
    pub async fn verify_audit_chain(&self) -> StoreResult<Result<usize, i64>> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "select audit_id, at, actor, action, subject, detail, prev_hash, hash from audit_event order by audit_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut prev = GENESIS.to_string();
        let n = rows.len();
        for event in rows.into_iter().map(audit_from) {
            let expected = chain_hash(&prev, event.at, &event.actor, &event.action, &event.subject, &event.detail);
            if event.prev_hash != prev || event.hash != expected {
                return Ok(Err(event.audit_id));
            }
            prev = event.hash;
        }
        Ok(Ok(n))
    }
}

fn audit_from(r: AuditRow) -> AuditEvent {
    AuditEvent { audit_id: r.0, at: r.1, actor: r.2, action: r.3, subject: r.4, detail: r.5, prev_hash: r.6, hash: r.7 }
}
