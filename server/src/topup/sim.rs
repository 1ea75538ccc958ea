//! Seeded fault injection: top-ups driven through `step` against a simulated bank and real purse sessions on simulated cards, with crashes
//!
//! The bank is idempotent by key and answers with injected faults (completed, declined, timeout
//! before or after commit, 5xx, pending then completed; status queries that fail). The cards
//! are `card::sim::purse::PurseCard`s driven by the real `LoadSession` and `RecoverySession`,
//! with tears before and after the commit, cards pulled before CREDIT FOR LOAD, recoveries
//! interrupted and loads at foreign terminals (which make a recovery undetermined). A crash
//! drops the effects in flight and the open card session and resumes from the last recorded
//! state. A person resolves exceptions from the ground truth (the bank statement, the card).
//!
//! Seeds: `CARDBRIDGE_TOPUP_SEED=N` runs that seed only; `CARDBRIDGE_TOPUP_COUNT` top-ups per
//! seed (default 1000).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;

use card::batch::{self, Batch};
use card::purse::{self, InitForLoad, LoadNext, LoadRequest, LoadSession, MasterKeys};
use card::sim::issuer::{test_purse_keys, TEST_PURSE_KEY_INDEX};
use card::sim::purse::{PurseCard, PurseState, Tear};
use card::sim::SimCard;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const KIOSK: [u8; 6] = [0x00, 0x00, 0x00, 0x00, 0x08, 0x01];
const FOREIGN_TERMINAL: [u8; 6] = [0x00, 0x00, 0x00, 0x00, 0x09, 0x09];
const CARDS: usize = 24;
const AMOUNTS: [Fen; 4] = [1_000, 2_000, 5_000, 10_000];
const MAX_CRASHES: u32 = 4;
const MAX_OPERATOR: u32 = 5;
const MAX_STEPS: usize = 400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum BankFault {
    Completed,
    Declined,
    TimeoutBeforeCommit,
    TimeoutAfterCommit,
    ServerError,
    PendingThenCompleted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum CardFault {
    None,
    GoneBeforeInit,
    GoneBeforeCredit,
    TearBeforeCommit,
    TearAfterCommit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Record {
    Committed,
    Declined,
    Pending { polls_left: u32 },
}

#[derive(Debug, Default)]
struct Book {
    entries: HashMap<String, (Fen, Record)>,
    /// Commits per key (the bank's own count; a second is a double debit).
    commits: HashMap<String, u32>,
}

impl Book {
    fn commit(&mut self, key: &str) {
        if let Some((_, record)) = self.entries.get_mut(key) {
            *record = Record::Committed;
        }
        *self.commits.entry(key.to_string()).or_insert(0) += 1;
    }

    fn request(&mut self, key: &str, amount: Fen, fault: BankFault, rng: &mut StdRng) -> BankReply {
        if let Some((_, record)) = self.entries.get(key) {
            // Idempotent: the first request's result; only the reply can still be lost.
            return match fault {
                BankFault::TimeoutBeforeCommit
                | BankFault::TimeoutAfterCommit
                | BankFault::ServerError => BankReply::Unknown,
                _ => match record {
                    Record::Committed => BankReply::Completed,
                    Record::Declined => BankReply::Declined,
                    Record::Pending { .. } => BankReply::Pending,
                },
            };
        }
        match fault {
            BankFault::Completed => {
                self.entries.insert(key.into(), (amount, Record::Committed));
                self.commit(key);
                BankReply::Completed
            }
            BankFault::Declined => {
                self.entries.insert(key.into(), (amount, Record::Declined));
                BankReply::Declined
            }
            BankFault::TimeoutBeforeCommit | BankFault::ServerError => BankReply::Unknown,
            BankFault::TimeoutAfterCommit => {
                self.entries.insert(key.into(), (amount, Record::Committed));
                self.commit(key);
                BankReply::Unknown
            }
            BankFault::PendingThenCompleted => {
                let polls_left = rng.gen_range(1..=3);
                self.entries
                    .insert(key.into(), (amount, Record::Pending { polls_left }));
                BankReply::Pending
            }
        }
    }

    fn query(&mut self, key: &str, fails: bool) -> StatusReply {
        if fails {
            return StatusReply::Unknown;
        }
        let Some((_, record)) = self.entries.get_mut(key) else {
            return StatusReply::NotFound;
        };
        match *record {
            Record::Committed => StatusReply::Completed,
            Record::Declined => StatusReply::Declined,
            Record::Pending { polls_left } if polls_left <= 1 => {
                self.commit(key);
                StatusReply::Completed
            }
            Record::Pending { polls_left } => {
                *record = Record::Pending {
                    polls_left: polls_left - 1,
                };
                StatusReply::Pending
            }
        }
    }

    /// The daily statement: pending entries settle; whether `key` is debited.
    fn statement_shows(&mut self, key: &str) -> bool {
        if let Some((_, Record::Pending { .. })) = self.entries.get(key) {
            self.commit(key);
        }
        matches!(self.entries.get(key), Some((_, Record::Committed)))
    }

    fn committed_total(&self) -> Fen {
        self.entries
            .values()
            .filter(|(_, r)| *r == Record::Committed)
            .map(|(amount, _)| amount)
            .sum()
    }

    fn committed(&self, key: &str) -> bool {
        matches!(self.entries.get(key), Some((_, Record::Committed)))
    }
}

struct SimCardSlot {
    card: PurseCard,
    initial: Fen,
    /// Loaded at foreign terminals (not ours, not in our ledger).
    foreign: Fen,
}

impl SimCardSlot {
    fn balance(&self) -> Fen {
        let state = self.card.state();
        let balance = state.lock().map(|s| s.balance).unwrap_or(0);
        Fen::from(balance)
    }
}

/// A load session between `CreditReady` and `SendCredit` (volatile: a crash loses it).
struct InFlight {
    session: LoadSession,
    credit: Batch,
    fault: CardFault,
}

#[derive(Debug, Default)]
pub(super) struct Figures {
    pub topups: usize,
    pub bank_faults: BTreeMap<String, usize>,
    pub refund_faults: BTreeMap<String, usize>,
    pub card_faults: BTreeMap<String, usize>,
    pub failed_queries: usize,
    pub resolutions: BTreeMap<&'static str, usize>,
    pub recovery_interrupted: usize,
    pub foreign_loads: usize,
    pub crashes: usize,
    /// Entries into `Exception`, by reason.
    pub exceptions: BTreeMap<&'static str, usize>,
    /// Alarm effects run (an exception's alarm is raised again after a restart).
    pub alarms: usize,
    pub operator_decisions: usize,
    pub final_states: BTreeMap<&'static str, usize>,
    pub steps: usize,
}

struct World {
    rng: StdRng,
    policy: Policy,
    keys: MasterKeys,
    bank_debits: Book,
    bank_refunds: Book,
    cards: Vec<SimCardSlot>,
    now: Timestamp,
    ledger: Ledger,
    /// Ground truth: committed CREDIT FOR LOADs per top-up id.
    credits: HashMap<String, u32>,
    /// Debit keys each top-up sent.
    debit_keys: HashMap<String, Vec<String>>,
    inflight: Option<InFlight>,
    figures: Figures,
}

fn pick<T: Copy>(rng: &mut StdRng, weighted: &[(u32, T)]) -> T {
    let total: u32 = weighted.iter().map(|(w, _)| w).sum();
    let mut roll = rng.gen_range(0..total);
    for (weight, value) in weighted {
        if roll < *weight {
            return *value;
        }
        roll -= weight;
    }
    weighted[weighted.len() - 1].1
}

fn bcd(n: u32) -> u8 {
    u8::try_from(((n / 10) % 10) << 4 | (n % 10)).unwrap_or(0)
}

impl World {
    fn new(seed: u64) -> World {
        let mut rng = StdRng::seed_from_u64(seed);
        let cards = (0..CARDS)
            .map(|i| {
                let serial = [0x20, 0x26, 0x77, 0x00, 0x00, 0x00, 0x01, i as u8];
                let initial = rng.gen_range(0..5_000u32);
                let card = PurseCard::issue("sim-purse", serial, PurseState::with_balance(initial));
                // Card 0 keeps the default ceiling: it fills up and refuses (refunds follow).
                let card = if i == 0 {
                    card
                } else {
                    card.with_ceiling(u32::MAX / 2)
                };
                SimCardSlot {
                    card,
                    initial: Fen::from(initial),
                    foreign: 0,
                }
            })
            .collect();
        World {
            rng,
            policy: Policy::default(),
            keys: test_purse_keys(),
            bank_debits: Book::default(),
            bank_refunds: Book::default(),
            cards,
            now: Timestamp(1_796_000_000_000),
            ledger: Ledger::new(),
            credits: HashMap::new(),
            debit_keys: HashMap::new(),
            inflight: None,
            figures: Figures::default(),
        }
    }

    fn tick(&mut self) {
        let ms = self.rng.gen_range(50..2_000);
        self.now = self.now.plus_ms(ms);
    }

    fn bank_fault(&mut self, refund: bool) -> BankFault {
        let fault = if refund {
            pick(
                &mut self.rng,
                &[
                    (70, BankFault::Completed),
                    (8, BankFault::TimeoutBeforeCommit),
                    (8, BankFault::TimeoutAfterCommit),
                    (7, BankFault::ServerError),
                    (7, BankFault::PendingThenCompleted),
                ],
            )
        } else {
            pick(
                &mut self.rng,
                &[
                    (60, BankFault::Completed),
                    (8, BankFault::Declined),
                    (8, BankFault::TimeoutBeforeCommit),
                    (8, BankFault::TimeoutAfterCommit),
                    (8, BankFault::ServerError),
                    (8, BankFault::PendingThenCompleted),
                ],
            )
        };
        let book = if refund {
            &mut self.figures.refund_faults
        } else {
            &mut self.figures.bank_faults
        };
        *book.entry(format!("{fault:?}")).or_insert(0) += 1;
        fault
    }

    fn query_fails(&mut self) -> bool {
        let fails = self.rng.gen_bool(0.1);
        self.figures.failed_queries += usize::from(fails);
        fails
    }

    fn card_index(&self, serial: &CardSerial) -> usize {
        self.cards
            .iter()
            .position(|c| c.card.serial() == *serial)
            .unwrap_or(0)
    }

    fn request(&self, topup: &TopUp) -> LoadRequest {
        let secs = u32::try_from((self.now.0 / 1000).rem_euclid(86_400)).unwrap_or(0);
        LoadRequest {
            key_index: TEST_PURSE_KEY_INDEX,
            amount: topup.card_amount(),
            terminal_id: KIOSK,
            date: [0x20, 0x26, 0x12, 0x03],
            time: [bcd(secs / 3600), bcd(secs / 60 % 60), bcd(secs % 60)],
            card: Some(topup.card),
        }
    }

    /// Run an effect against the world; the event it produces, if any.
    fn run(&mut self, topup: &TopUp, effect: Effect) -> Result<Option<Event>, String> {
        Ok(match effect {
            Effect::SendDebit { key, amount } => {
                self.debit_keys
                    .entry(topup.id.as_str().to_string())
                    .or_default()
                    .push(key.as_str().to_string());
                let fault = self.bank_fault(false);
                Some(Event::DebitReply(self.bank_debits.request(
                    key.as_str(),
                    amount,
                    fault,
                    &mut self.rng,
                )))
            }
            Effect::QueryDebit { key } => {
                let fails = self.query_fails();
                Some(Event::DebitStatus(
                    self.bank_debits.query(key.as_str(), fails),
                ))
            }
            Effect::SendRefund { key, amount } => {
                if !self.bank_debits.committed(topup.id.as_str()) {
                    return Err(format!(
                        "{}: refund of a debit the bank never committed",
                        topup.id.as_str()
                    ));
                }
                let fault = self.bank_fault(true);
                Some(Event::RefundReply(self.bank_refunds.request(
                    key.as_str(),
                    amount,
                    fault,
                    &mut self.rng,
                )))
            }
            Effect::QueryRefund { key } => {
                let fails = self.query_fails();
                Some(Event::RefundStatus(
                    self.bank_refunds.query(key.as_str(), fails),
                ))
            }
            Effect::WriteCard { card, amount } => {
                if card != topup.card || Fen::from(amount) != topup.amount {
                    return Err("WriteCard for another card or amount".into());
                }
                Some(self.start_load(topup)?)
            }
            Effect::SendCredit => Some(self.send_credit(topup)?),
            Effect::Recover { pending } => Some(self.recover(topup, pending)),
            Effect::Notify(_) => None,
            Effect::Alarm(_) => {
                self.figures.alarms += 1;
                None
            }
        })
    }

    fn start_load(&mut self, topup: &TopUp) -> Result<Event, String> {
        let fault = pick(
            &mut self.rng,
            &[
                (70, CardFault::None),
                (6, CardFault::GoneBeforeInit),
                (6, CardFault::GoneBeforeCredit),
                (9, CardFault::TearBeforeCommit),
                (9, CardFault::TearAfterCommit),
            ],
        );
        *self
            .figures
            .card_faults
            .entry(format!("{fault:?}"))
            .or_insert(0) += 1;
        let request = self.request(topup);
        let index = self.card_index(&topup.card);
        let card = &mut self.cards[index].card;
        card.reset();
        let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, Infallible> { Ok(card.transmit(apdu)) };
        let (mut session, first) =
            LoadSession::start(request.clone()).map_err(|e| e.to_string())?;
        let snapshot = batch::execute(&first, &mut transmit).map_err(|e| e.to_string())?;
        if fault == CardFault::GoneBeforeInit {
            return Ok(Event::Load(session.interrupted()));
        }
        let init_batch = match session
            .advance(&snapshot, &self.keys)
            .map_err(|e| e.to_string())?
        {
            LoadNext::Send(batch) => batch,
            LoadNext::Done(outcome) => return Ok(Event::Load(outcome)),
        };
        let init = batch::execute(&init_batch, &mut transmit).map_err(|e| e.to_string())?;
        if fault == CardFault::GoneBeforeCredit {
            return Ok(Event::Load(session.interrupted()));
        }
        let credit = match session
            .advance(&init, &self.keys)
            .map_err(|e| e.to_string())?
        {
            LoadNext::Send(batch) => batch,
            LoadNext::Done(outcome) => return Ok(Event::Load(outcome)),
        };
        let pending = pending_of(&request, topup.card, &init, &credit)?;
        self.inflight = Some(InFlight {
            session,
            credit,
            fault,
        });
        Ok(Event::CreditReady(pending))
    }

    fn send_credit(&mut self, topup: &TopUp) -> Result<Event, String> {
        let InFlight {
            mut session,
            credit,
            fault,
        } = self
            .inflight
            .take()
            .ok_or("SendCredit without a prepared load")?;
        let index = self.card_index(&topup.card);
        let before = self.cards[index].balance();
        let card = &mut self.cards[index].card;
        match fault {
            CardFault::TearBeforeCommit => card.tear_next_credit(Tear::BeforeCommit),
            CardFault::TearAfterCommit => card.tear_next_credit(Tear::AfterCommit),
            _ => {}
        }
        let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, Infallible> { Ok(card.transmit(apdu)) };
        let outcome = match batch::execute(&credit, &mut transmit) {
            Ok(responses) => match session
                .advance(&responses, &self.keys)
                .map_err(|e| e.to_string())?
            {
                LoadNext::Done(outcome) => outcome,
                LoadNext::Send(_) => return Err("a load went on after CREDIT FOR LOAD".into()),
            },
            Err(_) => session.interrupted(),
        };
        let after = self.cards[index].balance();
        if after != before {
            if after - before != topup.amount {
                return Err(format!(
                    "card moved by {} for a load of {}",
                    after - before,
                    topup.amount
                ));
            }
            *self
                .credits
                .entry(topup.id.as_str().to_string())
                .or_insert(0) += 1;
        }
        Ok(Event::Load(outcome))
    }

    fn recover(&mut self, topup: &TopUp, pending: PendingLoad) -> Event {
        let index = self.card_index(&topup.card);
        // The card's next tap; sometimes it was loaded elsewhere in between.
        if self.rng.gen_bool(0.03) {
            self.foreign_load(index);
        }
        let interrupt_after = self
            .rng
            .gen_bool(0.08)
            .then(|| self.rng.gen_range(0..14usize));
        let card = &mut self.cards[index].card;
        card.reset();
        let mut sent = 0usize;
        let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, &'static str> {
            sent += 1;
            match interrupt_after {
                Some(n) if sent > n => Err("card pulled"),
                _ => Ok(card.transmit(apdu)),
            }
        };
        match purse::recover(&mut transmit, &self.keys, pending, TEST_PURSE_KEY_INDEX) {
            Ok(resolution) => {
                let kind = match resolution {
                    Resolution::Committed { .. } => "committed",
                    Resolution::NotCommitted { .. } => "not_committed",
                    Resolution::Undetermined { .. } => "undetermined",
                };
                *self.figures.resolutions.entry(kind).or_insert(0) += 1;
                Event::Recovery(resolution)
            }
            Err(_) => {
                self.figures.recovery_interrupted += 1;
                Event::RecoveryFailed
            }
        }
    }

    fn foreign_load(&mut self, index: usize) {
        let slot = &mut self.cards[index];
        slot.card.reset();
        let card = &mut slot.card;
        let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, Infallible> { Ok(card.transmit(apdu)) };
        let request = LoadRequest {
            key_index: TEST_PURSE_KEY_INDEX,
            amount: 100,
            terminal_id: FOREIGN_TERMINAL,
            date: [0x20, 0x26, 0x12, 0x02],
            time: [0x09, 0x00, 0x00],
            card: None,
        };
        if let Ok(purse::LoadOutcome::Completed { .. }) =
            purse::run_load(&mut transmit, &self.keys, request)
        {
            slot.foreign += 100;
            self.figures.foreign_loads += 1;
        }
    }

    /// A person looks at the bank statement and the card and decides.
    fn operator(&mut self, topup: &TopUp) -> Decision {
        self.figures.operator_decisions += 1;
        let id = topup.id.as_str();
        match topup.debited {
            false if self.bank_debits.statement_shows(id) => Decision::Debited,
            false => Decision::NotDebited,
            true if self.credits.get(id).copied().unwrap_or(0) > 0 => Decision::Credited,
            true => Decision::NotCredited,
        }
    }

    fn apply(
        &mut self,
        topup: &mut TopUp,
        event: Event,
        queue: &mut VecDeque<Effect>,
    ) -> Result<(), String> {
        let label = format!("{} in {}", event.name(), topup.state.name());
        let t = step(topup, event, self.now, &self.policy).map_err(|e| format!("{label}: {e}"))?;
        self.ledger
            .post(t.next.card, &t.postings)
            .map_err(|e| format!("{label}: {e}"))?;
        if let (State::Exception { reason }, false) = (
            &t.next.state,
            matches!(topup.state, State::Exception { .. }),
        ) {
            *self.figures.exceptions.entry(reason.code()).or_insert(0) += 1;
        }
        *topup = t.next;
        queue.extend(t.effects);
        self.figures.steps += 1;
        Ok(())
    }

    fn crash(&mut self, topup: &mut TopUp, queue: &mut VecDeque<Effect>) -> Result<(), String> {
        self.figures.crashes += 1;
        queue.clear();
        self.inflight = None;
        let index = self.card_index(&topup.card);
        self.cards[index].card.reset();
        self.tick();
        self.apply(topup, Event::Resume, queue)
    }

    /// One top-up from creation to a terminal state (or an exception a person could not close).
    fn run_topup(&mut self, n: usize) -> Result<TopUp, String> {
        let card = self.cards[self.rng.gen_range(0..CARDS)].card.serial();
        let amount = AMOUNTS[self.rng.gen_range(0..AMOUNTS.len())];
        let id = TopUpId::new(format!("t{n:05}"));
        let mut topup = TopUp::new(id, card, amount, self.now).map_err(|e| e.to_string())?;
        let mut queue = VecDeque::new();
        let mut crashes = 0;
        let mut operator = 0;
        self.apply(&mut topup, Event::Start, &mut queue)?;
        for _ in 0..MAX_STEPS {
            if topup.state.is_terminal() {
                return Ok(topup);
            }
            self.tick();
            if let Some(effect) = queue.pop_front() {
                let crash_allowed = crashes < MAX_CRASHES;
                if crash_allowed && self.rng.gen_bool(0.02) {
                    crashes += 1;
                    self.crash(&mut topup, &mut queue)?;
                    continue;
                }
                let event = self.run(&topup, effect)?;
                if crash_allowed && self.rng.gen_bool(0.02) {
                    // The effect happened; its answer is lost with the process.
                    crashes += 1;
                    self.crash(&mut topup, &mut queue)?;
                    continue;
                }
                if let Some(event) = event {
                    self.apply(&mut topup, event, &mut queue)?;
                }
                continue;
            }
            if let State::Exception { .. } = topup.state {
                if operator >= MAX_OPERATOR {
                    return Ok(topup);
                }
                operator += 1;
                let decision = self.operator(&topup);
                self.apply(&mut topup, Event::Operator(decision), &mut queue)?;
                continue;
            }
            if topup.state == State::WritePending && self.rng.gen_bool(0.7) {
                self.apply(&mut topup, Event::CardTapped, &mut queue)?;
                continue;
            }
            match topup.due(&self.policy) {
                Some((at, event)) => {
                    self.now = self.now.max(at);
                    self.apply(&mut topup, event, &mut queue)?;
                }
                None => {
                    return Err(format!(
                        "{} stuck in {} with nothing to do",
                        topup.id.as_str(),
                        topup.state.name()
                    ))
                }
            }
        }
        Err(format!(
            "{} did not finish in {MAX_STEPS} steps (state {})",
            topup.id.as_str(),
            topup.state.name()
        ))
    }
}

/// What the recorded `WriteSent` needs, from the INITIALIZE FOR LOAD answer and the prepared
/// CREDIT FOR LOAD (`80 52 00 00 0B date(4) time(3) MAC2(4) 04`).
fn pending_of(
    request: &LoadRequest,
    card: CardSerial,
    init: &[Vec<Vec<u8>>],
    credit: &Batch,
) -> Result<PendingLoad, String> {
    let raw = init
        .first()
        .and_then(|g| g.first())
        .ok_or("no INITIALIZE FOR LOAD answer")?;
    let data = raw.get(..raw.len().saturating_sub(2)).unwrap_or(&[]);
    let init = InitForLoad::parse(data).map_err(|e| e.to_string())?;
    let apdu = credit
        .groups
        .first()
        .and_then(|g| g.apdus.first())
        .ok_or("no CREDIT FOR LOAD")?;
    let mac2: [u8; 4] = apdu
        .get(12..16)
        .and_then(|m| m.try_into().ok())
        .ok_or("CREDIT FOR LOAD too short")?;
    Ok(PendingLoad {
        card_serial: card,
        online_serial: init.online_serial,
        old_balance: init.old_balance,
        amount: request.amount,
        terminal_id: request.terminal_id,
        date: request.date,
        time: request.time,
        mac2,
    })
}

/// Run `count` top-ups under `seed` and check the books; the figures, or what broke.
pub(super) fn run(seed: u64, count: usize) -> Result<Figures, String> {
    let mut world = World::new(seed);
    let mut topups = Vec::with_capacity(count);
    for n in 0..count {
        topups.push(world.run_topup(n)?);
    }
    world.figures.topups = count;
    check(&world, &topups)?;
    for topup in &topups {
        *world
            .figures
            .final_states
            .entry(topup.state.name())
            .or_insert(0) += 1;
    }
    Ok(world.figures)
}

fn check(world: &World, topups: &[TopUp]) -> Result<(), String> {
    let ledger = &world.ledger;
    let bank_debits = world.bank_debits.committed_total();
    let bank_refunds = world.bank_refunds.committed_total();
    let card_credits: Fen = world
        .cards
        .iter()
        .map(|c| c.balance() - c.initial - c.foreign)
        .sum();
    let mut pending: Fen = 0;
    for t in topups {
        let id = t.id.as_str();
        match &t.state {
            State::Completed | State::Failed { .. } | State::Refunded => {}
            // Allowed: the reason is part of the state; counted as pending when debited.
            State::Exception { .. } => {}
            other => return Err(format!("{id} ended in {}", other.name())),
        }
        let credits = world.credits.get(id).copied().unwrap_or(0);
        if credits > 1 {
            return Err(format!("{id} credited {credits} times"));
        }
        if (credits == 1) != t.credited || (t.state == State::Completed) != t.credited {
            return Err(format!(
                "{id}: card credits {credits}, ledger credited {}, state {}",
                t.credited,
                t.state.name()
            ));
        }
        let keys = world.debit_keys.get(id).cloned().unwrap_or_default();
        if keys.iter().any(|k| k != id) {
            return Err(format!("{id} sent a debit under another key"));
        }
        if world.bank_debits.commits.get(id).copied().unwrap_or(0) > 1 {
            return Err(format!("{id} debited twice"));
        }
        if world.bank_refunds.commits.values().any(|n| *n > 1) {
            return Err("a refund committed twice".into());
        }
        let bank_debited = world.bank_debits.committed(id);
        if bank_debited != t.debited && !matches!(t.state, State::Exception { .. }) {
            return Err(format!(
                "{id}: bank debited {bank_debited}, ledger {}",
                t.debited
            ));
        }
        let refunded = world.bank_refunds.committed(t.id.refund_key().as_str());
        if refunded != (t.state == State::Refunded) {
            return Err(format!(
                "{id}: bank refunded {refunded} in state {}",
                t.state.name()
            ));
        }
        if t.debited && !t.credited && !refunded {
            pending += t.amount;
        }
    }
    if bank_debits != card_credits + pending + bank_refunds {
        return Err(format!(
            "bank debits {bank_debits} ≠ card credits {card_credits} + pending {pending} + refunds {bank_refunds}"
        ));
    }
    let expect = [
        (Account::BankReceivable, bank_debits),
        (Account::CardFloat, card_credits),
        (Account::PendingLoads, pending),
        (Account::Refunds, bank_refunds),
    ];
    for (account, want) in expect {
        if ledger.balance(account) != want {
            return Err(format!(
                "{} is {} in the ledger, {want} in the world",
                account.name(),
                ledger.balance(account)
            ));
        }
    }
    if !ledger.reconciles() {
        return Err("the ledger does not reconcile".into());
    }
    for slot in &world.cards {
        let on_card = slot.balance() - slot.initial - slot.foreign;
        if ledger.card_float(&slot.card.serial()) != on_card {
            return Err(format!(
                "card {:?}: {on_card} loaded by us, {} in the ledger",
                slot.card.serial(),
                ledger.card_float(&slot.card.serial())
            ));
        }
    }
    Ok(())
}

fn seeds() -> Vec<u64> {
    match std::env::var("CARDBRIDGE_TOPUP_SEED") {
        Ok(seed) => vec![seed.trim().parse().unwrap_or(0)],
        Err(_) => vec![1, 2, 3, 0xC0FFEE],
    }
}

fn count() -> usize {
    std::env::var("CARDBRIDGE_TOPUP_COUNT")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(1_000)
}

#[test]
fn seeded_fault_injection_conserves_money_and_resolves_every_unknown() {
    // Arrange
    let seeds = seeds();
    let count = count();
    for seed in seeds {
        eprintln!("top-up fault suite: seed {seed} (replay with CARDBRIDGE_TOPUP_SEED={seed})");

        // Act
        let result = run(seed, count);

        // Assert
        let figures = result.unwrap_or_else(|e| {
            panic!("seed {seed}: {e}\nreplay with CARDBRIDGE_TOPUP_SEED={seed}")
        });
        println!("seed {seed}: {figures:#?}");
        let unknowns = figures
            .card_faults
            .get("TearBeforeCommit")
            .copied()
            .unwrap_or(0)
            + figures
                .card_faults
                .get("TearAfterCommit")
                .copied()
                .unwrap_or(0);
        assert!(
            count < 200 || unknowns > 0 && figures.crashes > 0 && !figures.resolutions.is_empty(),
            "seed {seed}: the faults were not exercised: {figures:#?}"
        );
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    // Arrange
    let seed = 42;

    // Act
    let first = run(seed, 200).expect("first run");
    let second = run(seed, 200).expect("second run");

    // Assert
    assert_eq!(format!("{first:?}"), format!("{second:?}"));
}
