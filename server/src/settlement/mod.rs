//! Daily settlement and reconciliation (R3.7): the business day, the three-way reconciliation of the bank's statement, the ledger and the cards' proofs, the report with its exports, and the runner that settles a day (scheduled, by an admin, or from the command line)
//!
//! # Layout
//!
//! - [`day`]: business dates, the cut-off, the day's window, when the scheduled job runs.
//! - [`reconcile`]: pure: every top-up of the day, with its postings and the card's proof, against
//!   the bank's statement lines; each lands in exactly one [`Class`] with a [`Reason`].
//! - [`report`]: the stored items of a revision and what is totalled from them (by terminal, by
//!   amount, by hour, per class), and the digest that makes a re-run with the same result a no-op.
//! - [`export`]: CSV, XLSX and the SVG chart of amounts by hour.
//! - [`runner`]: the I/O: the statement through [`crate::bank::BankGateway`], the day from the
//!   store, a new revision only when the result differs, the alarm on mismatches, the scheduled
//!   job.
//!
//! Alarms go through [`AlarmSink`]; [`LoggingAlarms`] logs them. Run-state monitoring (R3.8)
//! plugs its own sink into [`runner::Settler::from_state`].

pub mod day;
pub mod export;
pub mod reconcile;
pub mod report;
pub mod runner;

pub use day::{BusinessDate, Calendar, TimeOfDay, Window};
pub use reconcile::{reconcile, CardProof, DayInputs, DayTopUp, LedgerSums};
pub use report::{Report, SettlementHeader, StoredSettlement};
pub use runner::{SettleError, Settled, Settler};

/// Where a top-up (or a bank movement that belongs to none) lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Bank, ledger and card agree.
    Matched,
    /// The bank shows money moving that the ledger does not.
    BankOnly,
    /// The ledger shows money moving that the bank's statement does not.
    LedgerOnly,
    /// Bank and ledger agree that the customer was debited, but the card's proof of the load is
    /// missing or does not hold.
    CardUnconfirmed,
    /// Bank and ledger name different amounts.
    AmountMismatch,
}

impl Class {
    pub const ALL: [Class; 5] = [Class::Matched, Class::BankOnly, Class::LedgerOnly, Class::CardUnconfirmed, Class::AmountMismatch];

    pub fn code(self) -> &'static str {
        match self {
            Class::Matched => "matched",
            Class::BankOnly => "bank_only",
            Class::LedgerOnly => "ledger_only",
            Class::CardUnconfirmed => "card_unconfirmed",
            Class::AmountMismatch => "amount_mismatch",
        }
    }

    pub fn is_mismatch(self) -> bool {
        self != Class::Matched
    }

    pub fn label(self, lang: Lang) -> &'static str {
        match (self, lang) {
            (Class::Matched, Lang::En) => "Matched",
            (Class::Matched, Lang::ZhCn) => "核对一致",
            (Class::BankOnly, Lang::En) => "Bank only",
            (Class::BankOnly, Lang::ZhCn) => "银行有账务无",
            (Class::LedgerOnly, Lang::En) => "Ledger only",
            (Class::LedgerOnly, Lang::ZhCn) => "账务有银行无",
            (Class::CardUnconfirmed, Lang::En) => "Card unconfirmed",
            (Class::CardUnconfirmed, Lang::ZhCn) => "卡片未确认",
            (Class::AmountMismatch, Lang::En) => "Amount mismatch",
            (Class::AmountMismatch, Lang::ZhCn) => "金额不符",
        }
    }
}

/// Why an item is in its class; each reason belongs to exactly one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Debited once, posted, and the card's TAC for the load verifies.
    Completed,
    /// Debited and refunded, on both sides.
    Refunded,
    /// The bank declined; nothing moved on either side.
    Declined,
    /// Nothing reached the bank and nothing was posted.
    NothingMoved,
    /// Pending at the bank, not debited in the ledger yet.
    InProgress,
    /// A completed transfer or refund on the statement that is no top-up of ours.
    UnknownTransfer,
    /// The statement lists the top-up's transfer more than once.
    StatementDuplicate,
    /// The bank completed the transfer; the ledger has no debit.
    NotDebitedInLedger,
    /// The bank refunded more than the ledger did.
    RefundNotInLedger,
    /// The ledger posted the debit; the statement has no such transfer.
    MissingFromStatement,
    /// The ledger posted the debit; the bank shows it declined or pending.
    BankNotCompleted,
    /// The ledger posted a refund the statement does not show.
    RefundMissingFromStatement,
    /// Completed without the card's TAC (a person decided it was credited).
    NoCardProof,
    /// The stored TAC does not verify with the card's key.
    TacInvalid,
    /// The card's proof does not fit the top-up (card, amount or balance).
    ProofInconsistent,
    /// No key to verify the TAC with, or no record of the load it covers.
    TacUnverifiable,
    /// Debited, not on the card yet (waiting for the card, being recovered, refunding, or
    /// held for a person).
    LoadNotFinished,
    /// The statement's amount is not the top-up's.
    AmountDiffers,
}

impl Reason {
    pub const ALL: [Reason; 18] = [
        Reason::Completed,
        Reason::Refunded,
        Reason::Declined,
        Reason::NothingMoved,
        Reason::InProgress,
        Reason::UnknownTransfer,
        Reason::StatementDuplicate,
        Reason::NotDebitedInLedger,
        Reason::RefundNotInLedger,
        Reason::MissingFromStatement,
        Reason::BankNotCompleted,
        Reason::RefundMissingFromStatement,
        Reason::NoCardProof,
        Reason::TacInvalid,
        Reason::ProofInconsistent,
        Reason::TacUnverifiable,
        Reason::LoadNotFinished,
        Reason::AmountDiffers,
    ];

    pub fn class(self) -> Class {
        match self {
            Reason::Completed | Reason::Refunded | Reason::Declined | Reason::NothingMoved | Reason::InProgress => Class::Matched,
            Reason::UnknownTransfer | Reason::StatementDuplicate | Reason::NotDebitedInLedger | Reason::RefundNotInLedger => Class::BankOnly,
            Reason::MissingFromStatement | Reason::BankNotCompleted | Reason::RefundMissingFromStatement => Class::LedgerOnly,
            Reason::NoCardProof | Reason::TacInvalid | Reason::ProofInconsistent | Reason::TacUnverifiable | Reason::LoadNotFinished => {
                Class::CardUnconfirmed
            }
            Reason::AmountDiffers => Class::AmountMismatch,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Reason::Completed => "completed",
            Reason::Refunded => "refunded",
            Reason::Declined => "declined",
            Reason::NothingMoved => "nothing_moved",
            Reason::InProgress => "in_progress",
            Reason::UnknownTransfer => "unknown_transfer",
            Reason::StatementDuplicate => "statement_duplicate",
            Reason::NotDebitedInLedger => "not_debited_in_ledger",
            Reason::RefundNotInLedger => "refund_not_in_ledger",
            Reason::MissingFromStatement => "missing_from_statement",
            Reason::BankNotCompleted => "bank_not_completed",
            Reason::RefundMissingFromStatement => "refund_missing_from_statement",
            Reason::NoCardProof => "no_card_proof",
            Reason::TacInvalid => "tac_invalid",
            Reason::ProofInconsistent => "proof_inconsistent",
            Reason::TacUnverifiable => "tac_unverifiable",
            Reason::LoadNotFinished => "load_not_finished",
            Reason::AmountDiffers => "amount_differs",
        }
    }

    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// What happened, for a person.
    pub fn text(self, lang: Lang) -> &'static str {
        use Lang::{En, ZhCn};
        match (self, lang) {
            (Reason::Completed, En) => "Debited once, posted, and the card's TAC for the load verifies",
            (Reason::Completed, ZhCn) => "银行扣款一次、已记账，卡片圈存TAC验证通过",
            (Reason::Refunded, En) => "Debited and refunded, on the statement and in the ledger",
            (Reason::Refunded, ZhCn) => "已扣款并已退款，银行对账单与账务一致",
            (Reason::Declined, En) => "The bank declined; nothing moved",
            (Reason::Declined, ZhCn) => "银行拒绝扣款，资金未发生变动",
            (Reason::NothingMoved, En) => "Nothing reached the bank and nothing was posted",
            (Reason::NothingMoved, ZhCn) => "未到达银行，账务亦无记录",
            (Reason::InProgress, En) => "Pending at the bank; not debited in the ledger yet",
            (Reason::InProgress, ZhCn) => "银行处理中，账务尚未记扣款",
            (Reason::UnknownTransfer, En) => "A completed bank movement that is no top-up of ours",
            (Reason::UnknownTransfer, ZhCn) => "银行有已完成的资金往来，但不是本系统的充值",
            (Reason::StatementDuplicate, En) => "The statement lists this transfer more than once",
            (Reason::StatementDuplicate, ZhCn) => "银行对账单重复列出该笔转账",
            (Reason::NotDebitedInLedger, En) => "The bank completed the debit; the ledger has no debit",
            (Reason::NotDebitedInLedger, ZhCn) => "银行已扣款，账务无扣款记录",
            (Reason::RefundNotInLedger, En) => "The bank refunded; the ledger has no refund",
            (Reason::RefundNotInLedger, ZhCn) => "银行已退款，账务无退款记录",
            (Reason::MissingFromStatement, En) => "The ledger posted the debit; the statement has no such transfer",
            (Reason::MissingFromStatement, ZhCn) => "账务已记扣款，银行对账单无此笔转账",
            (Reason::BankNotCompleted, En) => "The ledger posted the debit; the bank shows it declined or pending",
            (Reason::BankNotCompleted, ZhCn) => "账务已记扣款，银行显示拒绝或处理中",
            (Reason::RefundMissingFromStatement, En) => "The ledger posted a refund; the statement does not show it",
            (Reason::RefundMissingFromStatement, ZhCn) => "账务已记退款，银行对账单无此退款",
            (Reason::NoCardProof, En) => "Completed by a person's decision, without the card's TAC",
            (Reason::NoCardProof, ZhCn) => "由人工判定为已圈存，无卡片TAC凭证",
            (Reason::TacInvalid, En) => "The stored TAC does not verify with the card's key",
            (Reason::TacInvalid, ZhCn) => "保存的TAC用卡片密钥验证失败",
            (Reason::ProofInconsistent, En) => "The card's proof does not fit the top-up (card, amount or balance)",
            (Reason::ProofInconsistent, ZhCn) => "卡片凭证与充值记录不符（卡号、金额或余额）",
            (Reason::TacUnverifiable, En) => "The TAC cannot be verified: no key for the card, or no record of the load",
            (Reason::TacUnverifiable, ZhCn) => "无法验证TAC：缺少该卡密钥或圈存记录",
            (Reason::LoadNotFinished, En) => "Debited, not on the card yet",
            (Reason::LoadNotFinished, ZhCn) => "已扣款，尚未写入卡片",
            (Reason::AmountDiffers, En) => "The statement's amount is not the top-up's",
            (Reason::AmountDiffers, ZhCn) => "银行对账单金额与充值金额不符",
        }
    }

    /// What to do about it, for a person.
    pub fn action(self, lang: Lang) -> &'static str {
        use Lang::{En, ZhCn};
        match (self, lang) {
            (Reason::Completed | Reason::Refunded | Reason::Declined | Reason::NothingMoved, En) => "None",
            (Reason::Completed | Reason::Refunded | Reason::Declined | Reason::NothingMoved, ZhCn) => "无需处理",
            (Reason::InProgress, En) => "None now: settle the day again once the bank has completed it",
            (Reason::InProgress, ZhCn) => "暂无需处理：待银行完成后重新结算该日",
            (Reason::UnknownTransfer, En) => "Ask the bank about the movement (its bank reference); the customer may be owed a refund",
            (Reason::UnknownTransfer, ZhCn) => "凭银行流水号向银行查询该笔往来；可能需向客户退款",
            (Reason::StatementDuplicate, En) => "Ask the bank to correct the statement and confirm the customer was debited once",
            (Reason::StatementDuplicate, ZhCn) => "请银行更正对账单，并确认客户只被扣款一次",
            (Reason::NotDebitedInLedger, En) => {
                "Let the top-up worker resolve the debit by the status query, or decide the top-up under exceptions; then settle again"
            }
            (Reason::NotDebitedInLedger, ZhCn) => "由充值后台通过状态查询确认扣款，或在异常处理中人工判定；之后重新结算",
            (Reason::RefundNotInLedger, En) => "Check the top-up's refund and let it resolve; then settle again",
            (Reason::RefundNotInLedger, ZhCn) => "核查该笔充值的退款状态，待其确认后重新结算",
            (Reason::MissingFromStatement, En) => "Ask the bank for the transfer by its key (status query); keep the day open until it appears",
            (Reason::MissingFromStatement, ZhCn) => "凭幂等键向银行查询该笔转账；在其出现前该日保持未结",
            (Reason::BankNotCompleted, En) => "Query the bank; if it did not debit, correct the top-up by an operator decision",
            (Reason::BankNotCompleted, ZhCn) => "向银行查询；若银行未扣款，通过人工判定更正该笔充值",
            (Reason::RefundMissingFromStatement, En) => "Ask the bank for the refund by its key",
            (Reason::RefundMissingFromStatement, ZhCn) => "凭退款幂等键向银行查询该笔退款",
            (Reason::NoCardProof, En) => "Read the card's load log at a kiosk and keep it as evidence of the load",
            (Reason::NoCardProof, ZhCn) => "在自助终端读取卡片圈存记录，作为圈存凭证留存",
            (Reason::TacInvalid, En) => "Possible tampering: block the card, read its load log and investigate the record",
            (Reason::TacInvalid, ZhCn) => "可能被篡改：冻结该卡，读取圈存记录并调查",
            (Reason::ProofInconsistent, En) => "Investigate the top-up's record against the card's load log",
            (Reason::ProofInconsistent, ZhCn) => "对照卡片圈存记录核查该笔充值",
            (Reason::TacUnverifiable, En) => "Load the issuer's purse keys into the key store, then settle again",
            (Reason::TacUnverifiable, ZhCn) => "将发卡方电子钱包密钥载入密钥库后重新结算",
            (Reason::LoadNotFinished, En) => {
                "The card must be tapped at a kiosk (else the money is refunded when its time runs out); decide it under exceptions if it is stuck"
            }
            (Reason::LoadNotFinished, ZhCn) => "请持卡人在自助终端再次刷卡（超时将自动退款）；如停滞请在异常处理中判定",
            (Reason::AmountDiffers, En) => "Ask the bank to correct the amount; check what the customer was actually debited",
            (Reason::AmountDiffers, ZhCn) => "请银行更正金额，并核实客户实际被扣金额",
        }
    }
}

/// The language of a report's headers and texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    ZhCn,
    En,
}

impl Lang {
    /// `zh-CN` or `en` (case-insensitive; `zh` is taken for `zh-CN`).
    pub fn parse(text: &str) -> Option<Lang> {
        match text.to_ascii_lowercase().as_str() {
            "zh-cn" | "zh" => Some(Lang::ZhCn),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::ZhCn => "zh-CN",
            Lang::En => "en",
        }
    }

    /// `zh` or `en`.
    pub fn pick(self, zh: &'static str, en: &'static str) -> &'static str {
        match self {
            Lang::ZhCn => zh,
            Lang::En => en,
        }
    }
}

/// One line of a settlement: a top-up of the day, or a bank movement that belongs to none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub reason: Reason,
    /// The top-up; `None` for a bank movement of no top-up.
    pub topup_id: Option<String>,
    /// The statement's idempotency key of the movement (the top-up id for a debit).
    pub bank_key: Option<String>,
    pub terminal_id: Option<String>,
    /// The stored-value card, masked.
    pub card_masked: Option<String>,
    /// The top-up's state when settled.
    pub state: Option<String>,
    /// The top-up's amount (a bank movement's own for one of no top-up).
    pub amount_minor: i64,
    pub ledger_debit_minor: i64,
    /// Σ completed transfers of this key on the statement.
    pub bank_debit_minor: i64,
    pub ledger_refund_minor: i64,
    pub bank_refund_minor: i64,
    /// Transfer lines of this key on the statement (any status).
    pub bank_lines: i64,
    /// When the top-up was asked for (the movement, for one of no top-up).
    pub at_ms: i64,
}

impl Item {
    pub fn class(&self) -> Class {
        self.reason.class()
    }

    /// Whether the top-up ended on its card.
    pub fn completed(&self) -> bool {
        self.state.as_deref() == Some("completed")
    }
}

/// Where settlement alarms go (run-state monitoring, R3.8, plugs in here).
pub trait AlarmSink: Send + Sync + std::fmt::Debug {
    /// A new revision of `date` has `mismatches` items that are not matched.
    fn mismatch(&self, date: &str, revision: u32, mismatches: usize);
    /// The scheduled job could not settle `date` (it tries again at its next pass).
    fn failed(&self, date: &str, why: &str);
    /// `date` was settled: its failure alarm, if any, is over; with `mismatches == 0` (a revision
    /// that reconciles everything, e.g. after a correction) its mismatch alarm is over too.
    fn settled(&self, date: &str, mismatches: usize);
}

/// Alarms as `tracing` errors (target `cardbridge::settlement`).
#[derive(Debug, Clone, Copy, Default)]
pub struct LoggingAlarms;

impl AlarmSink for LoggingAlarms {
    fn mismatch(&self, date: &str, revision: u32, mismatches: usize) {
        tracing::error!(alarm = "settlement.mismatch", date, revision, mismatches, "settlement: the day does not reconcile");
    }

    fn failed(&self, date: &str, why: &str) {
        tracing::error!(alarm = "settlement.failed", date, why, "settlement: the day could not be settled");
    }

    fn settled(&self, date: &str, mismatches: usize) {
        tracing::info!(target: "cardbridge::settlement", date, mismatches, "settled");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_one_class_a_code_that_reads_back_and_texts_in_both_languages() {
        for reason in Reason::ALL {
            assert_eq!(Reason::from_code(reason.code()), Some(reason));
            for lang in [Lang::En, Lang::ZhCn] {
                assert!(!reason.text(lang).is_empty() && !reason.action(lang).is_empty());
            }
        }
        for class in Class::ALL {
            assert!(Reason::ALL.iter().any(|r| r.class() == class), "{class:?} has a reason");
        }
        assert_eq!(Lang::parse("ZH-cn"), Some(Lang::ZhCn));
        assert_eq!(Lang::parse("fr"), None);
    }
}
