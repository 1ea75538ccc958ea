//! Top-ups at rest: the durable row of each top-up (its state, with the pending load that resolves
//! a torn write), the ledger postings written in the same transaction as each state change, and
//! at most one open top-up per card (a unique index).

use card::purse::{CardSerial, PendingLoad};

use super::{Store, StoreError, StoreResult, StoreTx};
use crate::topup::{Account, ExceptionReason, FailReason, Fen, Leg, Side, State, Timestamp, TopUp, TopUpId};

const COLUMNS: &str = "topup_id, card_serial, binding_id, amount_minor, state, reason, pending_load, debited, credited, debit_failures, \
                       recovery_failures, refund_failures, write_attempts, pending_since, created_at, updated_at, version";

/// One `topup` row as stored (more columns than sqlx's tuples take).
#[derive(sqlx::FromRow)]
struct Row {
    topup_id: String,
    card_serial: String,
    binding_id: String,
    amount_minor: i64,
    state: String,
    reason: Option<String>,
    pending_load: Option<String>,
    debited: i64,
    credited: i64,
    debit_failures: i64,
    recovery_failures: i64,
    refund_failures: i64,
    write_attempts: i64,
    pending_since: Option<i64>,
    created_at: i64,
    updated_at: i64,
    version: i64,
}

/// A recorded top-up and the version its next transition must name.
#[derive(Debug, Clone)]
pub struct StoredTopUp {
    pub topup: TopUp,
    pub version: i64,
    /// The bank card binding the money comes from.
    pub binding_id: String,
}

fn serial_hex(serial: &CardSerial) -> String {
    serial.to_hex()
}

pub(super) fn serial_from(hex_text: &str) -> Result<CardSerial, String> {
    let bytes: [u8; 8] = hex::decode(hex_text).ok().and_then(|b| b.try_into().ok()).ok_or("card serial")?;
    Ok(CardSerial::new(bytes))
}

/// Layout: serial 8 ‖ online serial 2 ‖ old balance 4 ‖ amount 4 ‖ terminal 6 ‖ date 4 ‖ time 3 ‖
/// MAC2 4 bytes, hex.
pub(super) fn pending_hex(p: &PendingLoad) -> String {
    let mut out = Vec::with_capacity(35);
    out.extend(p.card_serial.bytes());
    out.extend(p.online_serial.to_be_bytes());
    out.extend(p.old_balance.to_be_bytes());
    out.extend(p.amount.to_be_bytes());
    out.extend(p.terminal_id);
    out.extend(p.date);
    out.extend(p.time);
    out.extend(p.mac2);
    hex::encode_upper(out)
}

pub(super) fn pending_from(hex_text: &str) -> Result<PendingLoad, String> {
    let b = hex::decode(hex_text).map_err(|_| "pending load is not hex")?;
    if b.len() != 35 {
        return Err("pending load of the wrong length".into());
    }
    let arr = |r: std::ops::Range<usize>| b[r].to_vec();
    Ok(PendingLoad {
        card_serial: CardSerial::new(arr(0..8).try_into().map_err(|_| "serial")?),
        online_serial: u16::from_be_bytes([b[8], b[9]]),
        old_balance: u32::from_be_bytes([b[10], b[11], b[12], b[13]]),
        amount: u32::from_be_bytes([b[14], b[15], b[16], b[17]]),
        terminal_id: arr(18..24).try_into().map_err(|_| "terminal")?,
        date: arr(24..28).try_into().map_err(|_| "date")?,
        time: arr(28..31).try_into().map_err(|_| "time")?,
        mac2: arr(31..35).try_into().map_err(|_| "mac2")?,
    })
}

fn fail_reason_code(r: FailReason) -> &'static str {
    match r {
        FailReason::DebitDeclined => "debit_declined",
        FailReason::NotDebited => "not_debited",
    }
}

const EXCEPTIONS: [ExceptionReason; 4] = [
    ExceptionReason::DebitUnresolved,
    ExceptionReason::WriteUnresolved,
    ExceptionReason::RefundUnresolved,
    ExceptionReason::RefundDeclined,
];

/// The state's columns: name, reason, pending load.
fn state_columns(state: &State) -> (&'static str, Option<&'static str>, Option<String>) {
    let (reason, pending) = match state {
        State::WriteSent { pending } | State::WriteUnknown { pending } => (None, Some(pending_hex(pending))),
        State::Failed { reason } => (Some(fail_reason_code(*reason)), None),
        State::Exception { reason } => (Some(reason.code()), None),
        _ => (None, None),
    };
    (state.name(), reason, pending)
}

fn state_from(name: &str, reason: Option<&str>, pending: Option<&str>) -> Result<State, String> {
    let pending = || pending.ok_or("a write state without its pending load".to_string()).and_then(pending_from);
    Ok(match name {
        "initiated" => State::Initiated,
        "debit_sent" => State::DebitSent,
        "debit_unknown" => State::DebitUnknown,
        "debit_confirmed" => State::DebitConfirmed,
        "write_sent" => State::WriteSent { pending: pending()? },
        "write_unknown" => State::WriteUnknown { pending: pending()? },
        "write_pending" => State::WritePending,
        "refund_sent" => State::RefundSent,
        "completed" => State::Completed,
        "refunded" => State::Refunded,
        "failed" => State::Failed {
            reason: [FailReason::DebitDeclined, FailReason::NotDebited]
                .into_iter()
                .find(|r| Some(fail_reason_code(*r)) == reason)
                .ok_or("a failed top-up without a known reason")?,
        },
        "exception" => State::Exception {
            reason: EXCEPTIONS.into_iter().find(|r| Some(r.code()) == reason).ok_or("an exception without a known reason")?,
        },
        other => return Err(format!("unknown top-up state {other:?}")),
    })
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Debit => "debit",
        Side::Credit => "credit",
    }
}

fn topup_from(r: Row) -> StoreResult<StoredTopUp> {
    let corrupt = |what: String| StoreError::Corrupt(format!("top-up {}: {what}", r.topup_id));
    let card = serial_from(&r.card_serial).map_err(|e| corrupt(e.to_string()))?;
    let state = state_from(&r.state, r.reason.as_deref(), r.pending_load.as_deref()).map_err(corrupt)?;
    let count = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
    Ok(StoredTopUp {
        topup: TopUp {
            id: TopUpId::new(r.topup_id.clone()),
            card,
            amount: r.amount_minor,
            state,
            created_at: Timestamp(r.created_at),
            updated_at: Timestamp(r.updated_at),
            debited: r.debited != 0,
            credited: r.credited != 0,
            debit_failures: count(r.debit_failures),
            recovery_failures: count(r.recovery_failures),
            refund_failures: count(r.refund_failures),
            write_attempts: count(r.write_attempts),
            pending_since: r.pending_since.map(Timestamp),
        },
        version: r.version,
        binding_id: r.binding_id,
    })
}

impl Store {
    pub async fn topup(&self, topup_id: &str) -> StoreResult<StoredTopUp> {
        let row: Row = sqlx::query_as(&format!("select {COLUMNS} from topup where topup_id = $1"))
            .bind(topup_id)
            .fetch_one(&self.pool)
            .await?;
        topup_from(row)
    }

    /// Top-ups, newest first, optionally in one state: each with the terminal it was asked for at
    /// and the TAC of a completed load (the admin's list).
    pub async fn topups_page(&self, state: Option<&str>, limit: i64, offset: i64) -> StoreResult<Vec<(StoredTopUp, Option<String>, Option<String>)>> {
        let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "select topup_id, terminal_id, tac from topup where ($1 is null or state = $1) \
             order by created_at desc, topup_id limit $2 offset $3",
        )
        .bind(state)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, terminal, tac) in rows {
            out.push((self.topup(&id).await?, terminal, tac));
        }
        Ok(out)
    }

    /// The terminal a top-up was asked for at, if any.
    pub async fn topup_terminal(&self, topup_id: &str) -> StoreResult<Option<String>> {
        let (terminal,): (Option<String>,) = sqlx::query_as("select terminal_id from topup where topup_id = $1")
            .bind(topup_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(terminal)
    }

    /// The card's proof of a completed top-up: the new balance and the TAC (hex).
    pub async fn topup_proof(&self, topup_id: &str) -> StoreResult<Option<(i64, String)>> {
        let (balance, tac): (Option<i64>, Option<String>) =
            sqlx::query_as("select new_balance, tac from topup where topup_id = $1").bind(topup_id).fetch_one(&self.pool).await?;
        Ok(balance.zip(tac))
    }

    /// Open top-ups in one of `states` (by name), oldest first: the worker's queue.
    pub async fn open_topups_in(&self, states: &[&str], limit: i64) -> StoreResult<Vec<StoredTopUp>> {
        let mut out = Vec::new();
        for state in states {
            let rows: Vec<Row> = sqlx::query_as(&format!(
                "select {COLUMNS} from topup where open = 1 and state = $1 order by updated_at, topup_id limit $2"
            ))
            .bind(*state)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            for row in rows {
                out.push(topup_from(row)?);
            }
        }
        Ok(out)
    }

    /// The bank's token of a binding (also of one removed since: a top-up it paid for may still
    /// need a refund).
    pub async fn binding_token(&self, binding_id: &str) -> StoreResult<String> {
        let (token,): (String,) = sqlx::query_as("select bank_token from bank_binding where binding_id = $1")
            .bind(binding_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(token)
    }

    /// The card's open top-up, if any (at most one, by the unique index).
    pub async fn open_topup_of_card(&self, card: &CardSerial) -> StoreResult<Option<StoredTopUp>> {
        let row: Option<Row> = sqlx::query_as(&format!("select {COLUMNS} from topup where card_serial = $1 and open = 1"))
            .bind(serial_hex(card))
            .fetch_optional(&self.pool)
            .await?;
        row.map(topup_from).transpose()
    }

    /// The balance of every ledger account over every posting, on the account's normal side (as
    /// `topup::Ledger::balance` counts it).
    pub async fn ledger_balances(&self) -> StoreResult<Vec<(Account, Fen)>> {
        let mut out = Vec::new();
        for account in Account::ALL {
            let (net,): (i64,) = sqlx::query_as(
                "select cast(coalesce(sum(case when side = 'debit' then amount_minor else -amount_minor end), 0) as bigint) \
                 from ledger_posting where account = $1",
            )
            .bind(account.name())
            .fetch_one(&self.pool)
            .await?;
            out.push((account, if account.debit_normal() { net } else { -net }));
        }
        Ok(out)
    }
}

impl StoreTx {
    /// Record a new top-up paid from `binding_id`. A second open top-up for the same card is a
    /// conflict.
    pub async fn insert_topup(&mut self, t: &TopUp, binding_id: &str, terminal_id: Option<&str>) -> StoreResult<()> {
        let (state, reason, pending) = state_columns(&t.state);
        sqlx::query(&format!(
            "insert into topup ({COLUMNS}, open, terminal_id) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 0, $17, $18)"
        ))
        .bind(t.id.as_str())
        .bind(serial_hex(&t.card))
        .bind(binding_id)
        .bind(t.amount)
        .bind(state)
        .bind(reason)
        .bind(pending)
        .bind(i64::from(t.debited))
        .bind(i64::from(t.credited))
        .bind(i64::from(t.debit_failures))
        .bind(i64::from(t.recovery_failures))
        .bind(i64::from(t.refund_failures))
        .bind(i64::from(t.write_attempts))
        .bind(t.pending_since.map(|p| p.0))
        .bind(t.created_at.0)
        .bind(t.updated_at.0)
        .bind(i64::from(!t.state.is_terminal()))
        .bind(terminal_id)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Keep the card's proof of a completed load: the new balance and the TAC it signed, and the
    /// load that TAC covers (what CREDIT FOR LOAD was sent with), so that reconciliation (R3.7)
    /// can verify the TAC with the card's key.
    pub async fn set_topup_proof(&mut self, topup_id: &str, new_balance: u32, tac: &[u8; 4], load: Option<&PendingLoad>) -> StoreResult<()> {
        sqlx::query("update topup set new_balance = $1, tac = $2, load_proof = $3 where topup_id = $4")
            .bind(i64::from(new_balance))
            .bind(hex::encode_upper(tac))
            .bind(load.map(pending_hex))
            .bind(topup_id)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// Record `next` over the row at `version`, and its postings. A row that moved on since it was
    /// read (another worker, another instance) is a conflict: nothing is written.
    pub async fn record_transition(&mut self, version: i64, next: &TopUp, postings: &[Leg]) -> StoreResult<()> {
        let (state, reason, pending) = state_columns(&next.state);
        let done = sqlx::query(
            "update topup set state = $1, reason = $2, pending_load = $3, debited = $4, credited = $5, debit_failures = $6, \
             recovery_failures = $7, refund_failures = $8, write_attempts = $9, pending_since = $10, updated_at = $11, \
             version = version + 1, open = $12 where topup_id = $13 and version = $14",
        )
        .bind(state)
        .bind(reason)
        .bind(pending)
        .bind(i64::from(next.debited))
        .bind(i64::from(next.credited))
        .bind(i64::from(next.debit_failures))
        .bind(i64::from(next.recovery_failures))
        .bind(i64::from(next.refund_failures))
        .bind(i64::from(next.write_attempts))
        .bind(next.pending_since.map(|p| p.0))
        .bind(next.updated_at.0)
        .bind(i64::from(!next.state.is_terminal()))
        .bind(next.id.as_str())
        .bind(version)
        .execute(self.conn())
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict("topup.version".into()));
        }
        for leg in postings {
            sqlx::query(
                "insert into ledger_posting (topup_id, card_serial, account, side, amount_minor, at) values ($1, $2, $3, $4, $5, $6)",
            )
            .bind(next.id.as_str())
            .bind(serial_hex(&next.card))
            .bind(leg.account.name())
            .bind(side_name(leg.side))
            .bind(leg.amount)
            .bind(next.updated_at.0)
            .execute(self.conn())
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_loads_and_states_round_trip_through_their_columns() {
        let pending = PendingLoad {
            card_serial: CardSerial::new([1, 2, 3, 4, 5, 6, 7, 8]),
            online_serial: 0x1234,
            old_balance: 100,
            amount: 2000,
            terminal_id: [0, 0, 0, 0, 0, 9],
            date: [0x20, 0x26, 0x12, 0x03],
            time: [0x14, 0x30, 0x00],
            mac2: [0xDE, 0xAD, 0xBE, 0xEF],
        };
        for state in [
            State::Initiated,
            State::WriteUnknown { pending: pending.clone() },
            State::Failed { reason: FailReason::NotDebited },
            State::Exception { reason: ExceptionReason::RefundDeclined },
        ] {
            let (name, reason, pending) = state_columns(&state);
            assert_eq!(state_from(name, reason, pending.as_deref()).unwrap(), state);
        }
        assert!(state_from("write_sent", None, None).is_err());
        assert!(state_from("exception", Some("made_up"), None).is_err());
        assert!(pending_from("00").is_err());
    }
}
