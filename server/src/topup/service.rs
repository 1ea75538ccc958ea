//! The top-up service: the card side of the engine (the load and its recovery at a terminal, through the agent), the change feed that kiosks follow, and the wake-up of the bank worker
//!
//! Like the bank side ([`super::worker::BankWorker`]), the card side runs only from committed
//! states: a load starts from a recorded `debit_confirmed`; before CREDIT FOR LOAD goes to the
//! card, the load that it would commit is recorded (`CreditReady`), so that a lost answer is
//! resolved later by the card's own proof and never guessed; a recovery runs from a recorded
//! `write_unknown`. Every step goes through [`TopUps::apply`], which records it (with its
//! postings and audit event, in one transaction) and then tells the kiosks.
//!
//! This is what the top-up code depends on — the store, the router (transport to agents, on
//! whichever instance they are connected; and the other instances told of each step), the
//! purse keys, the clock — rather than the whole application state.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use card::batch::Batch;
use futures_util::future::BoxFuture;
use card::purse::{self, CardSerial, LoadNext, LoadOutcome, LoadRequest, LoadSession, RecoverySession, Refusal};
use tokio::sync::{broadcast, Notify};

use super::record::{self, RecordError};
use super::{Effect, Event, Fen, Notice, Policy, State, Timestamp, TopUp, TopUpId, Transition};
use crate::clock::Clock;
use crate::hub::PresentCard;
use crate::router::Router;
use crate::keys::KeyStore;
use crate::store::{Store, StoredTopUp};
use crate::util::new_id;

/// Who the audit log names for the card side's steps.
const ACTOR: &str = "topup-card";
/// Changes a slow kiosk may fall behind by before it misses some (it then re-reads the row).
const FEED_CAPACITY: usize = 1024;

/// One recorded step of a top-up, as the kiosks see it.
#[derive(Debug, Clone)]
pub struct Change {
    pub topup_id: String,
    pub card: CardSerial,
    pub state: State,
    pub notices: Vec<Notice>,
}

/// The shared top-up service (cheap to clone).
#[derive(Clone)]
pub struct TopUps(Arc<Inner>);

struct Inner {
    store: Store,
    router: Router,
    keys: Arc<dyn KeyStore>,
    clock: Arc<dyn Clock>,
    policy: Policy,
    /// The purse load key index the server uses.
    key_index: u8,
    /// The zone of the date and time written to the card (they are part of MAC2 and the TAC,
    /// and show on the card's load log).
    time_zone: chrono_tz::Tz,
    changes: broadcast::Sender<Change>,
    wake: Notify,
    /// Top-ups whose card write runs in this process now: one writer each.
    writing: Mutex<HashSet<String>>,
    observer: Option<Arc<dyn StepObserver>>,
}

/// Told of every recorded step, after its commit (run-state monitoring: it counts the end states
/// and raises the alarm of `Effect::Alarm`).
pub trait StepObserver: Send + Sync {
    /// `topup_id` is now in `state`; the step asks for `effects`.
    fn recorded<'a>(&'a self, topup_id: &'a str, state: &'a State, effects: &'a [Effect]) -> BoxFuture<'a, ()>;
}

impl std::fmt::Debug for TopUps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopUps").field("key_index", &self.0.key_index).finish_non_exhaustive()
    }
}

/// What the service needs to be built.
pub struct TopUpsConfig {
    pub store: Store,
    pub router: Router,
    pub keys: Arc<dyn KeyStore>,
    pub clock: Arc<dyn Clock>,
    pub policy: Policy,
    pub key_index: u8,
    pub time_zone: chrono_tz::Tz,
    /// Told of every step (the monitor), if any.
    pub observer: Option<Arc<dyn StepObserver>>,
}

/// A card-side step that could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum CardSideError {
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// Removes a top-up from the set of running writes when the write ends, however it ends.
struct WriteClaim<'a> {
    service: &'a TopUps,
    topup_id: String,
}

impl Drop for WriteClaim<'_> {
    fn drop(&mut self) {
        self.service.0.writing.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.topup_id);
    }
}

impl TopUps {
    pub fn new(config: TopUpsConfig) -> TopUps {
        let (changes, _) = broadcast::channel(FEED_CAPACITY);
        TopUps(Arc::new(Inner {
            store: config.store,
            router: config.router,
            keys: config.keys,
            clock: config.clock,
            policy: config.policy,
            key_index: config.key_index,
            time_zone: config.time_zone,
            changes,
            wake: Notify::new(),
            writing: Mutex::new(HashSet::new()),
            observer: config.observer,
        }))
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    pub fn key_index(&self) -> u8 {
        self.0.key_index
    }

    fn now(&self) -> Timestamp {
        Timestamp(self.0.clock.now_ms())
    }

    /// Follow every recorded step from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.0.changes.subscribe()
    }

    /// Wake the bank worker now (a new top-up waits for its debit).
    pub fn wake_worker(&self) {
        self.0.wake.notify_one();
    }

    /// [`TopUps::wake_worker`], on whichever instance runs the worker.
    pub fn wake_worker_anywhere(&self) {
        self.wake_worker();
        self.0.router.announce_later(protocol::cluster::EventKind::WorkerWake);
    }

    /// Another instance recorded a step of `topup_id`: tell this instance's kiosks, from the row.
    pub async fn republish(&self, topup_id: &str) {
        match self.0.store.topup(topup_id).await {
            Ok(stored) => {
                let _ = self.0.changes.send(Change {
                    topup_id: topup_id.to_string(),
                    card: stored.topup.card,
                    state: stored.topup.state.clone(),
                    notices: Vec::new(),
                });
            }
            Err(e) => tracing::error!(topup = %topup_id, error = %crate::util::ErrorChain(&e), "reading a top-up another instance changed"),
        }
    }

    /// Resolves when [`TopUps::wake_worker`] was called (or was called since the last wait).
    pub async fn woken(&self) {
        self.0.wake.notified().await;
    }

    /// Record a new top-up of `amount` fen for `card` at `terminal_id`, paid from `binding_id`,
    /// and wake the bank worker. The debit is sent by the worker, never from here.
    pub async fn create(&self, card: CardSerial, binding_id: &str, amount: Fen, terminal_id: &str, actor: &str) -> Result<TopUp, RecordError> {
        let id = TopUpId::new(new_id("tu"));
        let topup = record::create(&self.0.store, id, card, binding_id, amount, self.now(), actor, Some(terminal_id)).await?;
        self.publish(&topup, &[]);
        self.wake_worker_anywhere();
        Ok(topup)
    }

    /// Feed `event` to the recorded top-up (see [`record::apply`]), then tell the kiosks and the
    /// observer.
    pub async fn apply(&self, topup_id: &str, event: Event, actor: &str) -> Result<Transition, RecordError> {
        let transition = record::apply(&self.0.store, topup_id, event, self.now(), &self.0.policy, actor).await?;
        self.publish(&transition.next, &transition.effects);
        if let Some(observer) = &self.0.observer {
            observer.recorded(topup_id, &transition.next.state, &transition.effects).await;
        }
        Ok(transition)
    }

    fn publish(&self, topup: &TopUp, effects: &[Effect]) {
        let notices = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Notify(n) => Some(*n),
                _ => None,
            })
            .collect();
        // Nobody listening is fine: the row is the truth, the feed only saves polling.
        self.0.router.announce_later(protocol::cluster::EventKind::TopUpChanged { topup_id: topup.id.as_str().to_string() });
        let _ = self.0.changes.send(Change {
            topup_id: topup.id.as_str().to_string(),
            card: topup.card,
            state: topup.state.clone(),
            notices,
        });
    }

    /// Run the card write of a `debit_confirmed` top-up at the terminal where it was asked for,
    /// in its own task (the bank worker calls this when a debit is confirmed).
    pub fn spawn_write_at_origin(&self, topup_id: &str) {
        let service = self.clone();
        let topup_id = topup_id.to_string();
        tokio::spawn(async move {
            let terminal = match service.0.store.topup_terminal(&topup_id).await {
                Ok(Some(t)) => t,
                Ok(None) => {
                    // Recorded without a terminal (not from a kiosk): it waits for its card.
                    service.report(&topup_id, service.write_card(&topup_id, None).await);
                    return;
                }
                Err(e) => {
                    tracing::error!(topup = %topup_id, error = %crate::util::ErrorChain(&e), "finding a top-up's terminal");
                    return;
                }
            };
            service.report(&topup_id, service.write_card(&topup_id, Some(&terminal)).await);
        });
    }

    fn report(&self, topup_id: &str, result: Result<(), CardSideError>) {
        match result {
            Ok(()) | Err(CardSideError::Record(RecordError::Stale)) => {}
            Err(e) => tracing::error!(topup = %topup_id, error = %crate::util::ErrorChain(&e), "card side of a top-up"),
        }
    }

    /// The card write of a `debit_confirmed` top-up on the card on `terminal_id`'s reader: the
    /// three-round-trip load, with the pending load recorded before CREDIT FOR LOAD. No card there
    /// (or no terminal) is a load that did not happen: the top-up waits for the card's next tap.
    /// A top-up in any other state, or already being written by this process, is left alone.
    pub async fn write_card(&self, topup_id: &str, terminal_id: Option<&str>) -> Result<(), CardSideError> {
        let Some(_claim) = self.claim(topup_id) else { return Ok(()) };
        let stored = self.0.store.topup(topup_id).await.map_err(RecordError::from)?;
        if stored.topup.state != State::DebitConfirmed {
            return Ok(());
        }
        let present = match terminal_id {
            Some(t) => self.0.router.present_card(t).await.map(|card| (t, card)),
            None => None,
        };
        let Some((terminal_id, card)) = present else {
            self.apply(topup_id, Event::Load(LoadOutcome::Refused(Refusal::CardGone)), ACTOR).await?;
            return Ok(());
        };
        let outcome = self.run_load(&stored, terminal_id, &card).await?;
        let Some(outcome) = outcome else { return Ok(()) };
        self.apply(topup_id, Event::Load(outcome), ACTOR).await?;
        Ok(())
    }

    /// The load itself; `None` when the step before CREDIT FOR LOAD could not be recorded (then
    /// nothing was sent and the card's session dies with this function).
    async fn run_load(&self, stored: &StoredTopUp, terminal_id: &str, card: &PresentCard) -> Result<Option<LoadOutcome>, CardSideError> {
        let topup = &stored.topup;
        let (date, time) = bcd_date_time(self.0.clock.now_ms(), self.0.time_zone);
        let request = LoadRequest {
            key_index: self.0.key_index,
            amount: topup.card_amount(),
            terminal_id: purse_terminal_id(terminal_id),
            date,
            time,
            card: Some(topup.card),
        };
        let Ok((mut session, mut batch)) = LoadSession::start(request) else {
            // Only a zero amount is refused, and a top-up's amount is never zero.
            return Ok(Some(LoadOutcome::Refused(Refusal::Malformed("a load of zero".into()))));
        };
        loop {
            let responses = match crate::reader::transmit(&self.0.router, terminal_id, card, &batch).await {
                Ok(r) => r,
                Err(failure) => {
                    tracing::info!(terminal_id, topup = topup.id.as_str(), ?failure, "card load interrupted");
                    return Ok(Some(session.interrupted()));
                }
            };
            match session.advance(&responses, self.0.keys.purse()) {
                Ok(LoadNext::Send(next)) => {
                    if let Some(pending) = session.pending() {
                        // CREDIT FOR LOAD is next: what resolves it is recorded first.
                        match self.apply(topup.id.as_str(), Event::CreditReady(pending.clone()), ACTOR).await {
                            Ok(_) => {}
                            Err(RecordError::Stale) => return Ok(None),
                            Err(e) => return Err(e.into()),
                        }
                    }
                    batch = next;
                }
                Ok(LoadNext::Done(outcome)) => return Ok(Some(outcome)),
                Err(_) => return Ok(Some(session.interrupted())),
            }
        }
    }

    /// Resolve a `write_unknown` top-up with the card on `terminal_id`'s reader (GET TRANSACTION
    /// PROVE and the authenticated online serial, in one batch).
    pub async fn recover(&self, topup_id: &str, terminal_id: &str, card: &PresentCard) -> Result<(), CardSideError> {
        let stored = self.0.store.topup(topup_id).await.map_err(RecordError::from)?;
        let State::WriteUnknown { pending } = &stored.topup.state else { return Ok(()) };
        let (session, batch) = RecoverySession::start(pending.clone(), self.0.key_index);
        let event = match crate::reader::transmit(&self.0.router, terminal_id, card, &batch).await {
            Ok(responses) => match session.finish(&responses, self.0.keys.purse()) {
                Ok(resolution) => Event::Recovery(resolution),
                Err(e) => {
                    tracing::warn!(topup = topup_id, error = %e, "recovery answers unusable");
                    Event::RecoveryFailed
                }
            },
            Err(failure) => {
                tracing::info!(topup = topup_id, ?failure, "recovery interrupted");
                Event::RecoveryFailed
            }
        };
        self.apply(topup_id, event, ACTOR).await?;
        Ok(())
    }

    /// The card of an unfinished top-up is on `terminal_id`'s reader (any top-up terminal):
    /// finish what the card can finish — recover a torn write, write a load that waits for the
    /// card. Returns the top-up, if the card has an open one.
    pub async fn finish_on_tap(&self, card_serial: &CardSerial, terminal_id: &str, card: &PresentCard) -> Result<Option<String>, CardSideError> {
        let Some(open) = self.0.store.open_topup_of_card(card_serial).await.map_err(RecordError::from)? else {
            return Ok(None);
        };
        let id = open.topup.id.as_str().to_string();
        match open.topup.state {
            State::WriteUnknown { .. } => self.recover(&id, terminal_id, card).await?,
            State::WritePending => {
                self.apply(&id, Event::CardTapped, ACTOR).await?;
            }
            _ => {}
        }
        // A recovery that proved nothing was written, and a tap on a waiting top-up, leave it
        // `debit_confirmed`: the card is here, write it.
        self.write_card(&id, Some(terminal_id)).await?;
        Ok(Some(id))
    }

    /// A balance read of the card on the reader (the new balance, read back after a load).
    pub async fn read_balance(&self, terminal_id: &str, card: &PresentCard) -> Option<u32> {
        let responses = crate::reader::transmit(&self.0.router, terminal_id, card, &purse::balance_batch()).await.ok()?;
        purse::balance_from(&responses).ok().map(|s| s.balance)
    }

    /// One batch on the card on `terminal_id`'s reader (transport; the caller admitted it).
    pub async fn transmit(&self, terminal_id: &str, card: &PresentCard, batch: &Batch) -> Result<Vec<Vec<Vec<u8>>>, protocol::page::ReadFailure> {
        crate::reader::transmit(&self.0.router, terminal_id, card, batch).await
    }

    fn claim(&self, topup_id: &str) -> Option<WriteClaim<'_>> {
        let fresh = self.0.writing.lock().unwrap_or_else(|p| p.into_inner()).insert(topup_id.to_string());
        fresh.then(|| WriteClaim { service: self, topup_id: topup_id.to_string() })
    }

    /// Card side of the worker's pass: top-ups left `debit_confirmed` or `write_sent` by a
    /// process that is gone (no step for `stale_ms`): a write never started is a load that did
    /// not happen (the card is asked for again); a write in flight is resumed as unknown.
    pub async fn sweep_stale_writes(&self, stale_ms: i64) -> Result<usize, RecordError> {
        let now = self.now();
        let mut steps = 0;
        for stored in self.0.store.open_topups_in(&["debit_confirmed", "write_sent"], 100).await? {
            let id = stored.topup.id.as_str().to_string();
            if stored.topup.updated_at.plus_ms(stale_ms) > now || self.0.writing.lock().unwrap_or_else(|p| p.into_inner()).contains(&id) {
                continue;
            }
            let event = match stored.topup.state {
                State::DebitConfirmed => Event::Load(LoadOutcome::Refused(Refusal::CardGone)),
                _ => Event::Resume,
            };
            match self.apply(&id, event, ACTOR).await {
                Ok(_) => steps += 1,
                Err(RecordError::Stale) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(steps)
    }
}

/// The 6-byte terminal number the purse records for a load (part of MAC1, MAC2 and the TAC): the
/// first six bytes of SHA-256 over the terminal id, so that each terminal has its own.
pub fn purse_terminal_id(terminal_id: &str) -> [u8; 6] {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(terminal_id.as_bytes());
    let mut out = [0u8; 6];
    out.copy_from_slice(&digest[..6]);
    out
}

/// Date `YYYYMMDD` and time `HHMMSS` in BCD at `ms` (Unix milliseconds), local time in `zone`.
pub fn bcd_date_time(ms: i64, zone: chrono_tz::Tz) -> ([u8; 4], [u8; 3]) {
    use chrono::{Datelike, TimeZone, Timelike};
    let local = zone.timestamp_millis_opt(ms).single().unwrap_or_else(|| zone.timestamp_millis_opt(0).unwrap());
    let bcd = |v: u32| -> u8 {
        let v = (v % 100) as u8;
        (v / 10) << 4 | (v % 10)
    };
    let year = u32::try_from(local.year()).unwrap_or(0);
    (
        [bcd(year / 100), bcd(year), bcd(local.month()), bcd(local.day())],
        [bcd(local.hour()), bcd(local.minute()), bcd(local.second())],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_date_and_time_are_bcd_in_the_zone() {
        // 2026-12-06 16:05:09 UTC is 2026-12-07 00:05:09 in Asia/Shanghai (UTC+8).
        let ms = 1_796_573_109_000;
        assert_eq!(bcd_date_time(ms, chrono_tz::UTC), ([0x20, 0x26, 0x12, 0x06], [0x16, 0x05, 0x09]));
        assert_eq!(bcd_date_time(ms, chrono_tz::Asia::Shanghai), ([0x20, 0x26, 0x12, 0x07], [0x00, 0x05, 0x09]));
        assert_eq!(bcd_date_time(0, chrono_tz::UTC), ([0x19, 0x70, 0x01, 0x01], [0, 0, 0]));
        // A leap day.
        assert_eq!(bcd_date_time(1_709_164_800_000, chrono_tz::UTC).0, [0x20, 0x24, 0x02, 0x29]);
    }

    #[test]
    fn each_terminal_has_its_own_purse_terminal_number() {
        assert_ne!(purse_terminal_id("t_a"), purse_terminal_id("t_b"));
        assert_eq!(purse_terminal_id("t_a"), purse_terminal_id("t_a"));
    }
}
