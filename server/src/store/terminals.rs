//! Terminals, their one-time enrolment codes, browser pairings, and short-lived card reads.

use super::{flag, Store, StoreError, StoreResult, StoreTx};
use crate::util::{new_id, now_ms, sha256_hex};

#[derive(Debug, Clone)]
pub struct Terminal {
    pub terminal_id: String,
    pub name: String,
    pub permitted: bool,
    pub public_key: Option<Vec<u8>>,
    pub enrolled_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// An admin switched self-service top-up on for this terminal (R3.3: only admitted readers).
    pub topup_enabled: bool,
}

type TerminalRow = (String, String, i64, Option<String>, Option<i64>, Option<i64>, i64);
const TERMINAL_COLUMNS: &str = "terminal_id, name, permitted, public_key, enrolled_at, revoked_at, topup_enabled";

fn terminal_from(row: TerminalRow) -> Terminal {
    Terminal {
        terminal_id: row.0,
        name: row.1,
        permitted: row.2 != 0,
        public_key: row.3.and_then(|k| hex::decode(k).ok()),
        enrolled_at: row.4,
        revoked_at: row.5,
        topup_enabled: row.6 != 0,
    }
}

#[derive(Debug, Clone)]
pub struct BrowserPairing {
    pub pairing_id: String,
    pub terminal_id: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

type PairingRow = (String, String, i64, Option<i64>);
const PAIRING_COLUMNS: &str = "pairing_id, terminal_id, created_at, revoked_at";

fn pairing_from(r: PairingRow) -> BrowserPairing {
    BrowserPairing { pairing_id: r.0, terminal_id: r.1, created_at: r.2, revoked_at: r.3 }
}

/// A card number obtained by the server's receiver module on a terminal, remembered (as a keyed
/// hash) just long enough for the page to submit it.
#[derive(Debug, Clone)]
pub struct CardRead {
    pub read_id: String,
    pub terminal_id: String,
    pub user_id: String,
    pub pan_hash: String,
    pub kind: String,
    /// The card proved itself with a verified cryptogram (see `reader`).
    pub authenticated: bool,
}

/// What the record of a read also writes: the audit event's detail (the brand, the masked number,
/// whether the card authenticated; never the full number) and the page session whose allow-once
/// consent the read spends.
#[derive(Debug, Clone, Copy)]
pub struct ReadAudit<'a> {
    pub detail: &'a str,
    pub session_hash: &'a str,
}

/// The one-time secrets a terminal hands out.
#[derive(Debug, Clone, Copy)]
enum OneTime {
    EnrolmentCode,
    PairingToken,
}

impl Store {
    pub async fn create_terminal(&self, name: &str) -> StoreResult<Terminal> {
        let mut tx = self.begin().await?;
        let terminal_id = tx.create_terminal(name).await?;
        tx.commit().await?;
        self.terminal(&terminal_id).await
    }

    /// Store a fresh one-time enrolment code (only its hash is kept); returns when it expires.
    pub async fn create_enrolment_code(&self, terminal_id: &str, code: &str, ttl_ms: i64) -> StoreResult<i64> {
        let mut tx = self.begin().await?;
        let expires_at = tx.create_enrolment_code(terminal_id, code, ttl_ms).await?;
        tx.commit().await?;
        Ok(expires_at)
    }

    /// Spend a one-time secret by its hash: a single `update … where used_at is null` decides, so
    /// of two callers racing with one secret exactly one wins, and only before it expires.
    /// Returns the terminal it belongs to.
    async fn spend_once(&self, kind: OneTime, hash: &str, now: i64) -> StoreResult<String> {
        let (table, column) = match kind {
            OneTime::EnrolmentCode => ("enrolment_code", "code_hash"),
            OneTime::PairingToken => ("pairing_token", "token_hash"),
        };
        let spent: Option<(String,)> = sqlx::query_as(&format!(
            "update {table} set used_at = $1 where {column} = $2 and used_at is null and expires_at > $1 returning terminal_id"
        ))
        .bind(now)
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        spent.map(|(terminal_id,)| terminal_id).ok_or(StoreError::NotFound)
    }

    pub async fn terminal(&self, terminal_id: &str) -> StoreResult<Terminal> {
        let row: TerminalRow = sqlx::query_as(&format!("select {TERMINAL_COLUMNS} from terminal where terminal_id = $1"))
            .bind(terminal_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(terminal_from(row))
    }

    /// The terminal named `name` (names are unique).
    pub async fn terminal_by_name(&self, name: &str) -> StoreResult<Terminal> {
        let row: TerminalRow = sqlx::query_as(&format!("select {TERMINAL_COLUMNS} from terminal where name = $1"))
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(terminal_from(row))
    }

    pub async fn terminals(&self) -> StoreResult<Vec<Terminal>> {
        let rows: Vec<TerminalRow> = sqlx::query_as(&format!("select {TERMINAL_COLUMNS} from terminal order by name"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(terminal_from).collect())
    }

    /// Spend an enrolment code and register the terminal key.
    pub async fn enrol_terminal(&self, code: &str, public_key: &[u8]) -> StoreResult<Terminal> {
        let now = now_ms();
        let terminal_id = self.spend_once(OneTime::EnrolmentCode, &sha256_hex(code), now).await?;
        let done = sqlx::query(
            "update terminal set public_key = $1, enrolled_at = $2 where terminal_id = $3 and revoked_at is null",
        )
        .bind(hex::encode(public_key))
        .bind(now)
        .bind(&terminal_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::NotFound);
        }
        self.terminal(&terminal_id).await
    }

    pub async fn create_pairing_token(&self, terminal_id: &str, token: &str, ttl_ms: i64) -> StoreResult<i64> {
        let expires = now_ms() + ttl_ms;
        sqlx::query("insert into pairing_token (token_hash, terminal_id, expires_at) values ($1, $2, $3)")
            .bind(sha256_hex(token))
            .bind(terminal_id)
            .bind(expires)
            .execute(&self.pool)
            .await?;
        Ok(expires)
    }

    /// Spend a pairing token and bind a browser (by the hash of its cookie value) to the terminal.
    pub async fn redeem_pairing_token(&self, token: &str, binding: &str) -> StoreResult<BrowserPairing> {
        let now = now_ms();
        let terminal_id = self.spend_once(OneTime::PairingToken, &sha256_hex(token), now).await?;
        let pairing_id = new_id("p");
        sqlx::query("insert into browser_pairing (pairing_id, binding_hash, terminal_id, created_at) values ($1, $2, $3, $4)")
            .bind(&pairing_id)
            .bind(sha256_hex(binding))
            .bind(&terminal_id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(BrowserPairing { pairing_id, terminal_id, created_at: now, revoked_at: None })
    }

    /// The live pairing behind a browser's binding cookie.
    pub async fn pairing_by_binding(&self, binding: &str) -> StoreResult<BrowserPairing> {
        let row: PairingRow = sqlx::query_as(&format!(
            "select {PAIRING_COLUMNS} from browser_pairing where binding_hash = $1 and revoked_at is null"
        ))
        .bind(sha256_hex(binding))
        .fetch_one(&self.pool)
        .await?;
        Ok(pairing_from(row))
    }

    pub async fn pairing(&self, pairing_id: &str) -> StoreResult<BrowserPairing> {
        let row: PairingRow = sqlx::query_as(&format!("select {PAIRING_COLUMNS} from browser_pairing where pairing_id = $1"))
            .bind(pairing_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(pairing_from(row))
    }

    pub async fn pairings(&self, terminal_id: &str) -> StoreResult<Vec<BrowserPairing>> {
        let rows: Vec<PairingRow> = sqlx::query_as(&format!(
            "select {PAIRING_COLUMNS} from browser_pairing where terminal_id = $1 order by created_at"
        ))
        .bind(terminal_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(pairing_from).collect())
    }

    /// S400: remember a read made at `now` (unix ms), live for `ttl_ms`, in one transaction (one
    /// commit on the critical path of a tap): the read itself (keyed hash, last four digits, whether the card authenticated), its audit
    /// event, and the spending of the allow-once consent of the page's session that it used (a
    /// consent given "once" allows exactly this read).
    pub async fn record_card_read(&self, read: &CardRead, last4: &str, ttl_ms: i64, now: i64, audit: ReadAudit<'_>) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "insert into card_read (read_id, terminal_id, user_id, pan_hash, last4, kind, created_at, expires_at, authenticated) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&read.read_id)
        .bind(&read.terminal_id)
        .bind(&read.user_id)
        .bind(&read.pan_hash)
        .bind(last4)
        .bind(&read.kind)
        .bind(now)
        .bind(now + ttl_ms)
        .bind(flag(read.authenticated))
        .execute(tx.conn())
        .await?;
        sqlx::query("delete from consent_once where session_hash = $1 and terminal_id = $2")
            .bind(audit.session_hash)
            .bind(&read.terminal_id)
            .execute(tx.conn())
            .await?;
        tx.audit(&read.user_id, "card.read", &read.terminal_id, audit.detail).await?;
        tx.commit().await
    }

    /// A card read that has not expired at `now` (unix ms), for this user. Reads may back several
    /// requests about the same card until they expire (balance, then transactions).
    pub async fn live_card_read(&self, read_id: &str, user_id: &str, now: i64) -> StoreResult<CardRead> {
        let row: (String, String, String, String, String, i64) = sqlx::query_as(
            "select read_id, terminal_id, user_id, pan_hash, kind, authenticated from card_read \
             where read_id = $1 and user_id = $2 and expires_at > $3",
        )
        .bind(read_id)
        .bind(user_id)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        sqlx::query("update card_read set used_at = $1 where read_id = $2 and used_at is null")
            .bind(now)
            .bind(read_id)
            .execute(&self.pool)
            .await?;
        Ok(CardRead { read_id: row.0, terminal_id: row.1, user_id: row.2, pan_hash: row.3, kind: row.4, authenticated: row.5 != 0 })
    }
}

/// Changes that go with an audit event: made inside a [`StoreTx`] so both commit or neither does.
impl StoreTx {
    /// A new permitted terminal; returns its id.
    pub async fn create_terminal(&mut self, name: &str) -> StoreResult<String> {
        let terminal_id = new_id("t");
        sqlx::query("insert into terminal (terminal_id, name, permitted, created_at) values ($1, $2, 1, $3)")
            .bind(&terminal_id)
            .bind(name)
            .bind(now_ms())
            .execute(self.conn())
            .await?;
        Ok(terminal_id)
    }

    /// Store a fresh one-time enrolment code (only its hash is kept); returns when it expires.
    pub async fn create_enrolment_code(&mut self, terminal_id: &str, code: &str, ttl_ms: i64) -> StoreResult<i64> {
        let now = now_ms();
        sqlx::query("insert into enrolment_code (code_hash, terminal_id, created_at, expires_at) values ($1, $2, $3, $4)")
            .bind(sha256_hex(code))
            .bind(terminal_id)
            .bind(now)
            .bind(now + ttl_ms)
            .execute(self.conn())
            .await?;
        Ok(now + ttl_ms)
    }

    pub async fn set_terminal_permitted(&mut self, terminal_id: &str, permitted: bool) -> StoreResult<()> {
        let done = sqlx::query("update terminal set permitted = $1 where terminal_id = $2")
            .bind(flag(permitted))
            .bind(terminal_id)
            .execute(self.conn())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Switch self-service top-up on or off for the terminal.
    pub async fn set_terminal_topup(&mut self, terminal_id: &str, enabled: bool) -> StoreResult<()> {
        let done = sqlx::query("update terminal set topup_enabled = $1 where terminal_id = $2")
            .bind(flag(enabled))
            .bind(terminal_id)
            .execute(self.conn())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Revoke the terminal and every browser pairing with it, together.
    pub async fn revoke_terminal(&mut self, terminal_id: &str) -> StoreResult<()> {
        let now = now_ms();
        let done = sqlx::query("update terminal set revoked_at = $1 where terminal_id = $2 and revoked_at is null")
            .bind(now)
            .bind(terminal_id)
            .execute(self.conn())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("update browser_pairing set revoked_at = $1 where terminal_id = $2 and revoked_at is null")
            .bind(now)
            .bind(terminal_id)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    pub async fn revoke_pairing(&mut self, pairing_id: &str) -> StoreResult<BrowserPairing> {
        let done = sqlx::query("update browser_pairing set revoked_at = $1 where pairing_id = $2 and revoked_at is null")
            .bind(now_ms())
            .bind(pairing_id)
            .execute(self.conn())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let row: PairingRow = sqlx::query_as(&format!("select {PAIRING_COLUMNS} from browser_pairing where pairing_id = $1"))
            .bind(pairing_id)
            .fetch_one(self.conn())
            .await?;
        Ok(pairing_from(row))
    }
}
