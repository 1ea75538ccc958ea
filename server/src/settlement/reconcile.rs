//! The three-way reconciliation of one business day, pure: the bank's statement lines, the ledger (each top-up with its postings) and the card's proof of each completed load (its TAC, verified with the card's key) — every top-up of the day lands in exactly one class, and so does every completed bank movement of the day that belongs to no top-up
//!
//! The order of the checks is the order of the money: first whether the bank and the ledger
//! agree on the debit (a duplicate line, then the amount, then one side without the other), then
//! on the refund, and only then whether the card proves the load.

use std::collections::{HashMap, HashSet};

use card::purse::keys::PurseKeys;
use card::purse::{CardSerial, PendingLoad};

use super::{Item, Reason, Window};
use crate::bank::{MovementKind, StatementLine, TransferStatus};

/// A top-up's postings, summed per account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LedgerSums {
    /// Debit postings to `bank_receivable`: what the ledger says the bank took.
    pub debit_minor: i64,
    /// Credit postings to `card_float`: what the ledger says is on the card.
    pub card_credit_minor: i64,
    /// Credit postings to `refunds`.
    pub refund_minor: i64,
    /// When the latest refund was posted.
    pub refund_at: Option<i64>,
}

/// The card's proof of a completed load, as kept on the top-up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CardProof {
    /// Hex, as the card signed it.
    pub tac: Option<String>,
    pub new_balance: Option<i64>,
    /// The load the TAC covers (kept since migration 0008).
    pub load: Option<PendingLoad>,
}

/// One top-up asked for during the day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayTopUp {
    pub topup_id: String,
    pub card: CardSerial,
    pub terminal_id: Option<String>,
    pub amount_minor: i64,
    /// The state's name (`completed`, `refunded`, …).
    pub state: String,
    pub created_at: i64,
    pub ledger: LedgerSums,
    pub proof: CardProof,
}

/// Everything one day's reconciliation looks at.
pub struct DayInputs<'a> {
    /// The business day.
    pub window: Window,
    /// Statement lines this long before the day or after it still belong to its top-ups.
    pub grace_ms: i64,
    pub topups: &'a [DayTopUp],
    /// The statement lines of every UTC day the widened window touches.
    pub statement: &'a [StatementLine],
    /// Statement keys that are top-ups of other days (not "unknown" here).
    pub known_elsewhere: &'a HashSet<String>,
    /// To verify the cards' TACs.
    pub keys: &'a dyn PurseKeys,
}

impl std::fmt::Debug for DayInputs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DayInputs").field("window", &self.window).field("topups", &self.topups.len()).finish_non_exhaustive()
    }
}

/// Reconcile the day: one item per top-up, then one per completed bank movement of the day that
/// belongs to no top-up; in time order.
pub fn reconcile(inputs: &DayInputs<'_>) -> Vec<Item> {
    let widened = inputs.window.widened(inputs.grace_ms);
    let lines: Vec<&StatementLine> = inputs.statement.iter().filter(|l| widened.contains(l.at_ms)).collect();
    let mut transfers: HashMap<&str, Vec<&StatementLine>> = HashMap::new();
    let mut refunds: HashMap<&str, Vec<&StatementLine>> = HashMap::new();
    for line in &lines {
        match (line.kind, &line.transfer_key) {
            (MovementKind::Transfer, _) => transfers.entry(line.idempotency_key.as_str()).or_default().push(line),
            (MovementKind::Refund, Some(key)) => refunds.entry(key.as_str()).or_default().push(line),
            (MovementKind::Refund, None) => {}
        }
    }
    let ours: HashSet<&str> = inputs.topups.iter().map(|t| t.topup_id.as_str()).collect();
    let mut items: Vec<Item> = inputs
        .topups
        .iter()
        .map(|t| {
            let lines = transfers.get(t.topup_id.as_str()).map(Vec::as_slice).unwrap_or_default();
            let refund_lines = refunds.get(t.topup_id.as_str()).map(Vec::as_slice).unwrap_or_default();
            topup_item(t, lines, refund_lines, widened, inputs.keys)
        })
        .collect();
    // Completed movements of the day itself that are nobody's top-up.
    for line in lines.iter().filter(|l| inputs.window.contains(l.at_ms)) {
        let (key, completed) = match line.kind {
            MovementKind::Transfer => (line.idempotency_key.as_str(), matches!(line.transfer_status, Some(TransferStatus::Completed { .. }))),
            MovementKind::Refund => (line.transfer_key.as_deref().unwrap_or(line.idempotency_key.as_str()), true),
        };
        if !completed || ours.contains(key) || inputs.known_elsewhere.contains(key) {
            continue;
        }
        let (bank_debit, bank_refund) = match line.kind {
            MovementKind::Transfer => (line.amount_minor, 0),
            MovementKind::Refund => (0, line.amount_minor),
        };
        items.push(Item {
            reason: Reason::UnknownTransfer,
            topup_id: None,
            bank_key: Some(line.idempotency_key.clone()),
            terminal_id: None,
            card_masked: None,
            state: None,
            amount_minor: line.amount_minor,
            ledger_debit_minor: 0,
            bank_debit_minor: bank_debit,
            ledger_refund_minor: 0,
            bank_refund_minor: bank_refund,
            bank_lines: i64::from(line.kind == MovementKind::Transfer),
            at_ms: line.at_ms,
        });
    }
    items.sort_by(|a, b| (a.at_ms, &a.topup_id, &a.bank_key).cmp(&(b.at_ms, &b.topup_id, &b.bank_key)));
    items
}

fn topup_item(t: &DayTopUp, lines: &[&StatementLine], refund_lines: &[&StatementLine], widened: Window, keys: &dyn PurseKeys) -> Item {
    let bank_debit: i64 = lines.iter().filter(|l| matches!(l.transfer_status, Some(TransferStatus::Completed { .. }))).map(|l| l.amount_minor).sum();
    let bank_refund: i64 = refund_lines.iter().map(|l| l.amount_minor).sum();
    // A refund posted after the statement window is not on these statements: compared on neither side.
    let ledger_refund = match t.ledger.refund_at {
        Some(at) if at >= widened.end_ms => 0,
        _ => t.ledger.refund_minor,
    };
    let ledger_debit = t.ledger.debit_minor;
    let reason = classify(t, lines, bank_debit, ledger_debit, bank_refund, ledger_refund, keys);
    Item {
        reason,
        topup_id: Some(t.topup_id.clone()),
        bank_key: lines.first().map(|l| l.idempotency_key.clone()),
        terminal_id: t.terminal_id.clone(),
        card_masked: Some(t.card.masked()),
        state: Some(t.state.clone()),
        amount_minor: t.amount_minor,
        ledger_debit_minor: ledger_debit,
        bank_debit_minor: bank_debit,
        ledger_refund_minor: ledger_refund,
        bank_refund_minor: bank_refund,
        bank_lines: lines.len() as i64,
        at_ms: t.created_at,
    }
}

fn classify(t: &DayTopUp, lines: &[&StatementLine], bank_debit: i64, ledger_debit: i64, bank_refund: i64, ledger_refund: i64, keys: &dyn PurseKeys) -> Reason {
    match lines {
        [] if ledger_debit > 0 => return Reason::MissingFromStatement,
        [] => return Reason::NothingMoved,
        [_, _, ..] => return Reason::StatementDuplicate,
        [line] if line.amount_minor != t.amount_minor => return Reason::AmountDiffers,
        [line] => match (bank_debit > 0, ledger_debit > 0) {
            (true, false) => return Reason::NotDebitedInLedger,
            (false, true) => return Reason::BankNotCompleted,
            (false, false) if matches!(line.transfer_status, Some(TransferStatus::Pending { .. })) => return Reason::InProgress,
            (false, false) => return Reason::Declined,
            (true, true) => {}
        },
    }
    // Bank and ledger agree the customer was debited the top-up's amount once.
    if bank_refund > ledger_refund {
        return Reason::RefundNotInLedger;
    }
    if bank_refund < ledger_refund {
        return Reason::RefundMissingFromStatement;
    }
    if ledger_refund > 0 {
        return Reason::Refunded;
    }
    if t.state != "completed" {
        return Reason::LoadNotFinished;
    }
    card_check(t, keys)
}

/// The card's proof of a completed load: present, about this card and amount, balanced, and a
/// TAC that verifies with the card's key.
fn card_check(t: &DayTopUp, keys: &dyn PurseKeys) -> Reason {
    let Some(tac_text) = &t.proof.tac else { return Reason::NoCardProof };
    let tac: Option<[u8; 4]> = hex::decode(tac_text).ok().and_then(|b| b.try_into().ok());
    let (Some(tac), Some(new_balance)) = (tac, t.proof.new_balance) else { return Reason::ProofInconsistent };
    if t.ledger.card_credit_minor != t.amount_minor {
        return Reason::ProofInconsistent;
    }
    let Some(load) = &t.proof.load else { return Reason::TacUnverifiable };
    let fits = load.card_serial == t.card
        && i64::from(load.amount) == t.amount_minor
        && load.old_balance.checked_add(load.amount).map(i64::from) == Some(new_balance);
    if !fits {
        return Reason::ProofInconsistent;
    }
    match keys.tac_key(&t.card) {
        None => Reason::TacUnverifiable,
        Some(key) if load.tac_verifies(&key, &tac) => Reason::Completed,
        Some(_) => Reason::TacInvalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settlement::Class;
    use card::crypto::DoubleKey;
    use card::purse::keys::{diversify, load_tac};

    const TAC_MASTER: DoubleKey = [0x11; 16];
    const START: i64 = 1_800_000_000_000;
    const HOUR: i64 = 3_600_000;

    struct Keys;
    impl PurseKeys for Keys {
        fn load_key(&self, _: &CardSerial, _: u8, _: u8) -> Option<DoubleKey> {
            None
        }
        fn tac_key(&self, serial: &CardSerial) -> Option<DoubleKey> {
            (serial.bytes()[0] != 0xEE).then(|| diversify(&TAC_MASTER, serial))
        }
    }

    fn window() -> Window {
        Window { start_ms: START, end_ms: START + 24 * HOUR }
    }

    fn load(card: CardSerial, amount: u32) -> PendingLoad {
        PendingLoad {
            card_serial: card,
            online_serial: 3,
            old_balance: 1_000,
            amount,
            terminal_id: [1, 2, 3, 4, 5, 6],
            date: [0x20, 0x27, 0x01, 0x15],
            time: [0x10, 0x00, 0x00],
            mac2: [0; 4],
        }
    }

    /// A top-up that completed with a genuine TAC, debited and credited `amount`.
    fn completed(id: &str, n: u8, amount: i64) -> DayTopUp {
        let card = CardSerial::new([n; 8]);
        let load = load(card, amount as u32);
        let tac = load_tac(&diversify(&TAC_MASTER, &card), &load.tac_input().unwrap());
        DayTopUp {
            topup_id: id.into(),
            card,
            terminal_id: Some("t_1".into()),
            amount_minor: amount,
            state: "completed".into(),
            created_at: START + i64::from(n) * 60_000,
            ledger: LedgerSums { debit_minor: amount, card_credit_minor: amount, refund_minor: 0, refund_at: None },
            proof: CardProof { tac: Some(hex::encode_upper(tac)), new_balance: Some(1_000 + amount), load: Some(load) },
        }
    }

    fn transfer(key: &str, amount: i64, status: TransferStatus, at_ms: i64) -> StatementLine {
        StatementLine {
            kind: MovementKind::Transfer,
            idempotency_key: key.into(),
            transfer_key: None,
            bank_ref: format!("SBT-{key}"),
            amount_minor: amount,
            currency: "CNY".into(),
            transfer_status: Some(status),
            at_ms,
        }
    }

    fn done(key: &str, amount: i64, at_ms: i64) -> StatementLine {
        transfer(key, amount, TransferStatus::Completed { bank_ref: "r".into(), amount_minor: amount }, at_ms)
    }

    fn refund(transfer_key: &str, amount: i64, at_ms: i64) -> StatementLine {
        StatementLine {
            kind: MovementKind::Refund,
            idempotency_key: format!("{transfer_key}:refund"),
            transfer_key: Some(transfer_key.into()),
            bank_ref: "SBR".into(),
            amount_minor: amount,
            currency: "CNY".into(),
            transfer_status: None,
            at_ms,
        }
    }

    fn run(topups: &[DayTopUp], statement: &[StatementLine]) -> Vec<Item> {
        let known = HashSet::from(["tu-yesterday".to_string()]);
        reconcile(&DayInputs { window: window(), grace_ms: HOUR, topups, statement, known_elsewhere: &known, keys: &Keys })
    }

    fn reason_of(items: &[Item], id: &str) -> Reason {
        items.iter().find(|i| i.topup_id.as_deref() == Some(id)).unwrap_or_else(|| panic!("no item for {id}")).reason
    }

    #[test]
    fn a_completed_top_up_with_its_debit_and_a_genuine_tac_is_matched() {
        let t = completed("tu-1", 1, 5_000);
        let items = run(std::slice::from_ref(&t), &[done("tu-1", 5_000, t.created_at + 900)]);
        assert_eq!(items.len(), 1);
        assert_eq!((items[0].reason, items[0].class()), (Reason::Completed, Class::Matched));
        assert_eq!((items[0].bank_debit_minor, items[0].ledger_debit_minor), (5_000, 5_000));
        assert!(!items[0].card_masked.as_deref().unwrap().contains("01010101010101"), "masked");
    }

    #[test]
    fn every_class_is_reached_and_each_top_up_lands_in_exactly_one() {
        let ok = completed("tu-ok", 1, 5_000);
        let dup = completed("tu-dup", 2, 2_000);
        let dropped = completed("tu-dropped", 3, 2_000);
        let amount = completed("tu-amount", 4, 5_000);
        let mut not_debited = completed("tu-notdebited", 5, 2_000);
        not_debited.state = "debit_unknown".into();
        not_debited.ledger = LedgerSums::default();
        not_debited.proof = CardProof::default();
        let mut waiting = completed("tu-waiting", 6, 2_000);
        waiting.state = "write_pending".into();
        waiting.ledger.card_credit_minor = 0;
        waiting.proof = CardProof::default();
        let mut forged = completed("tu-forged", 7, 2_000);
        forged.proof.tac = Some("00000000".into());
        let mut by_hand = completed("tu-byhand", 8, 2_000);
        by_hand.proof = CardProof::default();
        let mut declined = completed("tu-declined", 9, 5_000);
        declined.state = "failed".into();
        declined.ledger = LedgerSums::default();
        declined.proof = CardProof::default();
        let mut refunded = completed("tu-refunded", 10, 2_000);
        refunded.state = "refunded".into();
        refunded.ledger = LedgerSums { debit_minor: 2_000, card_credit_minor: 0, refund_minor: 2_000, refund_at: Some(START + 2 * HOUR) };
        refunded.proof = CardProof::default();
        let mut unrefunded = refunded.clone();
        unrefunded.topup_id = "tu-unrefunded".into();
        let at = START + HOUR;
        let statement = vec![
            done("tu-ok", 5_000, at),
            done("tu-dup", 2_000, at),
            done("tu-dup", 2_000, at),
            done("tu-amount", 500, at),
            done("tu-notdebited", 2_000, at),
            done("tu-waiting", 2_000, at),
            done("tu-forged", 2_000, at),
            done("tu-byhand", 2_000, at),
            transfer("tu-declined", 5_000, TransferStatus::Declined { reason: crate::bank::DeclineReason::InsufficientFunds, bank_ref: "r".into() }, at),
            done("tu-refunded", 2_000, at),
            refund("tu-refunded", 2_000, at + 60_000),
            done("tu-unrefunded", 2_000, at),
            done("stranger-1", 7_700, at),
            done("tu-yesterday", 1_000, at),
            refund("tu-yesterday", 1_000, at),
            done("stranger-next-day", 100, START + 24 * HOUR + 60_000),
        ];
        let topups = [ok, dup, dropped, amount, not_debited, waiting, forged, by_hand, declined, refunded, unrefunded];

        let items = run(&topups, &statement);

        assert_eq!(reason_of(&items, "tu-ok"), Reason::Completed);
        assert_eq!(reason_of(&items, "tu-dup"), Reason::StatementDuplicate);
        assert_eq!(reason_of(&items, "tu-dropped"), Reason::MissingFromStatement);
        assert_eq!(reason_of(&items, "tu-amount"), Reason::AmountDiffers);
        assert_eq!(reason_of(&items, "tu-notdebited"), Reason::NotDebitedInLedger);
        assert_eq!(reason_of(&items, "tu-waiting"), Reason::LoadNotFinished);
        assert_eq!(reason_of(&items, "tu-forged"), Reason::TacInvalid);
        assert_eq!(reason_of(&items, "tu-byhand"), Reason::NoCardProof);
        assert_eq!(reason_of(&items, "tu-declined"), Reason::Declined);
        assert_eq!(reason_of(&items, "tu-refunded"), Reason::Refunded);
        assert_eq!(reason_of(&items, "tu-unrefunded"), Reason::RefundMissingFromStatement);
        let strangers: Vec<_> = items.iter().filter(|i| i.topup_id.is_none()).collect();
        assert_eq!(strangers.len(), 1, "another day's top-up and the next day's movement are not strangers here: {strangers:?}");
        assert_eq!((strangers[0].reason, strangers[0].bank_debit_minor), (Reason::UnknownTransfer, 7_700));
        for topup in &topups {
            assert_eq!(items.iter().filter(|i| i.topup_id.as_deref() == Some(&topup.topup_id)).count(), 1);
        }
        for class in Class::ALL {
            assert!(items.iter().any(|i| i.class() == class), "{class:?} reached");
        }
        assert!(items.windows(2).all(|w| w[0].at_ms <= w[1].at_ms), "in time order");
    }

    #[test]
    fn a_line_recorded_just_after_the_cutoff_still_matches_its_top_up() {
        let mut t = completed("tu-late", 1, 2_000);
        t.created_at = START + 24 * HOUR - 1;
        let items = run(&[t], &[done("tu-late", 2_000, START + 24 * HOUR + 5_000)]);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].reason, Reason::Completed);
    }

    #[test]
    fn the_cards_proof_must_fit_the_top_up_and_its_key() {
        let line = |t: &DayTopUp| done(&t.topup_id, t.amount_minor, t.created_at);
        let mut balance = completed("tu-b", 1, 2_000);
        balance.proof.new_balance = Some(9_999);
        let mut other_card = completed("tu-c", 2, 2_000);
        other_card.proof.load.as_mut().unwrap().card_serial = CardSerial::new([9; 8]);
        let mut no_key = completed("tu-k", 0xEE, 2_000);
        no_key.created_at = START;
        let mut old_row = completed("tu-o", 3, 2_000);
        old_row.proof.load = None;
        let mut garbled = completed("tu-g", 4, 2_000);
        garbled.proof.tac = Some("zz".into());
        let mut pending = completed("tu-p", 5, 2_000);
        pending.state = "debit_unknown".into();
        pending.ledger = LedgerSums::default();
        let topups = [balance, other_card, no_key, old_row, garbled, pending];
        let mut statement: Vec<_> = topups.iter().map(line).collect();
        statement[5] = transfer("tu-p", 2_000, TransferStatus::Pending { bank_ref: "r".into() }, START);

        let items = run(&topups, &statement);

        assert_eq!(reason_of(&items, "tu-b"), Reason::ProofInconsistent);
        assert_eq!(reason_of(&items, "tu-c"), Reason::ProofInconsistent);
        assert_eq!(reason_of(&items, "tu-k"), Reason::TacUnverifiable);
        assert_eq!(reason_of(&items, "tu-o"), Reason::TacUnverifiable);
        assert_eq!(reason_of(&items, "tu-g"), Reason::ProofInconsistent);
        assert_eq!(reason_of(&items, "tu-p"), Reason::InProgress);
    }

    #[test]
    fn a_debit_the_bank_did_not_complete_and_a_refund_only_the_bank_made_are_told_apart() {
        let mut declined_at_bank = completed("tu-x", 1, 2_000);
        declined_at_bank.state = "write_pending".into();
        let mut refunded_at_bank = completed("tu-y", 2, 2_000);
        refunded_at_bank.state = "refund_sent".into();
        let statement = [
            transfer("tu-x", 2_000, TransferStatus::Declined { reason: crate::bank::DeclineReason::Other, bank_ref: "r".into() }, START),
            done("tu-y", 2_000, START),
            refund("tu-y", 2_000, START + 1),
        ];
        let items = run(&[declined_at_bank, refunded_at_bank], &statement);
        assert_eq!(reason_of(&items, "tu-x"), Reason::BankNotCompleted);
        assert_eq!(reason_of(&items, "tu-y"), Reason::RefundNotInLedger);
    }
}
