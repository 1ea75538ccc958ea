//! A settlement's report: the stored revision (header and items) and what is totalled from its items — per class, by terminal, by amount, by local hour — and the digest that tells a re-run with the same result from a late correction

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::{BusinessDate, Calendar, Class, Item, TimeOfDay, Window};

/// One stored revision of a day's settlement, without its items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementHeader {
    pub settlement_id: String,
    pub business_date: String,
    pub revision: u32,
    pub digest: String,
    /// IANA name.
    pub time_zone: String,
    /// `HH:MM`.
    pub cutoff: String,
    pub window: Window,
    pub currency: String,
    pub n_items: i64,
    pub n_mismatches: i64,
    pub created_at: i64,
    pub created_by: String,
}

/// A revision with its items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSettlement {
    pub header: SettlementHeader,
    pub items: Vec<Item>,
}

/// The digest of a day's result: its window, currency and every item, in order.
pub fn digest(date: BusinessDate, window: Window, currency: &str, items: &[Item]) -> String {
    let mut h = Sha256::new();
    h.update(format!("cardbridge-settlement-v1\n{date}\n{}\n{}\n{currency}\n", window.start_ms, window.end_ms));
    for i in items {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        h.update(format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}\n",
            i.reason.code(),
            opt(&i.topup_id),
            opt(&i.bank_key),
            opt(&i.terminal_id),
            opt(&i.card_masked),
            opt(&i.state),
            i.amount_minor,
            i.ledger_debit_minor,
            i.bank_debit_minor,
            i.ledger_refund_minor,
            i.bank_refund_minor,
            i.bank_lines,
            i.at_ms
        ));
    }
    hex::encode(h.finalize())
}

/// Totals over a set of items.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Totals {
    pub n_topups: u64,
    pub n_completed: u64,
    /// Σ amounts of the top-ups that ended on their cards.
    pub completed_minor: i64,
    pub ledger_debit_minor: i64,
    pub bank_debit_minor: i64,
    pub ledger_refund_minor: i64,
    pub bank_refund_minor: i64,
    /// Items per class, in [`Class::ALL`] order.
    pub per_class: [u64; 5],
}

impl Totals {
    fn add(&mut self, item: &Item) {
        if item.topup_id.is_some() {
            self.n_topups += 1;
        }
        if item.completed() {
            self.n_completed += 1;
            self.completed_minor += item.amount_minor;
        }
        self.ledger_debit_minor += item.ledger_debit_minor;
        self.bank_debit_minor += item.bank_debit_minor;
        self.ledger_refund_minor += item.ledger_refund_minor;
        self.bank_refund_minor += item.bank_refund_minor;
        let class = Class::ALL.iter().position(|c| *c == item.class()).unwrap_or(0);
        self.per_class[class] += 1;
    }

    pub fn count(&self, class: Class) -> u64 {
        Class::ALL.iter().position(|c| *c == class).map(|i| self.per_class[i]).unwrap_or(0)
    }

    pub fn mismatches(&self) -> u64 {
        self.per_class[1..].iter().sum()
    }
}

/// One row of a breakdown: a terminal, an amount or an hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group<K> {
    pub key: K,
    pub totals: Totals,
}

/// A revision, ready to be shown: its items and the totals and breakdowns made from them.
#[derive(Debug, Clone)]
pub struct Report {
    pub settlement: StoredSettlement,
    /// The calendar the revision was cut with (zone and cut-off), for local hours and times.
    pub calendar: Calendar,
}

impl Report {
    /// The report of a stored revision. A zone or cut-off the server no longer understands
    /// falls back to UTC and midnight (the stored text is still shown).
    pub fn new(settlement: StoredSettlement) -> Report {
        let zone = settlement.header.time_zone.parse().unwrap_or(chrono_tz::UTC);
        let cutoff = TimeOfDay::parse(&settlement.header.cutoff).unwrap_or(TimeOfDay::MIDNIGHT);
        let calendar = Calendar { zone, cutoff, run_at: TimeOfDay::MIDNIGHT, grace_ms: 0 };
        Report { settlement, calendar }
    }

    pub fn header(&self) -> &SettlementHeader {
        &self.settlement.header
    }

    pub fn items(&self) -> &[Item] {
        &self.settlement.items
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        self.items().iter().for_each(|i| t.add(i));
        t
    }

    /// The items that are not matched, in time order.
    pub fn mismatches(&self) -> impl Iterator<Item = &Item> {
        self.items().iter().filter(|i| i.class().is_mismatch())
    }

    /// Top-ups by the terminal they were asked at (`None`: not at a terminal), by terminal id.
    pub fn by_terminal(&self) -> Vec<Group<Option<String>>> {
        let mut groups: BTreeMap<Option<String>, Totals> = BTreeMap::new();
        for i in self.items().iter().filter(|i| i.topup_id.is_some()) {
            groups.entry(i.terminal_id.clone()).or_default().add(i);
        }
        groups.into_iter().map(|(key, totals)| Group { key, totals }).collect()
    }

    /// Top-ups by amount, smallest first.
    pub fn by_amount(&self) -> Vec<Group<i64>> {
        let mut groups: BTreeMap<i64, Totals> = BTreeMap::new();
        for i in self.items().iter().filter(|i| i.topup_id.is_some()) {
            groups.entry(i.amount_minor).or_default().add(i);
        }
        groups.into_iter().map(|(key, totals)| Group { key, totals }).collect()
    }

    /// Top-ups by the local hour they were asked in: all 24 hours, in the business day's order.
    pub fn by_hour(&self) -> Vec<Group<u32>> {
        let mut hours: BTreeMap<u32, Totals> = BTreeMap::new();
        for i in self.items().iter().filter(|i| i.topup_id.is_some()) {
            hours.entry(self.calendar.local_hour(i.at_ms)).or_default().add(i);
        }
        self.calendar.hours_in_order().map(|h| Group { key: h, totals: hours.remove(&h).unwrap_or_default() }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settlement::Reason;

    fn item(reason: Reason, id: Option<&str>, terminal: Option<&str>, amount: i64, state: &str, at_ms: i64) -> Item {
        Item {
            reason,
            topup_id: id.map(str::to_string),
            bank_key: id.map(str::to_string),
            terminal_id: terminal.map(str::to_string),
            card_masked: None,
            state: Some(state.to_string()),
            amount_minor: amount,
            ledger_debit_minor: amount,
            bank_debit_minor: amount,
            ledger_refund_minor: 0,
            bank_refund_minor: 0,
            bank_lines: 1,
            at_ms,
        }
    }

    fn report(items: Vec<Item>) -> Report {
        let header = SettlementHeader {
            settlement_id: "st_1".into(),
            business_date: "2026-05-01".into(),
            revision: 1,
            digest: String::new(),
            time_zone: "Asia/Shanghai".into(),
            cutoff: "23:00".into(),
            window: Window { start_ms: 0, end_ms: 1 },
            currency: "CNY".into(),
            n_items: items.len() as i64,
            n_mismatches: 0,
            created_at: 0,
            created_by: "test".into(),
        };
        Report::new(StoredSettlement { header, items })
    }

    #[test]
    fn totals_and_breakdowns_add_up() {
        // 2026-05-01 01:30 and 09:10 in Shanghai.
        let (t1, t2) = (1_777_570_200_000, 1_777_597_800_000);
        let r = report(vec![
            item(Reason::Completed, Some("a"), Some("t_1"), 5_000, "completed", t1),
            item(Reason::Completed, Some("b"), Some("t_2"), 2_000, "completed", t2),
            item(Reason::LoadNotFinished, Some("c"), Some("t_1"), 2_000, "write_pending", t2),
            item(Reason::UnknownTransfer, None, None, 700, "", t2),
        ]);

        let totals = r.totals();

        assert_eq!((totals.n_topups, totals.n_completed, totals.completed_minor), (3, 2, 7_000));
        assert_eq!((totals.count(Class::Matched), totals.count(Class::CardUnconfirmed), totals.count(Class::BankOnly)), (2, 1, 1));
        assert_eq!(totals.mismatches(), 2);
        assert_eq!(totals.bank_debit_minor, 9_700);
        let terminals = r.by_terminal();
        assert_eq!(terminals.len(), 2);
        assert_eq!((terminals[0].key.as_deref(), terminals[0].totals.n_topups, terminals[0].totals.completed_minor), (Some("t_1"), 2, 5_000));
        let amounts: Vec<_> = r.by_amount().into_iter().map(|g| (g.key, g.totals.n_topups)).collect();
        assert_eq!(amounts, vec![(2_000, 2), (5_000, 1)]);
        let hours = r.by_hour();
        assert_eq!(hours.len(), 24);
        assert_eq!(hours[0].key, 23, "the business day starts at the cut-off");
        assert_eq!(hours.iter().find(|g| g.key == 1).unwrap().totals.completed_minor, 5_000);
        assert_eq!(hours.iter().find(|g| g.key == 9).unwrap().totals.n_topups, 2);
        assert_eq!(r.mismatches().count(), 2);
    }

    #[test]
    fn the_digest_changes_with_any_item_and_only_then() {
        let date = BusinessDate::parse("2026-05-01").unwrap();
        let w = Window { start_ms: 0, end_ms: 10 };
        let a = vec![item(Reason::Completed, Some("a"), Some("t_1"), 5_000, "completed", 1)];
        let mut b = a.clone();
        assert_eq!(digest(date, w, "CNY", &a), digest(date, w, "CNY", &b));
        b[0].reason = Reason::LoadNotFinished;
        assert_ne!(digest(date, w, "CNY", &a), digest(date, w, "CNY", &b));
        assert_ne!(digest(date, w, "CNY", &a), digest(date.next(), w, "CNY", &a));
    }
}
