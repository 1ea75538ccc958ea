//! Settlements at rest (R3.7): reading a business day's top-ups with their postings and card proofs, and writing and reading the revisions of each day's report (`settlement`, `settlement_item`, migration 0008)

use std::collections::{HashMap, HashSet};

use super::topups::{pending_from, serial_from};
use super::{Store, StoreError, StoreResult, StoreTx};
use crate::settlement::{CardProof, DayTopUp, Item, LedgerSums, Reason, SettlementHeader, StoredSettlement, Window};

#[derive(sqlx::FromRow)]
struct DayRow {
    topup_id: String,
    card_serial: String,
    terminal_id: Option<String>,
    amount_minor: i64,
    state: String,
    created_at: i64,
    new_balance: Option<i64>,
    tac: Option<String>,
    load_proof: Option<String>,
}

#[derive(sqlx::FromRow)]
struct HeaderRow {
    settlement_id: String,
    business_date: String,
    revision: i64,
    digest: String,
    time_zone: String,
    cutoff: String,
    window_start: i64,
    window_end: i64,
    currency: String,
    n_items: i64,
    n_mismatches: i64,
    created_at: i64,
    created_by: String,
}

const HEADER_COLUMNS: &str = "settlement_id, business_date, revision, digest, time_zone, cutoff, window_start, window_end, currency, \
                              n_items, n_mismatches, created_at, created_by";

#[derive(sqlx::FromRow)]
struct ItemRow {
    reason: String,
    topup_id: Option<String>,
    bank_key: Option<String>,
    terminal_id: Option<String>,
    card_masked: Option<String>,
    state: Option<String>,
    amount_minor: i64,
    ledger_debit_minor: i64,
    bank_debit_minor: i64,
    ledger_refund_minor: i64,
    bank_refund_minor: i64,
    bank_lines: i64,
    at: i64,
}

const ITEM_COLUMNS: &str = "reason, topup_id, bank_key, terminal_id, card_masked, state, amount_minor, ledger_debit_minor, bank_debit_minor, \
                            ledger_refund_minor, bank_refund_minor, bank_lines, at";

fn header_from(r: HeaderRow) -> SettlementHeader {
    SettlementHeader {
        settlement_id: r.settlement_id,
        business_date: r.business_date,
        revision: u32::try_from(r.revision).unwrap_or(0),
        digest: r.digest,
        time_zone: r.time_zone,
        cutoff: r.cutoff,
        window: Window { start_ms: r.window_start, end_ms: r.window_end },
        currency: r.currency,
        n_items: r.n_items,
        n_mismatches: r.n_mismatches,
        created_at: r.created_at,
        created_by: r.created_by,
    }
}

fn item_from(r: ItemRow) -> StoreResult<Item> {
    let reason = Reason::from_code(&r.reason).ok_or_else(|| StoreError::Corrupt(format!("settlement item: unknown reason {:?}", r.reason)))?;
    Ok(Item {
        reason,
        topup_id: r.topup_id,
        bank_key: r.bank_key,
        terminal_id: r.terminal_id,
        card_masked: r.card_masked,
        state: r.state,
        amount_minor: r.amount_minor,
        ledger_debit_minor: r.ledger_debit_minor,
        bank_debit_minor: r.bank_debit_minor,
        ledger_refund_minor: r.ledger_refund_minor,
        bank_refund_minor: r.bank_refund_minor,
        bank_lines: r.bank_lines,
        at_ms: r.at,
    })
}

impl Store {
    /// The top-ups asked for in `window`, oldest first, each with its postings summed per account
    /// and the card's proof of a completed load.
    pub async fn settlement_day_topups(&self, window: Window) -> StoreResult<Vec<DayTopUp>> {
        let rows: Vec<DayRow> = sqlx::query_as(
            "select topup_id, card_serial, terminal_id, amount_minor, state, created_at, new_balance, tac, load_proof \
             from topup where created_at >= $1 and created_at < $2 order by created_at, topup_id",
        )
        .bind(window.start_ms)
        .bind(window.end_ms)
        .fetch_all(&self.pool)
        .await?;
        let postings: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
            "select p.topup_id, p.account, p.side, cast(sum(p.amount_minor) as bigint), cast(max(p.at) as bigint) \
             from ledger_posting p join topup t on t.topup_id = p.topup_id \
             where t.created_at >= $1 and t.created_at < $2 group by p.topup_id, p.account, p.side",
        )
        .bind(window.start_ms)
        .bind(window.end_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut sums: HashMap<String, LedgerSums> = HashMap::new();
        for (topup_id, account, side, amount, at) in postings {
            let s = sums.entry(topup_id).or_default();
            match (account.as_str(), side.as_str()) {
                ("bank_receivable", "debit") => s.debit_minor += amount,
                ("card_float", "credit") => s.card_credit_minor += amount,
                ("refunds", "credit") => {
                    s.refund_minor += amount;
                    s.refund_at = Some(s.refund_at.map_or(at, |a| a.max(at)));
                }
                _ => {}
            }
        }
        rows.into_iter()
            .map(|r| {
                let corrupt = |what: String| StoreError::Corrupt(format!("top-up {}: {what}", r.topup_id));
                let card = serial_from(&r.card_serial).map_err(corrupt)?;
                let load = r.load_proof.as_deref().map(pending_from).transpose().map_err(corrupt)?;
                Ok(DayTopUp {
                    ledger: sums.remove(&r.topup_id).unwrap_or_default(),
                    topup_id: r.topup_id,
                    card,
                    terminal_id: r.terminal_id,
                    amount_minor: r.amount_minor,
                    state: r.state,
                    created_at: r.created_at,
                    proof: CardProof { tac: r.tac, new_balance: r.new_balance, load },
                })
            })
            .collect()
    }

    /// Which of `ids` are top-ups (of any day).
    pub async fn existing_topup_ids(&self, ids: &[String]) -> StoreResult<HashSet<String>> {
        let mut found = HashSet::new();
        for id in ids {
            let row: Option<(String,)> = sqlx::query_as("select topup_id from topup where topup_id = $1").bind(id).fetch_optional(&self.pool).await?;
            found.extend(row.map(|r| r.0));
        }
        Ok(found)
    }

    /// The latest revision of `date`'s settlement, if it was ever settled.
    pub async fn latest_settlement_header(&self, date: &str) -> StoreResult<Option<SettlementHeader>> {
        let row: Option<HeaderRow> =
            sqlx::query_as(&format!("select {HEADER_COLUMNS} from settlement where business_date = $1 order by revision desc limit 1"))
                .bind(date)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(header_from))
    }

    /// A revision of `date`'s settlement with its items (the latest when `revision` is `None`).
    pub async fn settlement(&self, date: &str, revision: Option<u32>) -> StoreResult<StoredSettlement> {
        let row: HeaderRow = match revision {
            Some(r) => sqlx::query_as(&format!("select {HEADER_COLUMNS} from settlement where business_date = $1 and revision = $2"))
                .bind(date)
                .bind(i64::from(r))
                .fetch_one(&self.pool)
                .await?,
            None => sqlx::query_as(&format!("select {HEADER_COLUMNS} from settlement where business_date = $1 order by revision desc limit 1"))
                .bind(date)
                .fetch_one(&self.pool)
                .await?,
        };
        let header = header_from(row);
        let rows: Vec<ItemRow> = sqlx::query_as(&format!("select {ITEM_COLUMNS} from settlement_item where settlement_id = $1 order by item_no"))
            .bind(&header.settlement_id)
            .fetch_all(&self.pool)
            .await?;
        let items = rows.into_iter().map(item_from).collect::<StoreResult<_>>()?;
        Ok(StoredSettlement { header, items })
    }

    /// The latest revision of each settled day, newest day first.
    pub async fn settlements(&self, limit: i64) -> StoreResult<Vec<SettlementHeader>> {
        let rows: Vec<HeaderRow> = sqlx::query_as(&format!(
            "select {HEADER_COLUMNS} from settlement s where revision = (select max(revision) from settlement l where l.business_date = s.business_date) \
             order by business_date desc limit $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(header_from).collect())
    }
}

impl StoreTx {
    /// Write a revision and its items. A revision of that day with that number already written
    /// (by a concurrent run) is a conflict: nothing is written.
    pub async fn insert_settlement(&mut self, header: &SettlementHeader, items: &[Item]) -> StoreResult<()> {
        sqlx::query(&format!("insert into settlement ({HEADER_COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"))
            .bind(&header.settlement_id)
            .bind(&header.business_date)
            .bind(i64::from(header.revision))
            .bind(&header.digest)
            .bind(&header.time_zone)
            .bind(&header.cutoff)
            .bind(header.window.start_ms)
            .bind(header.window.end_ms)
            .bind(&header.currency)
            .bind(header.n_items)
            .bind(header.n_mismatches)
            .bind(header.created_at)
            .bind(&header.created_by)
            .execute(self.conn())
            .await?;
        for (n, i) in items.iter().enumerate() {
            sqlx::query(&format!(
                "insert into settlement_item (settlement_id, item_no, class, {ITEM_COLUMNS}) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
            ))
            .bind(&header.settlement_id)
            .bind(n as i64)
            .bind(i.class().code())
            .bind(i.reason.code())
            .bind(&i.topup_id)
            .bind(&i.bank_key)
            .bind(&i.terminal_id)
            .bind(&i.card_masked)
            .bind(&i.state)
            .bind(i.amount_minor)
            .bind(i.ledger_debit_minor)
            .bind(i.bank_debit_minor)
            .bind(i.ledger_refund_minor)
            .bind(i.bank_refund_minor)
            .bind(i.bank_lines)
            .bind(i.at_ms)
            .execute(self.conn())
            .await?;
        }
        Ok(())
    }
}
