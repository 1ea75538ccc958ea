//! The sandbox bank's ledger: accounts, cards, bindings, transfers and refunds in SQLite (WAL,
//! `synchronous=FULL`), every money movement and its idempotency record in one transaction.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use protocol::bank::{self as wire, DeclineReason, MovementKind, TransferStatus};
use sha2::{Digest, Sha256};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Why a ledger call did not produce an outcome.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the card is unknown or the phone is not the one registered for it")]
    BindingRefused,
    #[error("not found")]
    NotFound,
    #[error("the idempotency key was used with another request")]
    IdempotencyConflict,
    #[error("{0}")]
    RefundRefused(&'static str),
    #[error("{0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A customer with one card, seeded at start (idempotent).
#[derive(Debug, Clone)]
pub struct SeedCustomer {
    pub account_id: String,
    pub holder_name: String,
    pub card_number: String,
    pub phone: String,
    pub currency: String,
    pub balance_minor: i64,
}

/// A settlement account of an issuer, seeded at start (idempotent).
#[derive(Debug, Clone)]
pub struct SeedSettlement {
    pub account_id: String,
    pub holder_name: String,
    pub currency: String,
}

/// What a transfer request is forced into by an injected fault, instead of the normal path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forced {
    Decline(DeclineReason),
    Pending,
}

#[derive(Debug, Clone)]
pub struct Ledger {
    pool: SqlitePool,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn random_ref(prefix: &str) -> String {
    use rand::RngCore;
    let mut b = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("{prefix}{}", hex::encode_upper(b))
}

fn request_hash<T: serde::Serialize>(request: &T) -> String {
    hex::encode(Sha256::digest(serde_json::to_vec(request).expect("wire types serialise")))
}

type TransferRow = (String, String, String, Option<String>, String, i64, String, String, Option<String>, String, i64);
const TRANSFER_COLUMNS: &str =
    "idempotency_key, request_hash, binding_token, from_account_id, to_account, amount_minor, currency, status, decline_reason, bank_ref, created_at";

fn status_of(status: &str, reason: Option<&str>) -> TransferStatus {
    match status {
        "completed" => TransferStatus::Completed,
        "pending" => TransferStatus::Pending,
        _ => TransferStatus::Declined { reason: reason.and_then(decline_from_db).unwrap_or(DeclineReason::Other) },
    }
}

fn decline_to_db(reason: DeclineReason) -> &'static str {
    match reason {
        DeclineReason::InsufficientFunds => "insufficient_funds",
        DeclineReason::BindingNotFound => "binding_not_found",
        DeclineReason::UnknownDestination => "unknown_destination",
        DeclineReason::CurrencyMismatch => "currency_mismatch",
        DeclineReason::RiskRefused => "risk_refused",
        DeclineReason::Other => "other",
    }
}

fn decline_from_db(s: &str) -> Option<DeclineReason> {
    Some(match s {
        "insufficient_funds" => DeclineReason::InsufficientFunds,
        "binding_not_found" => DeclineReason::BindingNotFound,
        "unknown_destination" => DeclineReason::UnknownDestination,
        "currency_mismatch" => DeclineReason::CurrencyMismatch,
        "risk_refused" => DeclineReason::RiskRefused,
        "other" => DeclineReason::Other,
        _ => return None,
    })
}

fn transfer_from(r: &TransferRow) -> wire::Transfer {
    wire::Transfer {
        idempotency_key: r.0.clone(),
        status: status_of(&r.7, r.8.as_deref()),
        bank_ref: r.9.clone(),
        amount_minor: r.5,
        currency: r.6.clone(),
        created_at: r.10,
    }
}

impl Ledger {
    /// Open (creating) the SQLite database, assert WAL + `synchronous=FULL`, migrate.
    pub async fn open(database_url: &str) -> anyhow::Result<Ledger> {
        let options = SqliteConnectOptions::from_str(database_url)
            .context("parsing the sandbox database URL (sqlite://…)")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        if let Some(parent) = options.get_filename().parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
        }
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.context("opening the sandbox database")?;
        let (mode,): (String,) = sqlx::query_as("pragma journal_mode").fetch_one(&pool).await?;
        let (sync,): (i64,) = sqlx::query_as("pragma synchronous").fetch_one(&pool).await?;
        anyhow::ensure!(mode.eq_ignore_ascii_case("wal"), "sandbox SQLite journal_mode is {mode}, expected wal");
        anyhow::ensure!(sync == 2, "sandbox SQLite synchronous is {sync}, expected 2 (FULL)");
        MIGRATOR.run(&pool).await.context("applying the sandbox migrations")?;
        Ok(Ledger { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A read of the ledger, for the health probe.
    pub async fn ping(&self) -> Result<(), LedgerError> {
        sqlx::query("select count(*) from account").fetch_one(&self.pool).await?;
        Ok(())
    }

    pub async fn seed_settlement(&self, s: &SeedSettlement) -> anyhow::Result<()> {
        sqlx::query("insert into account (account_id, kind, holder_name, currency, balance_minor) values ($1, 'settlement', $2, $3, 0) on conflict do nothing")
            .bind(&s.account_id)
            .bind(&s.holder_name)
            .bind(&s.currency)
            .execute(&self.pool)
            .await
            .context("seeding a settlement account")?;
        Ok(())
    }

    pub async fn seed_customer(&self, c: &SeedCustomer) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("insert into account (account_id, kind, holder_name, currency, balance_minor) values ($1, 'customer', $2, $3, $4) on conflict do nothing")
            .bind(&c.account_id)
            .bind(&c.holder_name)
            .bind(&c.currency)
            .bind(c.balance_minor)
            .execute(&mut *tx)
            .await
            .context("seeding a customer account")?;
        sqlx::query("insert into card (card_number, account_id, phone) values ($1, $2, $3) on conflict do nothing")
            .bind(&c.card_number)
            .bind(&c.account_id)
            .bind(normalise_phone(&c.phone))
            .execute(&mut *tx)
            .await
            .context("seeding a card")?;
        tx.commit().await?;
        Ok(())
    }

    /// Balance of an account, `None` when there is no such account.
    pub async fn balance(&self, account_id: &str) -> anyhow::Result<Option<i64>> {
        let row: Option<(i64,)> = sqlx::query_as("select balance_minor from account where account_id = $1")
            .bind(account_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.0))
    }

    /// Remember a request nonce; `false` when it was seen before (a replay).
    pub async fn remember_nonce(&self, nonce: &str, now_ms: i64, keep_ms: i64) -> Result<bool, LedgerError> {
        sqlx::query("delete from seen_nonce where expires_at < $1").bind(now_ms).execute(&self.pool).await?;
        let done = sqlx::query("insert into seen_nonce (nonce, expires_at) values ($1, $2) on conflict do nothing")
            .bind(nonce)
            .bind(now_ms + keep_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn create_binding(&self, req: &wire::CreateBinding) -> Result<wire::Binding, LedgerError> {
        let found: Option<(String,)> = sqlx::query_as("select card_number from card where card_number = $1 and phone = $2")
            .bind(&req.card_number)
            .bind(normalise_phone(&req.phone))
            .fetch_optional(&self.pool)
            .await?;
        let Some((card_number,)) = found else { return Err(LedgerError::BindingRefused) };
        let token = random_ref("bt_").to_lowercase();
        sqlx::query("insert into binding (binding_token, card_number, created_at) values ($1, $2, $3)")
            .bind(&token)
            .bind(&card_number)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        let last4 = card_number[card_number.len().saturating_sub(4)..].to_string();
        Ok(wire::Binding { binding_token: token, card_last4: last4 })
    }

    /// Revoke a binding; revoking twice is fine. `NotFound` when it never existed.
    pub async fn delete_binding(&self, token: &str) -> Result<(), LedgerError> {
        let done = sqlx::query("update binding set revoked_at = coalesce(revoked_at, $2) where binding_token = $1")
            .bind(token)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(LedgerError::NotFound);
        }
        Ok(())
    }

    pub async fn transfer_status(&self, key: &str) -> Result<wire::Transfer, LedgerError> {
        let row: Option<TransferRow> = sqlx::query_as(&format!("select {TRANSFER_COLUMNS} from transfer where idempotency_key = $1"))
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(transfer_from).ok_or(LedgerError::NotFound)
    }

    /// Execute a transfer once per key: debit the customer, credit the settlement account and
    /// record the outcome in one transaction. The same key and body again returns the stored outcome.
    pub async fn transfer(&self, req: &wire::TransferRequest, forced: Option<Forced>) -> Result<wire::Transfer, LedgerError> {
        if req.idempotency_key.is_empty() || req.idempotency_key.len() > 100 {
            return Err(LedgerError::Invalid("idempotency_key must be 1 to 100 characters"));
        }
        if req.amount_minor <= 0 {
            return Err(LedgerError::Invalid("amount_minor must be positive"));
        }
        if req.reference.chars().count() > 140 {
            return Err(LedgerError::Invalid("reference is longer than 140 characters"));
        }
        let hash = request_hash(req);
        // IMMEDIATE: take the write lock first, so that two requests with one key serialise here.
        let mut tx = self.pool.begin_with("begin immediate").await?;
        let existing: Option<TransferRow> = sqlx::query_as(&format!("select {TRANSFER_COLUMNS} from transfer where idempotency_key = $1"))
            .bind(&req.idempotency_key)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = existing {
            if row.1 != hash {
                return Err(LedgerError::IdempotencyConflict);
            }
            return Ok(transfer_from(&row));
        }
        let binding: Option<(String, String)> = sqlx::query_as(
            "select c.account_id, a.currency from binding b join card c on c.card_number = b.card_number \
             join account a on a.account_id = c.account_id where b.binding_token = $1 and b.revoked_at is null",
        )
        .bind(&req.binding_token)
        .fetch_optional(&mut *tx)
        .await?;
        let destination: Option<(String,)> = sqlx::query_as("select currency from account where account_id = $1 and kind = 'settlement'")
            .bind(&req.to_account)
            .fetch_optional(&mut *tx)
            .await?;
        let from_account = binding.as_ref().map(|b| b.0.clone());
        let decision: Result<&str, DeclineReason> = match (&binding, &destination, forced) {
            (_, _, Some(Forced::Decline(reason))) => Err(reason),
            (None, _, _) => Err(DeclineReason::BindingNotFound),
            (_, None, _) => Err(DeclineReason::UnknownDestination),
            (Some((_, from_ccy)), Some((to_ccy,)), _) if *from_ccy != req.currency || *to_ccy != req.currency => {
                Err(DeclineReason::CurrencyMismatch)
            }
            (_, _, Some(Forced::Pending)) => Ok("pending"),
            (Some((account_id, _)), Some(_), None) => {
                if move_money(&mut tx, account_id, &req.to_account, req.amount_minor).await? {
                    Ok("completed")
                } else {
                    Err(DeclineReason::InsufficientFunds)
                }
            }
        };
        let (status, reason) = match decision {
            Ok(status) => (status, None),
            Err(reason) => ("declined", Some(decline_to_db(reason))),
        };
        let now = now_ms();
        sqlx::query(
            "insert into transfer (idempotency_key, request_hash, binding_token, from_account_id, to_account, amount_minor, currency, \
             reference, status, decline_reason, bank_ref, created_at, settled_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&req.idempotency_key)
        .bind(&hash)
        .bind(&req.binding_token)
        .bind(&from_account)
        .bind(&req.to_account)
        .bind(req.amount_minor)
        .bind(&req.currency)
        .bind(&req.reference)
        .bind(status)
        .bind(reason)
        .bind(random_ref("SBT"))
        .bind(now)
        .bind(if status == "pending" { None } else { Some(now) })
        .execute(&mut *tx)
        .await?;
        let row: TransferRow = sqlx::query_as(&format!("select {TRANSFER_COLUMNS} from transfer where idempotency_key = $1"))
            .bind(&req.idempotency_key)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(transfer_from(&row))
    }

    /// Settle every pending transfer: complete it when the funds are there, decline it otherwise.
    /// Returns how many were settled.
    pub async fn settle_pending(&self) -> Result<usize, LedgerError> {
        let mut tx = self.pool.begin_with("begin immediate").await?;
        let pending: Vec<(String, Option<String>, String, i64)> =
            sqlx::query_as("select idempotency_key, from_account_id, to_account, amount_minor from transfer where status = 'pending'")
                .fetch_all(&mut *tx)
                .await?;
        for (key, from, to, amount) in &pending {
            let moved = match from {
                Some(from) => move_money(&mut tx, from, to, *amount).await?,
                None => false,
            };
            let (status, reason) = if moved { ("completed", None) } else { ("declined", Some("insufficient_funds")) };
            sqlx::query("update transfer set status = $2, decline_reason = $3, settled_at = $4 where idempotency_key = $1")
                .bind(key)
                .bind(status)
                .bind(reason)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(pending.len())
    }

    /// Refund part or all of a completed transfer, once per key; the refunds of a transfer never
    /// add up to more than it.
    pub async fn refund(&self, req: &wire::RefundRequest) -> Result<wire::Refund, LedgerError> {
        if req.idempotency_key.is_empty() || req.idempotency_key.len() > 100 {
            return Err(LedgerError::Invalid("idempotency_key must be 1 to 100 characters"));
        }
        if req.amount_minor <= 0 {
            return Err(LedgerError::Invalid("amount_minor must be positive"));
        }
        let hash = request_hash(req);
        let mut tx = self.pool.begin_with("begin immediate").await?;
        type RefundRow = (String, String, String, i64, String, String, i64);
        let select = "select request_hash, idempotency_key, transfer_key, amount_minor, currency, bank_ref, created_at from refund where idempotency_key = $1";
        let to_wire = |r: RefundRow| wire::Refund {
            idempotency_key: r.1,
            transfer_key: r.2,
            amount_minor: r.3,
            currency: r.4,
            bank_ref: r.5,
            created_at: r.6,
        };
        if let Some(row) = sqlx::query_as::<_, RefundRow>(select).bind(&req.idempotency_key).fetch_optional(&mut *tx).await? {
            if row.0 != hash {
                return Err(LedgerError::IdempotencyConflict);
            }
            return Ok(to_wire(row));
        }
        let transfer: Option<(String, Option<String>, String, i64, String)> =
            sqlx::query_as("select status, from_account_id, to_account, amount_minor, currency from transfer where idempotency_key = $1")
                .bind(&req.transfer_key)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((status, from, to, transferred, currency)) = transfer else {
            return Err(LedgerError::NotFound);
        };
        let (Some(from), "completed") = (from, status.as_str()) else {
            return Err(LedgerError::RefundRefused("the transfer did not complete"));
        };
        let (refunded,): (i64,) = sqlx::query_as("select coalesce(sum(amount_minor), 0) from refund where transfer_key = $1")
            .bind(&req.transfer_key)
            .fetch_one(&mut *tx)
            .await?;
        if refunded + req.amount_minor > transferred {
            return Err(LedgerError::RefundRefused("refunds would exceed the transferred amount"));
        }
        // The settlement account may go negative only in principle; it is credited by the transfer.
        sqlx::query("update account set balance_minor = balance_minor - $1 where account_id = $2").bind(req.amount_minor).bind(&to).execute(&mut *tx).await?;
        sqlx::query("update account set balance_minor = balance_minor + $1 where account_id = $2").bind(req.amount_minor).bind(&from).execute(&mut *tx).await?;
        sqlx::query(
            "insert into refund (idempotency_key, request_hash, transfer_key, amount_minor, currency, bank_ref, created_at) values ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&req.idempotency_key)
        .bind(&hash)
        .bind(&req.transfer_key)
        .bind(req.amount_minor)
        .bind(&currency)
        .bind(random_ref("SBR"))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query_as::<_, RefundRow>(select).bind(&req.idempotency_key).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(to_wire(row))
    }

    /// Every transfer and refund recorded on the UTC day `date` (`yyyy-mm-dd`).
    pub async fn statement(&self, date: &str) -> Result<wire::Statement, LedgerError> {
        let day = parse_date(date).ok_or(LedgerError::Invalid("the date must be yyyy-mm-dd"))?;
        let (from, to) = (day * 86_400_000, (day + 1) * 86_400_000);
        let transfers: Vec<TransferRow> =
            sqlx::query_as(&format!("select {TRANSFER_COLUMNS} from transfer where created_at >= $1 and created_at < $2 order by created_at, idempotency_key"))
                .bind(from)
                .bind(to)
                .fetch_all(&self.pool)
                .await?;
        let refunds: Vec<(String, String, i64, String, String, i64)> = sqlx::query_as(
            "select idempotency_key, transfer_key, amount_minor, currency, bank_ref, created_at from refund \
             where created_at >= $1 and created_at < $2 order by created_at, idempotency_key",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        let mut entries = Vec::new();
        let mut totals: Vec<wire::StatementTotal> = Vec::new();
        fn total<'a>(totals: &'a mut Vec<wire::StatementTotal>, currency: &str) -> &'a mut wire::StatementTotal {
            if let Some(i) = totals.iter().position(|t| t.currency == currency) {
                return &mut totals[i];
            }
            totals.push(wire::StatementTotal { currency: currency.to_string(), transferred_minor: 0, refunded_minor: 0 });
            totals.last_mut().expect("just pushed")
        }
        for row in &transfers {
            let t = transfer_from(row);
            if t.status == TransferStatus::Completed {
                total(&mut totals, &t.currency).transferred_minor += t.amount_minor;
            }
            entries.push(wire::StatementEntry {
                kind: MovementKind::Transfer,
                idempotency_key: t.idempotency_key,
                transfer_key: None,
                bank_ref: t.bank_ref,
                amount_minor: t.amount_minor,
                currency: t.currency,
                transfer_status: Some(t.status),
                at: t.created_at,
            });
        }
        for (key, transfer_key, amount, currency, bank_ref, at) in refunds {
            total(&mut totals, &currency).refunded_minor += amount;
            entries.push(wire::StatementEntry {
                kind: MovementKind::Refund,
                idempotency_key: key,
                transfer_key: Some(transfer_key),
                bank_ref,
                amount_minor: amount,
                currency,
                transfer_status: None,
                at,
            });
        }
        entries.sort_by_key(|e| e.at);
        Ok(wire::Statement { date: date.to_string(), entries, totals })
    }
}

/// Debit `from` (only if it has the funds) and credit `to`. `false` when the funds are missing.
async fn move_money(tx: &mut sqlx::SqliteConnection, from: &str, to: &str, amount: i64) -> Result<bool, sqlx::Error> {
    let debited = sqlx::query("update account set balance_minor = balance_minor - $1 where account_id = $2 and balance_minor >= $1")
        .bind(amount)
        .bind(from)
        .execute(&mut *tx)
        .await?;
    if debited.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query("update account set balance_minor = balance_minor + $1 where account_id = $2").bind(amount).bind(to).execute(&mut *tx).await?;
    Ok(true)
}

/// Phones compare without spaces and dashes.
fn normalise_phone(phone: &str) -> String {
    phone.chars().filter(|c| !c.is_whitespace() && *c != '-').collect()
}

/// Days since 1970-01-01 of a `yyyy-mm-dd` date (proleptic Gregorian).
pub fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i64 = s[0..4].parse().ok()?;
    let m: i64 = s[5..7].parse().ok()?;
    let d: i64 = s[8..10].parse().ok()?;
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// `yyyy-mm-dd` of the UTC day containing unix milliseconds `ms`.
pub fn date_of(ms: i64) -> String {
    let z = ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_bad_dates_are_refused() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2024-02-29").map(|d| date_of(d * 86_400_000)), Some("2024-02-29".to_string()));
        assert_eq!(date_of(1_764_720_000_000), "2025-12-03");
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("2023-13-01"), None);
        assert_eq!(parse_date("20230101"), None);
    }
}
