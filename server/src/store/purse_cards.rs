//! Stored-value (purse) cards the issuer knows (R3.3): who holds each, the bank card it is topped up from, and whether it is blocked; and the sums of a card's and a bank card's recent top-ups the R3.4 rules look at.
//!
//! Card serials are kept as 16 upper-case hex digits (`CardSerial::to_hex`), as in `topup`.
//! Every change is a [`StoreTx`] method so that the caller writes its audit event in the same
//! transaction.

use card::purse::CardSerial;

use super::{Store, StoreError, StoreResult, StoreTx};

/// Whether a registered card may be topped up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurseCardStatus {
    Active,
    /// Reported lost or stolen, or closed: refused at admission.
    Blocked,
}

impl PurseCardStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PurseCardStatus::Active => "active",
            PurseCardStatus::Blocked => "blocked",
        }
    }

    pub fn parse(s: &str) -> Option<PurseCardStatus> {
        match s {
            "active" => Some(PurseCardStatus::Active),
            "blocked" => Some(PurseCardStatus::Blocked),
            _ => None,
        }
    }
}

/// One registered purse card.
#[derive(Debug, Clone)]
pub struct PurseCardRecord {
    pub card_serial: CardSerial,
    /// The holder (a cardholder account).
    pub user_id: String,
    /// The bank card it is topped up from (R3.5), once bound.
    pub binding_id: Option<String>,
    pub status: PurseCardStatus,
    pub blocked_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A line of the admin list: the card, its holder's user name, and the last four digits of the
/// bank card it is bound to (if the binding is still live).
#[derive(Debug, Clone)]
pub struct PurseCardListing {
    pub card: PurseCardRecord,
    pub username: String,
    pub binding_last4: Option<String>,
}

/// Sums in fen of the top-ups that are not `failed` or `refunded`, per window (see
/// `topup::rules::Facts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TopUpTotals {
    pub card_day: i64,
    pub card_month: i64,
    pub binding_day: i64,
    pub binding_month: i64,
    /// The card's top-ups (a count) since the start of the velocity window.
    pub card_recent: i64,
}

type CardRow = (String, String, Option<String>, String, Option<String>, i64, i64);
/// A card row, its holder's user name and the bound card's last four digits.
type ListingRow = (String, String, Option<String>, String, Option<String>, i64, i64, String, Option<String>);
const CARD_COLUMNS: &str = "p.card_serial, p.user_id, p.binding_id, p.status, p.blocked_reason, p.created_at, p.updated_at";

fn card_from(r: CardRow) -> StoreResult<PurseCardRecord> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("purse card: {what}"));
    let bytes: [u8; 8] = hex::decode(&r.0).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| corrupt("serial"))?;
    Ok(PurseCardRecord {
        card_serial: CardSerial::new(bytes),
        user_id: r.1,
        binding_id: r.2,
        status: PurseCardStatus::parse(&r.3).ok_or_else(|| corrupt("status"))?,
        blocked_reason: r.4,
        created_at: r.5,
        updated_at: r.6,
    })
}

/// The states whose money does not count against the limits: nothing was taken, or it was given
/// back.
const NOT_COUNTED: &str = "('failed', 'refunded')";

impl Store {
    /// The registered card with this serial, if any.
    pub async fn purse_card(&self, serial: &CardSerial) -> StoreResult<Option<PurseCardRecord>> {
        let row: Option<CardRow> = sqlx::query_as(&format!("select {CARD_COLUMNS} from purse_card p where p.card_serial = $1"))
            .bind(serial.to_hex())
            .fetch_optional(&self.pool)
            .await?;
        row.map(card_from).transpose()
    }

    /// Registered cards whose serial ends with `serial_suffix` (hex digits, either case; empty:
    /// all), ordered by serial, `limit` of them after skipping `offset`.
    pub async fn purse_cards(&self, serial_suffix: &str, limit: i64, offset: i64) -> StoreResult<Vec<PurseCardListing>> {
        if serial_suffix.len() > 16 || !serial_suffix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::Invalid("purse_card.card_serial suffix".into()));
        }
        // Hex digits only, so the pattern holds no wildcard but its own.
        let pattern = format!("%{}", serial_suffix.to_ascii_uppercase());
        let rows: Vec<ListingRow> =
            sqlx::query_as(&format!(
                "select {CARD_COLUMNS}, u.username, b.last4 from purse_card p \
                 join app_user u on u.user_id = p.user_id \
                 left join bank_binding b on b.binding_id = p.binding_id and b.removed_at is null \
                 where p.card_serial like $1 order by p.card_serial limit $2 offset $3"
            ))
            .bind(pattern)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| {
                let card = card_from((r.0, r.1, r.2, r.3, r.4, r.5, r.6))?;
                Ok(PurseCardListing { card, username: r.7, binding_last4: r.8 })
            })
            .collect()
    }

    /// [`Store::topup_facts`] over the windows the rules give for an instant
    /// (`topup::rules::Rules::windows`).
    pub async fn topup_totals(
        &self,
        card_serial: &CardSerial,
        binding_id: Option<&str>,
        windows: crate::topup::rules::Windows,
    ) -> StoreResult<TopUpTotals> {
        self.topup_facts(card_serial, binding_id, windows.day_start.0, windows.month_start.0, windows.velocity_since.0).await
    }

    /// What the R3.4 rules need to know of the past: the sums of the card's top-ups since
    /// `day_start_ms` and `month_start_ms`, the same for the binding (over all its cards; zero
    /// without one), and how many top-ups the card had since `velocity_since_ms`. Top-ups that
    /// `failed` or were `refunded` do not count; every other state does (money was or may have
    /// been taken).
    pub async fn topup_facts(
        &self,
        card_serial: &CardSerial,
        binding_id: Option<&str>,
        day_start_ms: i64,
        month_start_ms: i64,
        velocity_since_ms: i64,
    ) -> StoreResult<TopUpTotals> {
        let earliest = day_start_ms.min(month_start_ms).min(velocity_since_ms);
        let (card_day, card_month, card_recent): (i64, i64, i64) = sqlx::query_as(&format!(
            "select cast(coalesce(sum(case when created_at >= $2 then amount_minor else 0 end), 0) as bigint), \
                    cast(coalesce(sum(case when created_at >= $3 then amount_minor else 0 end), 0) as bigint), \
                    cast(coalesce(sum(case when created_at >= $4 then 1 else 0 end), 0) as bigint) \
             from topup where card_serial = $1 and created_at >= $5 and state not in {NOT_COUNTED}"
        ))
        .bind(card_serial.to_hex())
        .bind(day_start_ms)
        .bind(month_start_ms)
        .bind(velocity_since_ms)
        .bind(earliest)
        .fetch_one(&self.pool)
        .await?;
        let (binding_day, binding_month) = match binding_id {
            None => (0, 0),
            Some(binding_id) => {
                sqlx::query_as(&format!(
                    "select cast(coalesce(sum(case when created_at >= $2 then amount_minor else 0 end), 0) as bigint), \
                            cast(coalesce(sum(case when created_at >= $3 then amount_minor else 0 end), 0) as bigint) \
                     from topup where binding_id = $1 and created_at >= $4 and state not in {NOT_COUNTED}"
                ))
                .bind(binding_id)
                .bind(day_start_ms)
                .bind(month_start_ms)
                .bind(day_start_ms.min(month_start_ms))
                .fetch_one(&self.pool)
                .await?
            }
        };
        Ok(TopUpTotals { card_day, card_month, binding_day, binding_month, card_recent })
    }
}

impl StoreTx {
    /// Register an active card held by `user_id`. A serial registered already is a conflict;
    /// an unknown user or binding a reference error.
    pub async fn insert_purse_card(
        &mut self,
        serial: &CardSerial,
        user_id: &str,
        binding_id: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<PurseCardRecord> {
        sqlx::query(
            "insert into purse_card (card_serial, user_id, binding_id, status, blocked_reason, created_at, updated_at) \
             values ($1, $2, $3, 'active', null, $4, $4)",
        )
        .bind(serial.to_hex())
        .bind(user_id)
        .bind(binding_id)
        .bind(now_ms)
        .execute(self.conn())
        .await?;
        Ok(PurseCardRecord {
            card_serial: *serial,
            user_id: user_id.to_string(),
            binding_id: binding_id.map(str::to_string),
            status: PurseCardStatus::Active,
            blocked_reason: None,
            created_at: now_ms,
            updated_at: now_ms,
        })
    }

    /// Set (or clear) the bank card the card is topped up from.
    pub async fn set_purse_card_binding(&mut self, serial: &CardSerial, binding_id: Option<&str>, now_ms: i64) -> StoreResult<()> {
        let done = sqlx::query("update purse_card set binding_id = $1, updated_at = $2 where card_serial = $3")
            .bind(binding_id)
            .bind(now_ms)
            .bind(serial.to_hex())
            .execute(self.conn())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Block an active card, with the reason. `Ok(false)`: it was blocked already (nothing
    /// changed); `NotFound`: no such card.
    pub async fn block_purse_card(&mut self, serial: &CardSerial, reason: &str, now_ms: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "update purse_card set status = 'blocked', blocked_reason = $1, updated_at = $2 where card_serial = $3 and status = 'active'",
        )
        .bind(reason)
        .bind(now_ms)
        .bind(serial.to_hex())
        .execute(self.conn())
        .await?;
        self.changed_or_present(done.rows_affected(), serial).await
    }

    /// Unblock a blocked card (its reason is cleared). `Ok(false)`: it was active already;
    /// `NotFound`: no such card.
    pub async fn unblock_purse_card(&mut self, serial: &CardSerial, now_ms: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "update purse_card set status = 'active', blocked_reason = null, updated_at = $1 where card_serial = $2 and status = 'blocked'",
        )
        .bind(now_ms)
        .bind(serial.to_hex())
        .execute(self.conn())
        .await?;
        self.changed_or_present(done.rows_affected(), serial).await
    }

    async fn changed_or_present(&mut self, rows_affected: u64, serial: &CardSerial) -> StoreResult<bool> {
        if rows_affected > 0 {
            return Ok(true);
        }
        let present: Option<(String,)> = sqlx::query_as("select card_serial from purse_card where card_serial = $1")
            .bind(serial.to_hex())
            .fetch_optional(self.conn())
            .await?;
        present.map(|_| false).ok_or(StoreError::NotFound)
    }
}
