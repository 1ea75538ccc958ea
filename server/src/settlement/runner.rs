//! Settling a business day: the bank's statement through the gateway, the day from the store, the reconciliation, and a new revision only when the result differs from the latest (so that settling twice gives the same report); the alarm on mismatches; the scheduled job that settles the previous day once it is due
//!
//! The same [`Settler::settle`] serves the scheduled job, the admin's button and
//! `cardbridge settle`. A revision and its audit event are written in one transaction.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::report::{digest, SettlementHeader, StoredSettlement};
use super::{day, reconcile, AlarmSink, BusinessDate, Calendar, DayInputs};
use crate::bank::{BankError, BankGateway, MovementKind};
use crate::clock::Clock;
use crate::keys::KeyStore;
use crate::store::{Store, StoreError};

/// Who the audit log names for the scheduled job.
pub const JOB_ACTOR: &str = "settlement-job";

/// Why a day could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("the business day {0} is not over yet")]
    NotOver(String),
    #[error("no bank gateway is configured")]
    NoBank,
    #[error("the bank's statement of {date} is unavailable")]
    Bank {
        date: String,
        #[source]
        source: BankError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The outcome of settling a day: the revision that stands, and whether this run wrote it.
#[derive(Debug, Clone)]
pub struct Settled {
    pub settlement: StoredSettlement,
    /// `false`: the result equals the latest revision, nothing was written.
    pub new_revision: bool,
}

/// Everything settling needs (cheap to clone).
#[derive(Clone)]
pub struct Settler {
    pub store: Store,
    pub bank: Option<Arc<dyn BankGateway>>,
    pub keys: Arc<dyn KeyStore>,
    pub calendar: Calendar,
    pub currency: String,
    pub alarms: Arc<dyn AlarmSink>,
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Settler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settler").field("calendar", &self.calendar).field("bank", &self.bank.is_some()).finish_non_exhaustive()
    }
}

impl Settler {
    /// The settler of a running server; its alarms are run-state monitoring's (stored, pushed to
    /// the admins and the webhook).
    pub fn from_state(state: &crate::state::AppState) -> Settler {
        let alarms = Arc::new(crate::monitor::SettlementAlarms(state.monitor.clone()));
        Settler::from_parts(&state.config, state.store.clone(), state.bank.clone(), state.keys.clone(), state.clock.clone(), alarms)
    }

    /// The settler of `config` over these services (the command line builds its own).
    pub fn from_parts(
        config: &crate::config::Config,
        store: Store,
        bank: Option<Arc<dyn BankGateway>>,
        keys: Arc<dyn KeyStore>,
        clock: Arc<dyn Clock>,
        alarms: Arc<dyn AlarmSink>,
    ) -> Settler {
        Settler { store, bank, keys, calendar: config.settlement_calendar(), currency: config.topup.currency.clone(), alarms, clock }
    }

    /// Settle `date`: reconcile it now and keep the result as a new revision unless it equals
    /// the latest one. Refused while the day is not over.
    pub async fn settle(&self, date: BusinessDate, actor: &str) -> Result<Settled, SettleError> {
        let now = self.clock.now_ms();
        if !self.calendar.is_over(date, now) {
            return Err(SettleError::NotOver(date.to_string()));
        }
        let bank = self.bank.as_ref().ok_or(SettleError::NoBank)?;
        let window = self.calendar.window(date);
        let widened = window.widened(self.calendar.grace_ms);
        // Statement days that have not begun have nothing to say yet.
        let asked = day::Window { start_ms: widened.start_ms, end_ms: widened.end_ms.min(now.max(window.end_ms)) };
        let mut statement = Vec::new();
        for utc_date in day::utc_dates_covering(asked) {
            let s = bank.statement(&utc_date).await.map_err(|source| SettleError::Bank { date: utc_date.clone(), source })?;
            statement.extend(s.lines);
        }
        let topups = self.store.settlement_day_topups(window).await?;
        let ours: HashSet<&str> = topups.iter().map(|t| t.topup_id.as_str()).collect();
        let mut others: Vec<String> = statement
            .iter()
            .map(|l| match l.kind {
                MovementKind::Transfer => l.idempotency_key.clone(),
                MovementKind::Refund => l.transfer_key.clone().unwrap_or_else(|| l.idempotency_key.clone()),
            })
            .filter(|k| !ours.contains(k.as_str()))
            .collect();
        others.sort();
        others.dedup();
        let known_elsewhere = self.store.existing_topup_ids(&others).await?;
        let items = reconcile(&DayInputs {
            window,
            grace_ms: self.calendar.grace_ms,
            topups: &topups,
            statement: &statement,
            known_elsewhere: &known_elsewhere,
            keys: self.keys.purse(),
        });
        let digest = digest(date, window, &self.currency, &items);
        let date_text = date.to_string();
        // Two runs at once (the job and an admin): one writes the revision, the other finds it.
        for _ in 0..3 {
            let latest = self.store.latest_settlement_header(&date_text).await?;
            if let Some(latest) = &latest {
                if latest.digest == digest {
                    let settlement = self.store.settlement(&date_text, Some(latest.revision)).await?;
                    return Ok(Settled { settlement, new_revision: false });
                }
            }
            let n_mismatches = items.iter().filter(|i| i.class().is_mismatch()).count();
            let header = SettlementHeader {
                settlement_id: crate::util::new_id("st"),
                business_date: date_text.clone(),
                revision: latest.as_ref().map_or(1, |l| l.revision + 1),
                digest: digest.clone(),
                time_zone: self.calendar.zone.name().to_string(),
                cutoff: self.calendar.cutoff.to_string(),
                window,
                currency: self.currency.clone(),
                n_items: items.len() as i64,
                n_mismatches: n_mismatches as i64,
                created_at: now,
                created_by: actor.to_string(),
            };
            let mut tx = self.store.begin().await?;
            match tx.insert_settlement(&header, &items).await {
                Ok(()) => {}
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
            let detail = format!("revision {}: {} items, {} mismatches", header.revision, items.len(), n_mismatches);
            tx.audit(actor, "settlement.revision", &date_text, &detail).await?;
            match tx.commit().await {
                Ok(()) => {}
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
            tracing::info!(date = %date_text, revision = header.revision, items = items.len(), mismatches = n_mismatches, actor, "settlement revision written");
            if n_mismatches > 0 {
                self.alarms.mismatch(&date_text, header.revision, n_mismatches);
            }
            self.alarms.settled(&date_text, n_mismatches);
            return Ok(Settled { settlement: StoredSettlement { header, items }, new_revision: true });
        }
        Err(SettleError::Store(StoreError::Conflict("settlement_revision_key".into())))
    }

    /// One pass of the scheduled job: settle the latest day that is due, unless it was settled
    /// already (by the job, an admin or the command line). Returns what it settled.
    pub async fn run_due(&self) -> Result<Option<Settled>, SettleError> {
        let date = self.calendar.latest_due(self.clock.now_ms());
        if self.store.latest_settlement_header(&date.to_string()).await?.is_some() {
            return Ok(None);
        }
        self.settle(date, JOB_ACTOR).await.map(Some)
    }

    /// The scheduled job: a pass every `interval` until `stop`. A pass that fails (the bank is
    /// down) raises the alarm and is tried again at the next pass; it does not end the task.
    pub async fn run(&self, interval: Duration, stop: CancellationToken) -> anyhow::Result<()> {
        // The day whose failure was alarmed already: one alarm per day, not one per pass.
        let mut alarmed: Option<String> = None;
        loop {
            match self.run_due().await {
                Ok(settled) => {
                    if let (Some(date), Some(settled)) = (alarmed.take(), settled) {
                        self.alarms.settled(&date, settled.settlement.items.iter().filter(|i| i.class().is_mismatch()).count());
                    }
                }
                Err(e) => {
                    let date = self.calendar.latest_due(self.clock.now_ms()).to_string();
                    tracing::warn!(date = %date, error = %crate::util::ErrorChain(&e), "scheduled settlement failed; tried again at the next pass");
                    if alarmed.as_deref() != Some(date.as_str()) {
                        self.alarms.failed(&date, &e.to_string());
                        alarmed = Some(date);
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.cancelled() => return Ok(()),
            }
        }
    }
}
