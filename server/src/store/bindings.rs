//! Bank-card bindings for top-up, the requests that confirm them with a one-time code, the code
//! sends per card, and the demo/test SMS outbox.

use super::{Store, StoreError, StoreResult, StoreTx};

/// A bank card bound to a cardholder (keyed hash and last four digits only).
#[derive(Debug, Clone)]
pub struct BankBinding {
    pub binding_id: String,
    pub user_id: String,
    pub last4: String,
    pub bank_token: String,
    pub created_at: i64,
}

/// A binding waiting for its code. No Debug of the code hash or token.
#[derive(Clone)]
pub struct BindingRequest {
    pub request_id: String,
    pub user_id: String,
    pub card_hash: String,
    pub last4: String,
    pub bank_token: String,
    pub phone_masked: String,
    /// The phone the codes go to; empty once the request ended.
    pub phone: String,
    pub code_hash: String,
    pub attempts: i64,
    pub created_at: i64,
    pub code_expires_at: i64,
    pub ended_at: Option<i64>,
}

impl std::fmt::Debug for BindingRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BindingRequest")
            .field("request_id", &self.request_id)
            .field("last4", &self.last4)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

type RequestRow = (String, String, String, String, String, String, String, String, i64, i64, i64, Option<i64>);
const REQUEST_COLUMNS: &str =
    "request_id, user_id, card_hash, last4, bank_token, phone_masked, phone, code_hash, attempts, created_at, code_expires_at, ended_at";

fn request_from(r: RequestRow) -> BindingRequest {
    BindingRequest {
        request_id: r.0,
        user_id: r.1,
        card_hash: r.2,
        last4: r.3,
        bank_token: r.4,
        phone_masked: r.5,
        phone: r.6,
        code_hash: r.7,
        attempts: r.8,
        created_at: r.9,
        code_expires_at: r.10,
        ended_at: r.11,
    }
}

impl Store {
    pub async fn binding_request(&self, request_id: &str) -> StoreResult<BindingRequest> {
        let row: RequestRow = sqlx::query_as(&format!("select {REQUEST_COLUMNS} from binding_request where request_id = $1"))
            .bind(request_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(request_from(row))
    }

    /// The live binding of this card for this user, if any.
    pub async fn binding_of_card(&self, user_id: &str, card_hash: &str) -> StoreResult<Option<String>> {
        let row: Option<(String,)> =
            sqlx::query_as("select binding_id from bank_binding where user_id = $1 and card_hash = $2 and removed_at is null")
                .bind(user_id)
                .bind(card_hash)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(id,)| id))
    }

    /// Codes sent for this card since `since_ms` (every request, resends included).
    pub async fn code_sends_since(&self, card_hash: &str, since_ms: i64) -> StoreResult<i64> {
        let (n,): (i64,) = sqlx::query_as("select count(*) from binding_code_send where card_hash = $1 and sent_at >= $2")
            .bind(card_hash)
            .bind(since_ms)
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    /// The live bindings of a user, oldest first.
    pub async fn bindings_of(&self, user_id: &str) -> StoreResult<Vec<BankBinding>> {
        let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
            "select binding_id, user_id, last4, bank_token, created_at from bank_binding \
             where user_id = $1 and removed_at is null order by created_at, binding_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| BankBinding { binding_id: r.0, user_id: r.1, last4: r.2, bank_token: r.3, created_at: r.4 })
            .collect())
    }

    /// The messages of the SMS outbox, newest first.
    pub async fn sms_outbox(&self, limit: i64) -> StoreResult<Vec<(String, String, i64)>> {
        let rows = sqlx::query_as("select phone, body, sent_at from sms_outbox order by sent_at desc, message_id desc limit $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }
}

impl StoreTx {
    pub async fn insert_binding_request(&mut self, r: &BindingRequest) -> StoreResult<()> {
        sqlx::query(&format!(
            "insert into binding_request ({REQUEST_COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ))
        .bind(&r.request_id)
        .bind(&r.user_id)
        .bind(&r.card_hash)
        .bind(&r.last4)
        .bind(&r.bank_token)
        .bind(&r.phone_masked)
        .bind(&r.phone)
        .bind(&r.code_hash)
        .bind(r.attempts)
        .bind(r.created_at)
        .bind(r.code_expires_at)
        .bind(r.ended_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    pub async fn record_code_send(&mut self, card_hash: &str, request_id: &str, now_ms: i64) -> StoreResult<()> {
        sqlx::query("insert into binding_code_send (card_hash, request_id, sent_at) values ($1, $2, $3)")
            .bind(card_hash)
            .bind(request_id)
            .bind(now_ms)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// A new code for an open request; the attempt count stays.
    pub async fn replace_binding_code(&mut self, request_id: &str, code_hash: &str, code_expires_at: i64) -> StoreResult<()> {
        let done = sqlx::query("update binding_request set code_hash = $1, code_expires_at = $2 where request_id = $3 and ended_at is null")
            .bind(code_hash)
            .bind(code_expires_at)
            .bind(request_id)
            .execute(self.conn())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Count one wrong code; returns the attempts made so far.
    pub async fn count_binding_attempt(&mut self, request_id: &str) -> StoreResult<i64> {
        sqlx::query("update binding_request set attempts = attempts + 1 where request_id = $1 and ended_at is null")
            .bind(request_id)
            .execute(self.conn())
            .await?;
        let (n,): (i64,) = sqlx::query_as("select attempts from binding_request where request_id = $1")
            .bind(request_id)
            .fetch_one(self.conn())
            .await?;
        Ok(n)
    }

    /// End an open request (`bound`, `too_many_attempts`, `expired`, `replaced`…); false if it had
    /// already ended — a code is spent once.
    pub async fn end_binding_request(&mut self, request_id: &str, outcome: &str, now_ms: i64) -> StoreResult<bool> {
        let done = sqlx::query("update binding_request set ended_at = $1, outcome = $2, phone = '' where request_id = $3 and ended_at is null")
            .bind(now_ms)
            .bind(outcome)
            .bind(request_id)
            .execute(self.conn())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn insert_binding(&mut self, b: &BankBinding, card_hash: &str) -> StoreResult<()> {
        sqlx::query(
            "insert into bank_binding (binding_id, user_id, card_hash, last4, bank_token, created_at) values ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&b.binding_id)
        .bind(&b.user_id)
        .bind(card_hash)
        .bind(&b.last4)
        .bind(&b.bank_token)
        .bind(b.created_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Remove one of the user's live bindings; returns it (its bank token is needed to delete it
    /// at the bank).
    pub async fn remove_binding(&mut self, user_id: &str, binding_id: &str, now_ms: i64) -> StoreResult<BankBinding> {
        let row: (String, String, String, String, i64) = sqlx::query_as(
            "select binding_id, user_id, last4, bank_token, created_at from bank_binding \
             where binding_id = $1 and user_id = $2 and removed_at is null",
        )
        .bind(binding_id)
        .bind(user_id)
        .fetch_one(self.conn())
        .await?;
        sqlx::query("update bank_binding set removed_at = $1 where binding_id = $2")
            .bind(now_ms)
            .bind(binding_id)
            .execute(self.conn())
            .await?;
        Ok(BankBinding { binding_id: row.0, user_id: row.1, last4: row.2, bank_token: row.3, created_at: row.4 })
    }

    pub async fn queue_sms(&mut self, message_id: &str, phone: &str, body: &str, now_ms: i64) -> StoreResult<()> {
        sqlx::query("insert into sms_outbox (message_id, phone, body, sent_at) values ($1, $2, $3, $4)")
            .bind(message_id)
            .bind(phone)
            .bind(body)
            .bind(now_ms)
            .execute(self.conn())
            .await?;
        Ok(())
    }
}
