//! The top-up ledger: double-entry postings in fen, and an in-memory accumulator of balances
//!
//! Four accounts. `BankReceivable` is debit-normal: what the bank debited from customers' bank
//! cards (it owes it to us in settlement). The other three are credit-normal and say where that
//! money is: `PendingLoads` (debited, not on a card yet, or being refunded), `CardFloat` (on
//! cards, also kept per card) and `Refunds` (given back). Every transition posts balanced legs,
//! so at all times `BankReceivable = PendingLoads + CardFloat + Refunds`.

use std::collections::{BTreeMap, HashMap};

use card::purse::CardSerial;

/// Minor units (分). Signed so that balances and differences need no second type.
pub type Fen = i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Account {
    /// What the bank debited (customer funds collected through the bank).
    BankReceivable,
    /// Debited and not yet on a card nor refunded.
    PendingLoads,
    /// Money on cards.
    CardFloat,
    /// Money given back to bank cards.
    Refunds,
}

impl Account {
    pub const ALL: [Account; 4] = [
        Account::BankReceivable,
        Account::PendingLoads,
        Account::CardFloat,
        Account::Refunds,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Account::BankReceivable => "bank_receivable",
            Account::PendingLoads => "pending_loads",
            Account::CardFloat => "card_float",
            Account::Refunds => "refunds",
        }
    }

    pub fn debit_normal(self) -> bool {
        matches!(self, Account::BankReceivable)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Debit,
    Credit,
}

/// One leg of a posting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leg {
    pub account: Account,
    pub side: Side,
    pub amount: Fen,
}

impl Leg {
    pub fn debit(account: Account, amount: Fen) -> Leg {
        Leg {
            account,
            side: Side::Debit,
            amount,
        }
    }

    pub fn credit(account: Account, amount: Fen) -> Leg {
        Leg {
            account,
            side: Side::Credit,
            amount,
        }
    }
}

/// Whether the legs are a valid posting: every amount positive, Σ debits = Σ credits.
pub fn balanced(legs: &[Leg]) -> bool {
    let mut debits: i128 = 0;
    let mut credits: i128 = 0;
    for leg in legs {
        if leg.amount <= 0 {
            return false;
        }
        match leg.side {
            Side::Debit => debits += i128::from(leg.amount),
            Side::Credit => credits += i128::from(leg.amount),
        }
    }
    debits == credits
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostingError {
    #[error("the posting is not balanced (Σ debits ≠ Σ credits, or an amount ≤ 0)")]
    Unbalanced,
    #[error("a balance would overflow")]
    Overflow,
}

/// Balances per account and the card float per card.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    /// Debit minus credit, per account.
    net: BTreeMap<Account, i128>,
    cards: HashMap<CardSerial, i128>,
    postings: u64,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Post one transition's legs for `card`, all or nothing.
    pub fn post(&mut self, card: CardSerial, legs: &[Leg]) -> Result<(), PostingError> {
        if legs.is_empty() {
            return Ok(());
        }
        if !balanced(legs) {
            return Err(PostingError::Unbalanced);
        }
        let mut net = self.net.clone();
        let mut float = self.cards.get(&card).copied().unwrap_or(0);
        for leg in legs {
            let signed = match leg.side {
                Side::Debit => i128::from(leg.amount),
                Side::Credit => -i128::from(leg.amount),
            };
            let entry = net.entry(leg.account).or_insert(0);
            *entry = entry.checked_add(signed).ok_or(PostingError::Overflow)?;
            if leg.account == Account::CardFloat {
                float = float.checked_sub(signed).ok_or(PostingError::Overflow)?;
            }
        }
        if net.values().any(|v| Fen::try_from(*v).is_err()) || Fen::try_from(float).is_err() {
            return Err(PostingError::Overflow);
        }
        self.net = net;
        self.cards.insert(card, float);
        self.postings += 1;
        Ok(())
    }

    /// The balance on the account's normal side (debit for `BankReceivable`, credit otherwise).
    pub fn balance(&self, account: Account) -> Fen {
        let net = self.net.get(&account).copied().unwrap_or(0);
        let normal = if account.debit_normal() { net } else { -net };
        // `post` keeps every balance within Fen.
        Fen::try_from(normal).unwrap_or(Fen::MAX)
    }

    /// The money this ledger says is on `card`.
    pub fn card_float(&self, card: &CardSerial) -> Fen {
        Fen::try_from(self.cards.get(card).copied().unwrap_or(0)).unwrap_or(Fen::MAX)
    }

    /// How many non-empty postings were accepted.
    pub fn postings(&self) -> u64 {
        self.postings
    }

    /// `BankReceivable = PendingLoads + CardFloat + Refunds`, and the per-card floats add up to
    /// `CardFloat`.
    pub fn reconciles(&self) -> bool {
        let per_card: i128 = self.cards.values().sum();
        let total = |a| i128::from(self.balance(a));
        total(Account::BankReceivable)
            == total(Account::PendingLoads) + total(Account::CardFloat) + total(Account::Refunds)
            && per_card == total(Account::CardFloat)
    }
}
