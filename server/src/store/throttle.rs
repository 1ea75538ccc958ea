//! Login throttling state: failed logins per key and the time before which the next attempt is
//! refused. In the database so that every server instance behind a load balancer sees it.

use super::{Store, StoreResult};

impl Store {
    /// The latest time (unix ms) before which any of `keys` may not try again; 0 if none is held.
    pub async fn login_blocked_until(&self, keys: &[&str]) -> StoreResult<i64> {
        let mut until = 0;
        for key in keys {
            let row: Option<(i64,)> = sqlx::query_as("select blocked_until from login_throttle where throttle_key = $1")
                .bind(*key)
                .fetch_optional(&self.pool)
                .await?;
            until = until.max(row.map_or(0, |(t,)| t));
        }
        Ok(until)
    }

    /// Count one failure of `key` at `now`, starting again from one when the previous failure was
    /// before `window_start`; returns the count. Rows that are neither counting nor holding anyone
    /// are pruned here, so that random user names do not pile up.
    pub async fn record_login_failure(&self, key: &str, now: i64, window_start: i64) -> StoreResult<i64> {
        sqlx::query("delete from login_throttle where last_failure_at < $1 and blocked_until < $2")
            .bind(window_start)
            .bind(now)
            .execute(&self.pool)
            .await?;
        let (failures,): (i64,) = sqlx::query_as(
            "insert into login_throttle (throttle_key, failures, last_failure_at, blocked_until) values ($1, 1, $2, 0) \
             on conflict (throttle_key) do update set \
             failures = case when login_throttle.last_failure_at < $3 then 1 else login_throttle.failures + 1 end, \
             last_failure_at = $2 \
             returning failures",
        )
        .bind(key)
        .bind(now)
        .bind(window_start)
        .fetch_one(&self.pool)
        .await?;
        Ok(failures)
    }

    /// Refuse attempts of `key` until `until` (unix ms).
    pub async fn hold_login(&self, key: &str, until: i64) -> StoreResult<()> {
        sqlx::query("update login_throttle set blocked_until = $2 where throttle_key = $1")
            .bind(key)
            .bind(until)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn clear_login_failures(&self, key: &str) -> StoreResult<()> {
        sqlx::query("delete from login_throttle where throttle_key = $1").bind(key).execute(&self.pool).await?;
        Ok(())
    }
}
