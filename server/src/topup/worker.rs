//! The top-up worker's bank side: from committed states only, it runs the bank effects (debit, debit status, refund) and feeds their outcomes back through `record::apply` — never from a request handler
//!
//! One pass ([`BankWorker::run_once`]) takes the open top-ups that wait on the bank or on a timer:
//! `initiated` (start: the debit goes out), `debit_sent` and `refund_sent` found without a worker
//! (after a restart: `resume`, which queries, never resends blindly), `debit_unknown`,
//! `write_pending` and `refund_sent` whose timer is due. Card effects (`WriteCard`, `SendCredit`,
//! `Recover`) wait for the card at a terminal and are not run here.

use std::sync::Arc;

use super::record::{self, RecordError};
use super::{BankReply, Effect, Event, Policy, State, StatusReply, Timestamp};
use crate::bank::{BankError, BankGateway, BindingToken, RefundOrder, RefundOutcome, RejectCode, TransferOrder, TransferOutcome, TransferStatus};
use crate::clock::Clock;
use crate::store::{Store, StoredTopUp};
use super::service::TopUps;

/// What the worker needs: the store, the bank, the rules, where the money goes, the clock.
#[derive(Clone)]
pub struct BankWorker {
    pub store: Store,
    pub bank: Arc<dyn BankGateway>,
    pub policy: Policy,
    /// The issuer's settlement account at the bank.
    pub settlement_account: String,
    pub currency: String,
    pub clock: Arc<dyn Clock>,
    /// The card side and the change feed: with it, steps are announced to the kiosks, a
    /// confirmed debit starts the card write at its terminal, a new top-up wakes the worker, and
    /// card writes left behind by a process that died are swept.
    pub topups: Option<TopUps>,
}

impl std::fmt::Debug for BankWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BankWorker").field("settlement_account", &self.settlement_account).finish_non_exhaustive()
    }
}

/// States the worker looks at, and the event that moves each on.
const QUEUE: [&str; 5] = ["initiated", "debit_sent", "debit_unknown", "write_pending", "refund_sent"];

const ACTOR: &str = "topup-worker";

/// Top-ups one pass drives at the same time (each waits mostly on the bank).
const CONCURRENT_TOPUPS: usize = 32;

/// A card write with no step for this long belongs to a process that is gone: a load takes three
/// round trips of at most the command timeout each.
const STALE_WRITE_MS: i64 = 2 * 60_000;

impl BankWorker {
    fn now(&self) -> Timestamp {
        Timestamp(self.clock.now_ms())
    }

    /// One pass over the queue; returns how many steps were recorded. `resumed` is true on the
    /// first pass after a start: `debit_sent` / `refund_sent` rows are then effects lost in a
    /// crash, and are resumed.
    pub async fn run_once(&self, resumed: bool) -> Result<usize, RecordError> {
        use futures_util::stream::{self, TryStreamExt};
        let mut due = Vec::new();
        for stored in self.store.open_topups_in(&QUEUE, 100).await? {
            let event = match (&stored.topup.state, stored.topup.due(&self.policy)) {
                (State::Initiated, _) => Some(Event::Start),
                (State::DebitSent | State::RefundSent, _) if resumed => Some(Event::Resume),
                (_, Some((at, event))) if at <= self.now() => Some(event),
                _ => None,
            };
            if let Some(event) = event {
                due.push((stored, event));
            }
        }
        // Each top-up's steps stay in order (one `drive` each); different top-ups wait on the
        // bank side by side, so one slow answer does not hold up every other customer.
        stream::iter(due.into_iter().map(Ok))
            .map_ok(|(stored, event)| async move { self.drive(&stored, event).await })
            .try_buffer_unordered(CONCURRENT_TOPUPS)
            .try_fold(0, |total, steps| async move { Ok(total + steps) })
            .await
    }

    /// Apply `event`, then run the bank effects of each transition and feed their outcomes back,
    /// until no bank effect is left.
    async fn drive(&self, stored: &StoredTopUp, first: Event) -> Result<usize, RecordError> {
        let id = stored.topup.id.as_str().to_string();
        let mut next = Some(first);
        let mut steps = 0;
        while let Some(event) = next.take() {
            let applied = match &self.topups {
                Some(topups) => topups.apply(&id, event, ACTOR).await,
                None => record::apply(&self.store, &id, event, self.now(), &self.policy, ACTOR).await,
            };
            let transition = match applied {
                Ok(t) => t,
                // Another worker moved it on: it owns the effects now.
                Err(RecordError::Stale) => return Ok(steps),
                Err(e) => return Err(e),
            };
            steps += 1;
            for effect in &transition.effects {
                if let (Effect::WriteCard { .. }, Some(topups)) = (effect, &self.topups) {
                    topups.spawn_write_at_origin(&id);
                }
                if let Some(outcome) = self.run_effect(stored, effect).await? {
                    next = Some(outcome);
                }
            }
        }
        Ok(steps)
    }

    /// Run one bank effect; the event its outcome is, if any.
    async fn run_effect(&self, stored: &StoredTopUp, effect: &Effect) -> Result<Option<Event>, RecordError> {
        Ok(match effect {
            Effect::SendDebit { key, amount } => {
                let token = BindingToken::new(self.store.binding_token(&stored.binding_id).await?);
                let order = TransferOrder {
                    idempotency_key: key.as_str().to_string(),
                    binding: token,
                    amount_minor: *amount,
                    currency: self.currency.clone(),
                    to_account: self.settlement_account.clone(),
                    reference: format!("top-up {}", stored.topup.id.as_str()),
                };
                Some(Event::DebitReply(match self.bank.transfer(&order).await {
                    Ok(TransferOutcome::Completed { .. }) => BankReply::Completed,
                    Ok(TransferOutcome::Declined { .. }) => BankReply::Declined,
                    Ok(TransferOutcome::Pending { .. }) => BankReply::Pending,
                    Ok(TransferOutcome::Unknown(_)) | Err(_) => BankReply::Unknown,
                }))
            }
            Effect::QueryDebit { key } => Some(Event::DebitStatus(status(self.bank.transfer_status(key.as_str()).await))),
            Effect::SendRefund { key, amount } => Some(Event::RefundReply(self.refund(stored, key.as_str(), *amount).await)),
            // A refund is idempotent by key: asking again is the query.
            Effect::QueryRefund { key } => Some(Event::RefundStatus(match self.refund(stored, key.as_str(), stored.topup.amount).await {
                BankReply::Completed => StatusReply::Completed,
                BankReply::Declined => StatusReply::Declined,
                BankReply::Pending => StatusReply::Pending,
                BankReply::Unknown => StatusReply::Unknown,
            })),
            // Stored and pushed to the admins by the monitor, the service's step observer, when
            // the step was applied through `TopUps::apply`.
            Effect::Alarm(reason) => {
                tracing::error!(topup = stored.topup.id.as_str(), reason = reason.code(), "a top-up needs a person");
                None
            }
            Effect::Notify(_) | Effect::WriteCard { .. } | Effect::SendCredit | Effect::Recover { .. } => None,
        })
    }

    async fn refund(&self, stored: &StoredTopUp, key: &str, amount: i64) -> BankReply {
        let order = RefundOrder {
            idempotency_key: key.to_string(),
            transfer_key: stored.topup.id.debit_key().as_str().to_string(),
            amount_minor: amount,
        };
        match self.bank.refund(&order).await {
            Ok(RefundOutcome::Completed { .. }) => BankReply::Completed,
            Ok(RefundOutcome::Unknown(_)) => BankReply::Unknown,
            Err(BankError::Rejected { code: RejectCode::RefundRefused, .. }) => BankReply::Declined,
            Err(_) => BankReply::Unknown,
        }
    }
}

impl BankWorker {
    /// Run passes every `interval` until `stop`: the supervised task. The first pass of a run
    /// resumes what a previous run (or instance) left in flight.
    pub async fn run(&self, interval: std::time::Duration, stop: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
        let mut resumed = true;
        loop {
            let mut steps = self.run_once(resumed).await.map_err(|e| anyhow::anyhow!(e).context("a top-up worker pass"))?;
            if let Some(topups) = &self.topups {
                steps += topups.sweep_stale_writes(STALE_WRITE_MS).await.map_err(|e| anyhow::anyhow!(e).context("sweeping stale card writes"))?;
            }
            if steps > 0 {
                tracing::info!(steps, "top-up worker pass");
            }
            resumed = false;
            let woken = async {
                match &self.topups {
                    Some(topups) => topups.woken().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = woken => {}
                _ = stop.cancelled() => return Ok(()),
            }
        }
    }
}

fn status(answer: Result<TransferStatus, BankError>) -> StatusReply {
    match answer {
        Ok(TransferStatus::Completed { .. }) => StatusReply::Completed,
        Ok(TransferStatus::Declined { .. }) => StatusReply::Declined,
        Ok(TransferStatus::Pending { .. }) => StatusReply::Pending,
        Ok(TransferStatus::NeverSeen) => StatusReply::NotFound,
        Err(_) => StatusReply::Unknown,
    }
}
