//! Alarms of run-state monitoring (`alarm`, migration 0009): raised at most once per kind and
//! subject while open, acknowledged by a person (audited with the acknowledgement), cleared when
//! the condition ends. Also the readiness check of the database ([`Store::ready_check`]).

use super::{Store, StoreError, StoreResult, StoreTx};
use crate::monitor::AlarmKind;
use crate::util::new_id;

/// One alarm as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAlarm {
    pub alarm_id: String,
    pub kind: AlarmKind,
    pub subject: String,
    pub detail: String,
    pub raised_at: i64,
    pub acked_at: Option<i64>,
    pub acked_by: Option<String>,
    pub cleared_at: Option<i64>,
}

impl StoredAlarm {
    pub fn is_open(&self) -> bool {
        self.cleared_at.is_none()
    }
}

type AlarmRow = (String, String, String, String, i64, Option<i64>, Option<String>, Option<i64>);
const COLUMNS: &str = "alarm_id, kind, subject, detail, raised_at, acked_at, acked_by, cleared_at";

fn alarm_from(r: AlarmRow) -> StoreResult<StoredAlarm> {
    let kind = AlarmKind::parse(&r.1).ok_or_else(|| StoreError::Corrupt(format!("alarm {}: unknown kind {:?}", r.0, r.1)))?;
    Ok(StoredAlarm { alarm_id: r.0, kind, subject: r.2, detail: r.3, raised_at: r.4, acked_at: r.5, acked_by: r.6, cleared_at: r.7 })
}

/// Why an acknowledgement was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("no such alarm")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Raise an alarm of `kind` about `subject` at `now`, unless one is open already (then
    /// `None`: raising again changes nothing).
    pub async fn raise_alarm(&self, kind: AlarmKind, subject: &str, detail: &str, now: i64) -> StoreResult<Option<StoredAlarm>> {
        let row: Result<AlarmRow, sqlx::Error> = sqlx::query_as(&format!(
            "insert into alarm (alarm_id, kind, subject, detail, raised_at, open) values ($1, $2, $3, $4, $5, 1) returning {COLUMNS}"
        ))
        .bind(new_id("al"))
        .bind(kind.code())
        .bind(subject)
        .bind(detail)
        .bind(now)
        .fetch_one(&self.pool)
        .await;
        match row.map_err(StoreError::from) {
            Ok(row) => alarm_from(row).map(Some),
            Err(StoreError::Conflict(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Clear the open alarm of `kind` about `subject`, if there is one.
    pub async fn clear_alarm(&self, kind: AlarmKind, subject: &str, now: i64) -> StoreResult<Option<StoredAlarm>> {
        let row: Option<AlarmRow> = sqlx::query_as(&format!(
            "update alarm set cleared_at = $1, open = 0 where kind = $2 and subject = $3 and open = 1 returning {COLUMNS}"
        ))
        .bind(now)
        .bind(kind.code())
        .bind(subject)
        .fetch_optional(&self.pool)
        .await?;
        row.map(alarm_from).transpose()
    }

    pub async fn alarm(&self, alarm_id: &str) -> StoreResult<StoredAlarm> {
        let row: AlarmRow = sqlx::query_as(&format!("select {COLUMNS} from alarm where alarm_id = $1"))
            .bind(alarm_id)
            .fetch_one(&self.pool)
            .await?;
        alarm_from(row)
    }

    /// Every open alarm, oldest first.
    pub async fn open_alarms(&self) -> StoreResult<Vec<StoredAlarm>> {
        let rows: Vec<AlarmRow> = sqlx::query_as(&format!("select {COLUMNS} from alarm where open = 1 order by raised_at, alarm_id"))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(alarm_from).collect()
    }

    /// Alarms newest first: the open ones only, or all.
    pub async fn alarms_page(&self, open_only: bool, limit: i64, offset: i64) -> StoreResult<Vec<StoredAlarm>> {
        let filter = if open_only { "where open = 1" } else { "" };
        let rows: Vec<AlarmRow> = sqlx::query_as(&format!(
            "select {COLUMNS} from alarm {filter} order by raised_at desc, alarm_id desc limit $1 offset $2"
        ))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(alarm_from).collect()
    }

    /// The readiness check: a transaction that may write (on SQLite it takes the write lock, as
    /// every change does), a read of a real table in it, rolled back. It fails when no connection
    /// can be had, when the database cannot be read, and when it cannot take a write.
    pub async fn ready_check(&self) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let _: (i64,) = sqlx::query_as("select cast(count(*) as bigint) from alarm where open = 1").fetch_one(tx.conn()).await?;
        tx.rollback().await
    }

    /// How many alarms are open.
    pub async fn count_open_alarms(&self) -> StoreResult<i64> {
        let (n,): (i64,) = sqlx::query_as("select cast(count(*) as bigint) from alarm where open = 1").fetch_one(&self.pool).await?;
        Ok(n)
    }

    /// Acknowledge an alarm as `by` at `now`, audited in the same transaction. An alarm already
    /// acknowledged keeps its first acknowledgement (and nothing is audited again).
    pub async fn ack_alarm(&self, alarm_id: &str, by: &str, now: i64) -> Result<(StoredAlarm, bool), AckError> {
        let mut tx = self.begin().await?;
        let acked = tx.ack_alarm(alarm_id, by, now).await?;
        let Some(alarm) = acked else {
            drop(tx);
            return match self.alarm(alarm_id).await {
                Ok(alarm) => Ok((alarm, false)),
                Err(StoreError::NotFound) => Err(AckError::NotFound),
                Err(e) => Err(e.into()),
            };
        };
        let detail = format!("{} {}", alarm.kind.code(), alarm.subject);
        tx.audit(by, "alarm.ack", &alarm.alarm_id, &detail).await?;
        tx.commit().await?;
        Ok((alarm, true))
    }
}

impl StoreTx {
    async fn ack_alarm(&mut self, alarm_id: &str, by: &str, now: i64) -> StoreResult<Option<StoredAlarm>> {
        let row: Option<AlarmRow> = sqlx::query_as(&format!(
            "update alarm set acked_at = $1, acked_by = $2 where alarm_id = $3 and acked_at is null returning {COLUMNS}"
        ))
        .bind(now)
        .bind(by)
        .bind(alarm_id)
        .fetch_optional(self.conn())
        .await?;
        row.map(alarm_from).transpose()
    }
}
