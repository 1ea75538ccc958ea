//! The top-up engine (DESIGN §4, R3.2/R3.6): one top-up as a pure state machine that returns effects and double-entry postings
//!
//! Like [`card::emv::ReadSession`], nothing here does I/O. [`step`] takes the recorded
//! [`TopUp`], an [`Event`] (the bank's answer, the card's load outcome, a timer, a person) and
//! the time, and returns a [`Transition`]: the next recorded state, the [`Effect`]s a worker
//! runs from that committed state (send the debit, write the card, refund…) and the ledger
//! [`Leg`]s of the transition. The caller persists `next` and the legs in one transaction
//! before it runs any effect; after a crash it feeds [`Event::Resume`] to the recorded state,
//! which re-issues what may have been lost (queries and recovery, never a blind resend).
//!
//! ```text
//! Initiated → DebitSent → (DebitUnknown →) DebitConfirmed → WriteSent → Completed
//!                 ↘ Failed          WriteSent → WriteUnknown → (next tap) Completed | DebitConfirmed
//!             DebitConfirmed → WritePending → (tap) DebitConfirmed | (timer) RefundSent → Refunded
//!             anything unresolved too often → Exception (a person decides)
//! ```
//!
//! Invariants, checked on every transition ([`step`] refuses to return one that breaks them):
//! a card write is requested only with a confirmed debit and no credit posted; a refund only
//! when it is proven the card was not credited; the debit and the card credit are each posted
//! at most once; every posting is balanced. Unknown outcomes are never guessed: they go to
//! `DebitUnknown`/`WriteUnknown` and only a status query or the card's own proof resolves them.

pub mod admission;
mod ledger;
pub mod record;
pub mod rules;
pub mod service;
pub mod worker;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use ledger::{balanced, Account, Fen, Ledger, Leg, PostingError, Side};

use card::purse::{CardSerial, LoadOutcome, PendingLoad, Refusal, Resolution};

/// Milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn plus_ms(self, ms: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }
}

/// The top-up's id; it is also the bank's idempotency key for the debit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopUpId(String);

impl TopUpId {
    pub fn new(id: impl Into<String>) -> TopUpId {
        TopUpId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The debit's idempotency key: the top-up id itself.
    pub fn debit_key(&self) -> IdempotencyKey {
        IdempotencyKey(self.0.clone())
    }

    /// The refund's idempotency key: derived from the top-up id, so there is one refund at most.
    pub fn refund_key(&self) -> IdempotencyKey {
        IdempotencyKey(format!("{}:refund", self.0))
    }
}

/// A key the bank deduplicates requests by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Limits and timers. All durations in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Unresolved debit answers (pending, unknown, not found) before `Exception`.
    pub max_debit_failures: u32,
    /// Undetermined or failed recoveries of one write before `Exception`.
    pub max_recovery_failures: u32,
    /// Unresolved refund answers before `Exception`.
    pub max_refund_failures: u32,
    /// Card writes that proved not to credit before the money is refunded instead.
    pub max_write_attempts: u32,
    /// Wait before querying a debit whose answer was unknown.
    pub debit_retry_ms: i64,
    /// Wait before querying a refund that has no definite answer.
    pub refund_retry_ms: i64,
    /// How long a debited top-up waits for its card before the money is refunded.
    pub write_pending_refund_ms: i64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            max_debit_failures: 6,
            max_recovery_failures: 3,
            max_refund_failures: 6,
            max_write_attempts: 3,
            debit_retry_ms: 30_000,
            refund_retry_ms: 30_000,
            write_pending_refund_ms: 10 * 60_000,
        }
    }
}

/// Why a top-up failed (no money moved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// The bank declined the debit.
    DebitDeclined,
    /// A person established the bank never debited.
    NotDebited,
}

/// Why a person has to look at a top-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionReason {
    /// The bank would not say whether it debited.
    DebitUnresolved,
    /// The card would not prove whether the load committed.
    WriteUnresolved,
    /// The bank would not say whether it refunded.
    RefundUnresolved,
    /// The bank declined the refund.
    RefundDeclined,
}

impl ExceptionReason {
    pub fn code(self) -> &'static str {
        match self {
            ExceptionReason::DebitUnresolved => "debit_unresolved",
            ExceptionReason::WriteUnresolved => "write_unresolved",
            ExceptionReason::RefundUnresolved => "refund_unresolved",
            ExceptionReason::RefundDeclined => "refund_declined",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Initiated,
    DebitSent,
    DebitUnknown,
    DebitConfirmed,
    /// CREDIT FOR LOAD is (about to be) on its way; `pending` is what resolves it.
    WriteSent {
        pending: PendingLoad,
    },
    /// Resolved on the card's next tap by a recovery.
    WriteUnknown {
        pending: PendingLoad,
    },
    /// Debited, nothing written: waiting for the card (or the refund timer).
    WritePending,
    RefundSent,
    Completed,
    Failed {
        reason: FailReason,
    },
    Refunded,
    Exception {
        reason: ExceptionReason,
    },
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Initiated => "initiated",
            State::DebitSent => "debit_sent",
            State::DebitUnknown => "debit_unknown",
            State::DebitConfirmed => "debit_confirmed",
            State::WriteSent { .. } => "write_sent",
            State::WriteUnknown { .. } => "write_unknown",
            State::WritePending => "write_pending",
            State::RefundSent => "refund_sent",
            State::Completed => "completed",
            State::Failed { .. } => "failed",
            State::Refunded => "refunded",
            State::Exception { .. } => "exception",
        }
    }

    /// Completed, Failed or Refunded: nothing more happens.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            State::Completed | State::Failed { .. } | State::Refunded
        )
    }
}

/// One top-up as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUp {
    pub id: TopUpId,
    pub card: CardSerial,
    /// In fen, 1..=u32::MAX (what a purse can load).
    pub amount: Fen,
    pub state: State,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The debit is posted (bank_receivable / pending_loads).
    pub debited: bool,
    /// The card credit is posted (pending_loads / card_float).
    pub credited: bool,
    pub debit_failures: u32,
    pub recovery_failures: u32,
    pub refund_failures: u32,
    /// Card writes that proved not to credit.
    pub write_attempts: u32,
    /// When the top-up first waited for its card.
    pub pending_since: Option<Timestamp>,
}

impl TopUp {
    pub fn new(
        id: TopUpId,
        card: CardSerial,
        amount: Fen,
        now: Timestamp,
    ) -> Result<TopUp, Invalid> {
        if amount <= 0 || amount > Fen::from(u32::MAX) {
            return Err(Invalid::Amount);
        }
        Ok(TopUp {
            id,
            card,
            amount,
            state: State::Initiated,
            created_at: now,
            updated_at: now,
            debited: false,
            credited: false,
            debit_failures: 0,
            recovery_failures: 0,
            refund_failures: 0,
            write_attempts: 0,
            pending_since: None,
        })
    }

    /// The amount as the purse takes it.
    pub fn card_amount(&self) -> u32 {
        u32::try_from(self.amount).unwrap_or(0)
    }

    /// The timer this state waits on, if any: when it is due and the event to feed then.
    pub fn due(&self, policy: &Policy) -> Option<(Timestamp, Event)> {
        match self.state {
            State::DebitUnknown => Some((
                self.updated_at.plus_ms(policy.debit_retry_ms),
                Event::DebitRetryDue,
            )),
            State::RefundSent => Some((
                self.updated_at.plus_ms(policy.refund_retry_ms),
                Event::RefundRetryDue,
            )),
            State::WritePending => Some((
                self.pending_since
                    .unwrap_or(self.updated_at)
                    .plus_ms(policy.write_pending_refund_ms),
                Event::RefundDue,
            )),
            _ => None,
        }
    }
}

/// The bank's answer to a debit or refund request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BankReply {
    Completed,
    Declined,
    /// Accepted, not settled yet.
    Pending,
    /// No usable answer: timeout, 5xx, garbage. It may or may not have happened.
    Unknown,
}

/// The bank's answer to a status query by idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusReply {
    Completed,
    Declined,
    Pending,
    /// The bank has nothing under this key.
    NotFound,
    /// The query itself failed.
    Unknown,
}

/// What a person decided after looking at an `Exception`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The bank statement shows the debit.
    Debited,
    /// The bank statement shows no debit.
    NotDebited,
    /// The card shows the load.
    Credited,
    /// The card does not show the load: refund.
    NotCredited,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A worker picks up a new top-up.
    Start,
    /// A worker picks the top-up up again after a restart; effects in flight were lost.
    Resume,
    DebitReply(BankReply),
    DebitStatus(StatusReply),
    /// Timer: query the unknown debit.
    DebitRetryDue,
    /// The load session is about to send CREDIT FOR LOAD; record what resolves it first.
    CreditReady(PendingLoad),
    /// The load session's outcome.
    Load(LoadOutcome),
    /// The card of a `WritePending` top-up is on the reader again.
    CardTapped,
    /// A recovery ran on the card's next tap.
    Recovery(Resolution),
    /// A recovery could not run to the end (card gone, wrong card, transport).
    RecoveryFailed,
    /// Timer: the card did not come back in time; refund.
    RefundDue,
    RefundReply(BankReply),
    RefundStatus(StatusReply),
    /// Timer: query the refund.
    RefundRetryDue,
    Operator(Decision),
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Start => "start",
            Event::Resume => "resume",
            Event::DebitReply(_) => "debit_reply",
            Event::DebitStatus(_) => "debit_status",
            Event::DebitRetryDue => "debit_retry_due",
            Event::CreditReady(_) => "credit_ready",
            Event::Load(_) => "load",
            Event::CardTapped => "card_tapped",
            Event::Recovery(_) => "recovery",
            Event::RecoveryFailed => "recovery_failed",
            Event::RefundDue => "refund_due",
            Event::RefundReply(_) => "refund_reply",
            Event::RefundStatus(_) => "refund_status",
            Event::RefundRetryDue => "refund_retry_due",
            Event::Operator(_) => "operator",
        }
    }
}

/// What the person at the kiosk is shown (a message code the page translates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    DebitDeclined,
    TopUpCompleted,
    /// Keep the card on the reader / tap it again.
    TapCardAgain,
    Refunding,
    Refunded,
    /// A person will look at it; the money is safe.
    HeldForReview,
}

impl Notice {
    pub fn code(self) -> &'static str {
        match self {
            Notice::DebitDeclined => "topup.debit_declined",
            Notice::TopUpCompleted => "topup.completed",
            Notice::TapCardAgain => "topup.tap_again",
            Notice::Refunding => "topup.refunding",
            Notice::Refunded => "topup.refunded",
            Notice::HeldForReview => "topup.held_for_review",
        }
    }
}

/// What a worker does once the transition is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    SendDebit {
        key: IdempotencyKey,
        amount: Fen,
    },
    QueryDebit {
        key: IdempotencyKey,
    },
    /// Start a load session on the card (answer with `CreditReady`, then `Load`).
    WriteCard {
        card: CardSerial,
        amount: u32,
    },
    /// Send the CREDIT FOR LOAD the load session prepared (its `PendingLoad` is recorded).
    SendCredit,
    /// On the card's next tap, run a recovery for this load.
    Recover {
        pending: PendingLoad,
    },
    SendRefund {
        key: IdempotencyKey,
        amount: Fen,
    },
    QueryRefund {
        key: IdempotencyKey,
    },
    Notify(Notice),
    /// Run-state monitoring (R3.8): a top-up needs a person.
    Alarm(ExceptionReason),
}

/// The result of [`step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub next: TopUp,
    pub effects: Vec<Effect>,
    /// Balanced ledger legs for `next.card`; empty when no money moves.
    pub postings: Vec<Leg>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("{event} does not apply to a top-up in state {state}")]
    NotInState {
        state: &'static str,
        event: &'static str,
    },
    #[error("the top-up is over ({state}); {event} does not apply")]
    Terminal {
        state: &'static str,
        event: &'static str,
    },
    #[error("{event} is not due before {due:?}")]
    NotDue { event: &'static str, due: Timestamp },
    #[error("the load is not this top-up's (card, amount or serial differ)")]
    WrongLoad,
    #[error("a top-up amount is 1..=4294967295 fen")]
    Amount,
    #[error("invariant violated: {0}")]
    Invariant(&'static str),
}

/// Refusals that will not go away by tapping again: refund at once.
fn permanent(refusal: &Refusal) -> bool {
    matches!(
        refusal,
        Refusal::NoPurse
            | Refusal::NoKey
            | Refusal::BadMac1
            | Refusal::KeyIndexNotSupported
            | Refusal::BalanceCeiling
    )
}

/// The transition function. Never panics; every (state, event) pair is either a transition or
/// an [`Invalid`].
pub fn step(
    topup: &TopUp,
    event: Event,
    now: Timestamp,
    policy: &Policy,
) -> Result<Transition, Invalid> {
    let event_name = event.name();
    let not_here = || Invalid::NotInState {
        state: topup.state.name(),
        event: event_name,
    };
    if topup.state.is_terminal() {
        return Err(Invalid::Terminal {
            state: topup.state.name(),
            event: event_name,
        });
    }
    let mut b = Builder::new(topup, now);
    match (&topup.state, event) {
        // ── the debit ────────────────────────────────────────────────────────────────
        (State::Initiated, Event::Start | Event::Resume) => b.send_debit(),
        (State::DebitSent, Event::DebitReply(reply)) => match reply {
            BankReply::Completed => b.confirm_debit(),
            BankReply::Declined => b.fail(FailReason::DebitDeclined),
            BankReply::Pending | BankReply::Unknown => b.go(State::DebitUnknown),
        },
        (State::DebitSent, Event::Resume) => {
            b.go(State::DebitUnknown);
            b.effect(Effect::QueryDebit {
                key: topup.id.debit_key(),
            });
        }
        (State::DebitUnknown, Event::DebitRetryDue) => {
            require_due(topup, now, policy, event_name)?;
            b.effect(Effect::QueryDebit {
                key: topup.id.debit_key(),
            });
        }
        (State::DebitUnknown, Event::Resume) => b.effect(Effect::QueryDebit {
            key: topup.id.debit_key(),
        }),
        (State::DebitUnknown, Event::DebitStatus(status)) => match status {
            StatusReply::Completed => b.confirm_debit(),
            StatusReply::Declined => b.fail(FailReason::DebitDeclined),
            StatusReply::NotFound => {
                // The bank has nothing under the key: send again under the same key, which
                // makes a late copy of the first request harmless.
                if b.debit_failure(policy) {
                    b.send_debit();
                }
            }
            StatusReply::Pending | StatusReply::Unknown => {
                b.debit_failure(policy);
            }
        },

        // ── the card write ───────────────────────────────────────────────────────────
        (State::DebitConfirmed, Event::Resume) => b.write_card(),
        (State::DebitConfirmed, Event::CreditReady(pending)) => {
            b.check_load(&pending)?;
            b.go(State::WriteSent { pending });
            b.effect(Effect::SendCredit);
        }
        (State::DebitConfirmed, Event::Load(LoadOutcome::Refused(refusal))) => {
            b.not_written(&refusal, policy)
        }
        (State::WriteSent { pending }, Event::Load(outcome)) => match outcome {
            LoadOutcome::Completed { online_serial, .. } => {
                if online_serial != pending.online_serial {
                    return Err(Invalid::WrongLoad);
                }
                b.complete()
            }
            LoadOutcome::Refused(refusal) => b.not_written(&refusal, policy),
            LoadOutcome::Unknown {
                pending: reported, ..
            } => {
                if reported != *pending {
                    return Err(Invalid::WrongLoad);
                }
                b.write_unknown(pending.clone());
            }
        },
        (State::WriteSent { pending }, Event::Resume) => b.write_unknown(pending.clone()),
        (State::WriteUnknown { pending }, Event::Resume) => b.effect(Effect::Recover {
            pending: pending.clone(),
        }),
        (State::WriteUnknown { pending }, Event::Recovery(resolution)) => match resolution {
            Resolution::Committed { .. } => b.complete(),
            Resolution::NotCommitted { .. } => b.proven_not_written(policy),
            Resolution::Undetermined { .. } => b.recovery_failure(pending.clone(), policy),
        },
        (State::WriteUnknown { pending }, Event::RecoveryFailed) => {
            b.recovery_failure(pending.clone(), policy)
        }
        (State::WritePending, Event::Resume) => {}
        (State::WritePending, Event::CardTapped) => b.write_card(),
        (State::WritePending, Event::RefundDue) => {
            require_due(topup, now, policy, event_name)?;
            b.send_refund();
        }

        // ── the refund ───────────────────────────────────────────────────────────────
        (State::RefundSent, Event::RefundReply(reply)) => match reply {
            BankReply::Completed => b.refunded(),
            BankReply::Declined => b.exception(ExceptionReason::RefundDeclined),
            BankReply::Pending | BankReply::Unknown => {
                b.refund_failure(policy);
            }
        },
        (State::RefundSent, Event::RefundRetryDue) => {
            require_due(topup, now, policy, event_name)?;
            b.effect(Effect::QueryRefund {
                key: topup.id.refund_key(),
            });
        }
        (State::RefundSent, Event::Resume) => b.effect(Effect::QueryRefund {
            key: topup.id.refund_key(),
        }),
        (State::RefundSent, Event::RefundStatus(status)) => match status {
            StatusReply::Completed => b.refunded(),
            StatusReply::Declined => b.exception(ExceptionReason::RefundDeclined),
            StatusReply::NotFound => {
                if b.refund_failure(policy) {
                    b.effect(Effect::SendRefund {
                        key: topup.id.refund_key(),
                        amount: topup.amount,
                    });
                }
            }
            StatusReply::Pending | StatusReply::Unknown => {
                b.refund_failure(policy);
            }
        },

        // ── a person ─────────────────────────────────────────────────────────────────
        // After a restart the alarm is raised again: it may have been lost with the process.
        (State::Exception { reason }, Event::Resume) => b.effect(Effect::Alarm(*reason)),
        (State::Exception { .. }, Event::Operator(decision)) => {
            // A person's decision starts the counting afresh.
            b.next.debit_failures = 0;
            b.next.recovery_failures = 0;
            b.next.refund_failures = 0;
            b.next.write_attempts = 0;
            match (decision, topup.debited, topup.credited) {
                (Decision::Debited, false, _) => b.confirm_debit(),
                (Decision::NotDebited, false, _) => b.fail(FailReason::NotDebited),
                (Decision::Credited, true, false) => b.complete(),
                (Decision::NotCredited, true, false) => b.send_refund(),
                _ => return Err(not_here()),
            }
        }

        // Everything else makes no sense in the state. Listed by state so that a new state
        // or event is a compile error here rather than a silent refusal.
        (
            State::Initiated
            | State::DebitSent
            | State::DebitUnknown
            | State::DebitConfirmed
            | State::WriteSent { .. }
            | State::WriteUnknown { .. }
            | State::WritePending
            | State::RefundSent
            | State::Exception { .. }
            | State::Completed
            | State::Failed { .. }
            | State::Refunded,
            Event::Start
            | Event::Resume
            | Event::DebitReply(_)
            | Event::DebitStatus(_)
            | Event::DebitRetryDue
            | Event::CreditReady(_)
            | Event::Load(_)
            | Event::CardTapped
            | Event::Recovery(_)
            | Event::RecoveryFailed
            | Event::RefundDue
            | Event::RefundReply(_)
            | Event::RefundStatus(_)
            | Event::RefundRetryDue
            | Event::Operator(_),
        ) => return Err(not_here()),
    }
    let transition = b.finish();
    check_invariants(topup, &transition)?;
    Ok(transition)
}

/// The invariants every transition keeps; a violation is a bug in [`step`], refused as
/// [`Invalid::Invariant`] rather than returned.
fn check_invariants(before: &TopUp, t: &Transition) -> Result<(), Invalid> {
    let after = &t.next;
    if !t.postings.is_empty() && !balanced(&t.postings) {
        return Err(Invalid::Invariant("unbalanced posting"));
    }
    if (after.id.clone(), after.card, after.amount)
        != (before.id.clone(), before.card, before.amount)
    {
        return Err(Invalid::Invariant(
            "a transition changed the top-up's identity",
        ));
    }
    if (before.debited && !after.debited) || (before.credited && !after.credited) {
        return Err(Invalid::Invariant("a posted debit or credit was forgotten"));
    }
    let posts = |account: Account, side: Side| {
        t.postings
            .iter()
            .any(|l| l.account == account && l.side == side)
    };
    if posts(Account::BankReceivable, Side::Debit) && before.debited {
        return Err(Invalid::Invariant("a debit posted twice"));
    }
    if posts(Account::CardFloat, Side::Credit) && before.credited {
        return Err(Invalid::Invariant("a card credit posted twice"));
    }
    for effect in &t.effects {
        match effect {
            Effect::WriteCard { .. } | Effect::SendCredit if !after.debited || after.credited => {
                return Err(Invalid::Invariant("a card write without a confirmed debit"));
            }
            Effect::SendRefund { .. } if !refund_allowed(before, after) => {
                return Err(Invalid::Invariant(
                    "a refund without proof that the card was not credited",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A refund needs the debit, no credit, and no CREDIT FOR LOAD whose outcome is open: out of
/// `WriteSent`/`WriteUnknown` only when this very transition proved the load did not commit (a
/// definite refusal or a recovery showing the serial unmoved, counted in `write_attempts`).
fn refund_allowed(before: &TopUp, after: &TopUp) -> bool {
    let credit_open = matches!(
        before.state,
        State::WriteSent { .. } | State::WriteUnknown { .. }
    );
    after.debited
        && !after.credited
        && after.state == State::RefundSent
        && (!credit_open || after.write_attempts > before.write_attempts)
}

/// Accumulates one transition.
struct Builder {
    next: TopUp,
    effects: Vec<Effect>,
    postings: Vec<Leg>,
    now: Timestamp,
}

impl Builder {
    fn new(topup: &TopUp, now: Timestamp) -> Builder {
        let mut next = topup.clone();
        next.updated_at = now.max(topup.updated_at);
        Builder {
            next,
            effects: Vec::new(),
            postings: Vec::new(),
            now,
        }
    }

    fn finish(self) -> Transition {
        Transition {
            next: self.next,
            effects: self.effects,
            postings: self.postings,
        }
    }

    fn go(&mut self, state: State) {
        self.next.state = state;
    }

    fn effect(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    fn send_debit(&mut self) {
        self.go(State::DebitSent);
        self.effect(Effect::SendDebit {
            key: self.next.id.debit_key(),
            amount: self.next.amount,
        });
    }

    fn confirm_debit(&mut self) {
        let amount = self.next.amount;
        self.postings
            .push(Leg::debit(Account::BankReceivable, amount));
        self.postings
            .push(Leg::credit(Account::PendingLoads, amount));
        self.next.debited = true;
        self.write_card();
    }

    fn write_card(&mut self) {
        self.go(State::DebitConfirmed);
        self.effect(Effect::WriteCard {
            card: self.next.card,
            amount: self.next.card_amount(),
        });
    }

    fn fail(&mut self, reason: FailReason) {
        self.go(State::Failed { reason });
        if reason == FailReason::DebitDeclined {
            self.effect(Effect::Notify(Notice::DebitDeclined));
        }
    }

    fn exception(&mut self, reason: ExceptionReason) {
        self.go(State::Exception { reason });
        self.effect(Effect::Alarm(reason));
        self.effect(Effect::Notify(Notice::HeldForReview));
    }

    /// Count an unresolved debit answer; `false` when that made it an exception.
    fn debit_failure(&mut self, policy: &Policy) -> bool {
        self.next.debit_failures = self.next.debit_failures.saturating_add(1);
        if self.next.debit_failures > policy.max_debit_failures {
            self.exception(ExceptionReason::DebitUnresolved);
            return false;
        }
        self.go(State::DebitUnknown);
        true
    }

    fn refund_failure(&mut self, policy: &Policy) -> bool {
        self.next.refund_failures = self.next.refund_failures.saturating_add(1);
        if self.next.refund_failures > policy.max_refund_failures {
            self.exception(ExceptionReason::RefundUnresolved);
            return false;
        }
        true
    }

    fn recovery_failure(&mut self, pending: PendingLoad, policy: &Policy) {
        self.next.recovery_failures = self.next.recovery_failures.saturating_add(1);
        if self.next.recovery_failures > policy.max_recovery_failures {
            self.exception(ExceptionReason::WriteUnresolved);
        } else {
            self.go(State::WriteUnknown {
                pending: pending.clone(),
            });
            self.effect(Effect::Recover { pending });
            self.effect(Effect::Notify(Notice::TapCardAgain));
        }
    }

    fn check_load(&self, pending: &PendingLoad) -> Result<(), Invalid> {
        let ours =
            pending.card_serial == self.next.card && i64::from(pending.amount) == self.next.amount;
        ours.then_some(()).ok_or(Invalid::WrongLoad)
    }

    fn write_unknown(&mut self, pending: PendingLoad) {
        self.next.recovery_failures = 0;
        self.go(State::WriteUnknown {
            pending: pending.clone(),
        });
        self.effect(Effect::Recover { pending });
        self.effect(Effect::Notify(Notice::TapCardAgain));
    }

    /// The card definitely did not credit (a refusal).
    fn not_written(&mut self, refusal: &Refusal, policy: &Policy) {
        self.next.write_attempts = self.next.write_attempts.saturating_add(1);
        if permanent(refusal) || self.next.write_attempts >= policy.max_write_attempts {
            self.send_refund();
        } else {
            self.wait_for_card();
        }
    }

    /// A recovery proved the load did not commit: write again while the card is here.
    fn proven_not_written(&mut self, policy: &Policy) {
        self.next.write_attempts = self.next.write_attempts.saturating_add(1);
        if self.next.write_attempts >= policy.max_write_attempts {
            self.send_refund();
        } else {
            self.write_card();
        }
    }

    fn wait_for_card(&mut self) {
        self.next.pending_since = Some(self.next.pending_since.unwrap_or(self.now));
        self.go(State::WritePending);
        self.effect(Effect::Notify(Notice::TapCardAgain));
    }

    fn send_refund(&mut self) {
        self.go(State::RefundSent);
        self.effect(Effect::SendRefund {
            key: self.next.id.refund_key(),
            amount: self.next.amount,
        });
        self.effect(Effect::Notify(Notice::Refunding));
    }

    fn complete(&mut self) {
        let amount = self.next.amount;
        self.postings
            .push(Leg::debit(Account::PendingLoads, amount));
        self.postings.push(Leg::credit(Account::CardFloat, amount));
        self.next.credited = true;
        self.go(State::Completed);
        self.effect(Effect::Notify(Notice::TopUpCompleted));
    }

    fn refunded(&mut self) {
        let amount = self.next.amount;
        self.postings
            .push(Leg::debit(Account::PendingLoads, amount));
        self.postings.push(Leg::credit(Account::Refunds, amount));
        self.go(State::Refunded);
        self.effect(Effect::Notify(Notice::Refunded));
    }
}

/// A timer event is accepted only once the recorded state's timer is due.
fn require_due(
    topup: &TopUp,
    now: Timestamp,
    policy: &Policy,
    event: &'static str,
) -> Result<(), Invalid> {
    match topup.due(policy) {
        Some((due, _)) if now >= due => Ok(()),
        Some((due, _)) => Err(Invalid::NotDue { event, due }),
        None => Err(Invalid::NotDue {
            event,
            due: Timestamp(i64::MAX),
        }),
    }
}
