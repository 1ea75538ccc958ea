//! The top-up worker's bank side: from committed states only, it runs the bank effects (debit, debit status, refund) and feeds their outcomes back through `record::apply` — never from a request handler
//!
//! One pass ([`BankWorker::run_once`]) takes the open top-ups that wait on the bank or on a timer:
//! `initiated` (start: the debit goes out), `debit_sent` and `refund_sent` found without a worker
//! (after a restart: `resume`, which queries, never resends blindly), `debit_unknown`,
//! `write_pending` and `refund_sent` whose timer is due. Card effects (`WriteCard`, `SendCredit`,
//! `Recover`) are the card side's (`topup::service`): a confirmed debit hands the write to it.
//!
//! The supervised task ([`BankWorker::run`]) drives each due top-up in its own task as soon as it
//! is seen (woken when a top-up is recorded, or every interval for timers), at most
//! `CONCURRENT_TOPUPS` at once and one drive per top-up, so a slow bank answer for one customer
//! holds up no other; each top-up's own steps stay in order.

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

/// The top-ups being driven by the running worker, one task each.
#[derive(Default)]
struct DriveSet {
    set: tokio::task::JoinSet<(String, Result<usize, RecordError>)>,
    inflight: std::collections::HashSet<String>,
}

impl DriveSet {
    /// A drive ended: its top-up may be picked up again; its error (or panic) ends the run, for
    /// the supervisor to restart it.
    fn finished(&mut self, done: Result<(String, Result<usize, RecordError>), tokio::task::JoinError>) -> anyhow::Result<()> {
        let (id, result) = done.map_err(|e| anyhow::anyhow!("a top-up drive panicked: {e}"))?;
        self.inflight.remove(&id);
        match result {
            Ok(steps) if steps > 0 => tracing::debug!(topup = %id, steps, "top-up driven"),
            Ok(_) => {}
            Err(e) => return Err(anyhow::anyhow!(e).context(format!("driving top-up {id}"))),
        }
        Ok(())
    }
}

/// Top-ups driven at the same time (each waits mostly on the bank).
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
        // Each top-up's steps stay in order (one `drive` each); different top-ups wait on the
        // bank side by side, so one slow answer does not hold up every other customer.
        stream::iter(self.due(resumed).await?.into_iter().map(Ok))
            .map_ok(|(stored, event)| async move { self.drive(&stored, event).await })
            .try_buffer_unordered(CONCURRENT_TOPUPS)
            .try_fold(0, |total, steps| async move { Ok(total + steps) })
            .await
    }

    /// The open top-ups that wait on the bank or on a timer now, with the event that moves each.
    async fn due(&self, resumed: bool) -> Result<Vec<(StoredTopUp, Event)>, RecordError> {
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
        Ok(due)
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
        let mut driving = DriveSet::default();
        let result = self.run_pipelined(interval, &stop, &mut driving).await;
        // Drives cut short here are resumed from their committed state by the next run.
        driving.set.shutdown().await;
        result
    }

    /// Each due top-up is driven in its own task as soon as it is seen (at most
    /// [`CONCURRENT_TOPUPS`] at once, one drive per top-up): a new top-up does not wait for the
    /// others' bank answers.
    async fn run_pipelined(&self, interval: std::time::Duration, stop: &tokio_util::sync::CancellationToken, driving: &mut DriveSet) -> anyhow::Result<()> {
        let mut resumed = true;
        loop {
            for (stored, event) in self.due(resumed).await.map_err(|e| anyhow::anyhow!(e).context("a top-up worker pass"))? {
                let id = stored.topup.id.as_str().to_string();
                if driving.inflight.len() >= CONCURRENT_TOPUPS || !driving.inflight.insert(id.clone()) {
                    continue;
                }
                let worker = self.clone();
                driving.set.spawn(async move {
                    let result = worker.drive(&stored, event).await;
                    (id, result)
                });
            }
            if let Some(topups) = &self.topups {
                let swept = topups.sweep_stale_writes(STALE_WRITE_MS).await.map_err(|e| anyhow::anyhow!(e).context("sweeping stale card writes"))?;
                if swept > 0 {
                    tracing::info!(swept, "stale card writes swept");
                }
            }
            resumed = false;
            let pass_due = tokio::time::sleep(interval);
            tokio::pin!(pass_due);
            loop {
                let woken = async {
                    match &self.topups {
                        Some(topups) => topups.woken().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = &mut pass_due => break,
                    _ = woken => break,
                    Some(done) = driving.set.join_next() => driving.finished(done)?,
                    _ = stop.cancelled() => return Ok(()),
                }
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
