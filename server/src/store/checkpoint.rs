//! Signed checkpoints of the audit log's head (`audit_checkpoint`): rows in and out. Signing and
//! checking them is [`crate::checkpoint`]'s job.

use super::{Store, StoreResult};

/// One checkpoint as stored: hashes, signature and key in lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheckpoint {
    pub audit_checkpoint_id: i64,
    pub event_count: i64,
    pub head_hash: String,
    pub at: i64,
    pub signature: String,
    pub public_key: String,
}

type CheckpointRow = (i64, i64, String, i64, String, String);

const COLUMNS: &str = "audit_checkpoint_id, event_count, head_hash, at, signature, public_key";

impl Store {
    pub async fn insert_audit_checkpoint(
        &self,
        event_count: i64,
        head_hash: &str,
        at: i64,
        signature: &str,
        public_key: &str,
    ) -> StoreResult<AuditCheckpoint> {
        let row: CheckpointRow = sqlx::query_as(&format!(
            "insert into audit_checkpoint (event_count, head_hash, at, signature, public_key) values ($1, $2, $3, $4, $5) returning {COLUMNS}"
        ))
        .bind(event_count)
        .bind(head_hash)
        .bind(at)
        .bind(signature)
        .bind(public_key)
        .fetch_one(&self.pool)
        .await?;
        Ok(checkpoint_from(row))
    }

    /// The newest checkpoint, if any was written.
    pub async fn latest_audit_checkpoint(&self) -> StoreResult<Option<AuditCheckpoint>> {
        let row: Option<CheckpointRow> =
            sqlx::query_as(&format!("select {COLUMNS} from audit_checkpoint order by audit_checkpoint_id desc limit 1"))
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(checkpoint_from))
    }

    /// Every checkpoint, oldest first.
    pub async fn audit_checkpoints(&self) -> StoreResult<Vec<AuditCheckpoint>> {
        let rows: Vec<CheckpointRow> =
            sqlx::query_as(&format!("select {COLUMNS} from audit_checkpoint order by audit_checkpoint_id"))
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(checkpoint_from).collect())
    }
}

fn checkpoint_from(r: CheckpointRow) -> AuditCheckpoint {
    AuditCheckpoint { audit_checkpoint_id: r.0, event_count: r.1, head_hash: r.2, at: r.3, signature: r.4, public_key: r.5 }
}
