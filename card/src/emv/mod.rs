//! The server-side card-number read: a state machine that emits APDU batches so a read costs at most 3 agent round trips, usually 2, and 1 for a card like the last one
//!
//! # Rounds
//!
//! 1. Directories, UID and a speculative selection: `[SELECT PPSE]`,
//!    `[SELECT PSE, READ RECORD SFI 1 records 1..=8]`, `[FF CA 00 00 00]`, each a `Sequence`
//!    group, then last `FirstSuccess [SELECT known AID…]` over [`KNOWN_AIDS`] in order. Last,
//!    because the selection in force after the batch is the last SELECT that succeeded.
//! 2. The candidates: PPSE entries, else PSE entries, sorted by priority (tag 87, lowest first,
//!    entries without priority after), then the known AIDs not listed; minus the known AIDs
//!    round 1 failed to select. Then:
//!    - no candidate left: the read ends with the UID (or no application) after round 1;
//!    - the first candidate left is the AID round 1 selected: its FCI is in hand and its
//!      selection in force, so round 3 below is sent as round 2;
//!    - otherwise `FirstSuccess [SELECT candidate…]`, as a read without the speculation would.
//!
//!    Either way the application read is the one a SELECT round over all candidates would pick
//!    (assuming a card answers a repeated SELECT as it did the first time). The speculative one
//!    is skipped when the directory's first choice is another application (a co-badged card
//!    whose priority 1 is not the earliest known AID) or an AID the known list does not hold
//!    exactly (Amex lists `A000000025010403`).
//! 3. `Sequence [GPO]` with the PDOL filled from [`Terminal`], plus speculative record reads for
//!    SFI 1 to 4: `Sequence [record 1]` and `Sequence [records 2..=8]` per SFI. Splitting off
//!    record 1 keeps files whose AFL range starts at record 2 (the Mastercard M/Chip test card)
//!    inside the budget at the cost of one failing READ RECORD per such file.
//!
//! The PAN is taken from tag 5A, else track 2 equivalent 57, else 9F6B, looking in the GPO
//! response and then in the records the AFL names, in AFL order.
//!
//! # Round-trip budget
//!
//! Usually 2 (the speculative selection is used), else 3 (a SELECT round); 1 for a card with no
//! payment application. The price is up to [`KNOWN_AIDS`]`.len()` SELECTs in round 1 that a
//! directory would have made unnecessary: a Visa card first fails the 4 UnionPay AIDs, a
//! Mastercard 7 AIDs; a SELECT round later leaves out the AIDs already seen to fail.
//!
//! Each of these adds one round:
//!
//! - The PSE FCI names a directory SFI other than 1 (tag 88) and the PPSE listed nothing: one
//!   extra round reads that directory. It selects the PSE again, so the speculative selection is
//!   lost and a SELECT round follows.
//! - The PAN is not in the GPO response nor in any AFL record read speculatively, and the AFL
//!   names records not yet read (an SFI above 4, a record above 8, or a range starting at record 3
//!   or later): one extra round reads exactly those records.
//!
//! Every card in the simulator catalogue reads in at most 3 (tested, with the exact count per
//! card). Records read speculatively but not named by the AFL are a last resort, used only after
//! the AFL records.
//!
//! # Predicted reads
//!
//! A card like the last one read on a terminal (same product: same answers but for the card's own
//! values) reads in 1, GENERATE AC included for a card of the same issuer that authenticated:
//! [`ReadSession::start_predicted`] appends the later rounds a [`Profile`] learned
//! ([`ReadSession::learned`]) to round 1 under byte conditions the agent checks, and
//! [`ReadSession::advance`] takes their answers only where the read's own next round is the
//! predicted one (see [`predict`]). Any other card skips them and reads as above: a prediction
//! never costs a round trip, nor changes what a read finds.

mod card_data;
pub mod cryptogram;
mod predict;
mod terminal;

use std::collections::BTreeMap;
use std::fmt;

use crate::apdu::{Apdu, ExchangeError, StatusWord, Transmit};
use crate::batch::{self, Batch, Group};
use crate::pan::{self, Pan};
use crate::tlv::{self, Tlv};

pub use card_data::{AflEntry, Candidate};
pub use cryptogram::AuthData;
pub use predict::{Profile, IIN_DIGITS};
pub use terminal::Terminal;

use card_data::{Fci, GpoData};
use cryptogram::ArqcRequest;
use predict::{LearnedAc, LearnedRound, Predicted, Shape};

/// The round-trip budget every catalogue card meets (most take 2).
pub const TARGET_ROUND_TRIPS: usize = 3;
/// Hard limit: the budget plus the two documented extra rounds.
pub const MAX_ROUND_TRIPS: usize = 5;

/// Round 1's group that asks for the UID: a card's UID is its own, so a prediction never depends
/// on it.
const UID_GROUP: usize = 2;
const PPSE: &[u8] = b"2PAY.SYS.DDF01";
const PSE: &[u8] = b"1PAY.SYS.DDF01";
/// Records read from a payment system directory file.
const DIRECTORY_RECORDS: u8 = 8;
/// Short files read speculatively alongside GPO.
const SPECULATIVE_SFIS: std::ops::RangeInclusive<u8> = 1..=4;
/// Records per short file read speculatively alongside GPO.
const SPECULATIVE_RECORDS: u8 = 8;
/// Most records a fourth round reads (a hostile AFL can name 30 × 255).
const MAX_EXTRA_RECORDS: usize = 64;

/// Applications selected speculatively in round 1, in this order (UnionPay first), and the
/// candidates after those a directory lists.
pub const KNOWN_AIDS: &[&str] = &[
    "A000000333010101",     // UnionPay debit
    "A000000333010102",     // UnionPay credit
    "A000000333010103",     // UnionPay quasi-credit
    "A000000333010106",     // UnionPay electronic cash
    "A0000000031010",       // Visa credit/debit
    "A0000000032010",       // Visa Electron
    "A0000000032020",       // V PAY
    "A0000000041010",       // Mastercard
    "A0000000043060",       // Maestro
    "A0000000042203",       // Mastercard US debit
    "A00000002501",         // American Express
    "A0000000651010",       // JCB
    "A0000001523010",       // Discover / Diners Club
    "A0000001524010",       // Discover common debit
    "A0000005241010",       // RuPay
    "A0000006581010",       // Mir
    "A0000002771010",       // Interac
    "A0000003591010028001", // girocard
];

/// What a card read found.
#[derive(Clone, PartialEq, Eq)]
pub enum CardIdentity {
    /// A payment card: its number, expiry (YYMM) if the card gives one, the application read.
    Bank {
        pan: Pan,
        expiry: Option<String>,
        aid: Vec<u8>,
        label: Option<String>,
        /// What a cryptogram check of this card needs (AIP, PAN sequence number, CDOL1).
        auth: AuthData,
    },
    /// A card with no payment application that answered the reader's UID command.
    Uid { uid: Vec<u8> },
}

/// The number and the UID are both identifiers: Debug masks them.
impl fmt::Debug for CardIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CardIdentity::Bank {
                pan,
                expiry,
                aid,
                label,
                auth,
            } => f
                .debug_struct("Bank")
                .field("pan", pan)
                .field("expiry", expiry)
                .field("aid", &hex::encode_upper(aid))
                .field("label", label)
                .field("auth", auth)
                .finish(),
            CardIdentity::Uid { uid } => f
                .debug_struct("Uid")
                .field("uid", &pan::mask(&hex::encode_upper(uid)))
                .finish(),
        }
    }
}

#[derive(Debug)]
pub enum Next {
    /// Run this batch on the card and pass the responses to [`ReadSession::advance`].
    Send(Batch),
    Done(CardIdentity),
}

/// Why a read gave no identity. Messages never contain card data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("card has no payment application this reader can select and no UID")]
    NoApplication,
    #[error("payment application gave no card number")]
    NoCardNumber,
    #[error("malformed card data: {0}")]
    Malformed(String),
    #[error("unexpected response: {0}")]
    UnexpectedResponse(String),
    #[error("card read needs more than {MAX_ROUND_TRIPS} round trips")]
    TooManyRoundTrips,
    #[error("the card's data objects carry different card numbers")]
    InconsistentNumber,
    /// The card gave something in the place of a card number that is not one (the reason
    /// says why; never the digits).
    #[error("the number on the card is not a card number: {0}")]
    InvalidNumber(crate::pan::PanError),
    #[error("the card's risk management data cannot be used for an online cryptogram")]
    NotAuthenticable,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadCardError<E> {
    #[error("card exchange failed: {0}")]
    Exchange(ExchangeError<E>),
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl<E> From<ExchangeError<E>> for ReadCardError<E> {
    fn from(e: ExchangeError<E>) -> Self {
        ReadCardError::Exchange(e)
    }
}

/// The application chosen (in round 1 or 2).
#[derive(Debug, Clone)]
struct App {
    aid: Vec<u8>,
    label: Option<String>,
}

/// What the session waits for. No Debug: records hold card numbers.
enum Stage {
    Directory,
    PseRecords {
        uid: Option<Vec<u8>>,
        /// Known AIDs round 1 failed to select.
        failed: Vec<Vec<u8>>,
    },
    Select {
        candidates: Vec<Candidate>,
        uid: Option<Vec<u8>>,
    },
    /// `layout[g]` names the (SFI, record) of each READ RECORD in group `g + 1`.
    Gpo {
        app: App,
        layout: Vec<Vec<(u8, u8)>>,
        /// The PDOL the GPO's data was built for.
        pdol: Vec<u8>,
    },
    Records {
        app: App,
        gpo: Option<GpoData>,
        gpo_sw: StatusWord,
        records: BTreeMap<(u8, u8), Vec<u8>>,
        layout: Vec<(u8, u8)>,
    },
    Over,
}

/// One round of the read as the read itself decided it, and the card's answers. No Debug: the
/// answers hold card numbers.
struct Round {
    batch: Batch,
    responses: Vec<Vec<Vec<u8>>>,
    gpo_pdol: Option<Vec<u8>>,
}

/// One card-number read. Start it with the card's ATR, run each batch it emits on the card
/// (`batch::execute`), feed the responses back with [`ReadSession::advance`].
pub struct ReadSession {
    stage: Stage,
    /// The batch whose responses are awaited, to check their shape (with any predicted rounds).
    sent: Batch,
    /// The round of the read at the head of `sent`, as the read decided it.
    current: Batch,
    round_trips: usize,
    terminal: Terminal,
    contactless: bool,
    atr: Vec<u8>,
    /// Rounds appended to `sent` after `current` ([`predict`]), in order.
    predicted: Vec<Predicted>,
    /// The GENERATE AC appended last to `sent`, if any.
    predicted_ac: Option<ArqcRequest>,
    /// The GENERATE AC a batch carried and the card's answer, once it ran.
    ac_answer: Option<(ArqcRequest, Vec<u8>)>,
    /// The rounds so far, for [`ReadSession::learned`].
    history: Vec<Round>,
    /// The CDOL1 of a finished bank read.
    cdol1: Option<Vec<u8>>,
    /// The read gave a bank card's identity.
    bank_read: bool,
}

impl ReadSession {
    pub fn start(atr: &[u8]) -> (ReadSession, Batch) {
        ReadSession::start_with(atr, Terminal::now())
    }

    /// Like [`ReadSession::start`] with given terminal data (fixed dates in tests).
    pub fn start_with(atr: &[u8], terminal: Terminal) -> (ReadSession, Batch) {
        let batch = round_1();
        let session = ReadSession {
            stage: Stage::Directory,
            sent: batch.clone(),
            current: batch.clone(),
            round_trips: 1,
            terminal,
            contactless: is_contactless_atr(atr),
            atr: atr.to_vec(),
            predicted: Vec::new(),
            predicted_ac: None,
            ac_answer: None,
            history: Vec::new(),
            cdol1: None,
            bank_read: false,
        };
        (session, batch)
    }

    /// Like [`ReadSession::start_with`], with the later rounds of a read like `profile`'s (the
    /// last read on the same terminal, see [`ReadSession::learned`]) appended to round 1 under
    /// conditions, and its GENERATE AC if it has one: a card of the same product (and, for
    /// GENERATE AC, the same issuer) is read in one round trip. A profile learned from a card
    /// with another ATR is not used.
    pub fn start_predicted(atr: &[u8], terminal: Terminal, profile: Option<&Profile>) -> (ReadSession, Batch) {
        let (mut session, batch) = ReadSession::start_with(atr, terminal);
        let Some(profile) = profile.filter(|p| p.atr == atr) else { return (session, batch) };
        let Some((full, predicted, ac)) = predict::extend(&batch, profile, &session.terminal) else {
            return (session, batch);
        };
        session.sent = full.clone();
        session.predicted = predicted;
        session.predicted_ac = ac;
        (session, full)
    }

    /// After a bank read: what it taught about the card's product (see [`predict`]), for the
    /// next read on the same terminal. For a card that authenticated (its cryptogram verified),
    /// `issuer_digits` says how many leading digits of its number tell the issuer key that covers
    /// it (at least [`IIN_DIGITS`] are used): the profile then predicts GENERATE AC for cards whose
    /// numbers start with the same digits. `None` before the read is done, for a read that gave no
    /// bank card, and for a card whose answers are not all BER-TLV.
    pub fn learned(&self, issuer_digits: Option<usize>) -> Option<Profile> {
        if !self.bank_read || self.history.len() < 2 {
            return None;
        }
        let shapes = |round: usize, number_bytes: usize| -> Option<Vec<(usize, usize, Shape)>> {
            let Round { responses, gpo_pdol, .. } = &self.history[round];
            let mut out = Vec::new();
            for (g, answers) in responses.iter().enumerate() {
                if round == 0 && g == UID_GROUP {
                    continue;
                }
                for (i, raw) in answers.iter().enumerate() {
                    let gpo = gpo_pdol.is_some() && (g, i) == (0, 0);
                    out.push((g, i, Shape::of(raw, gpo, number_bytes)?));
                }
            }
            Some(out)
        };
        let mut rounds = Vec::with_capacity(self.history.len() - 1);
        for (r, round) in self.history.iter().enumerate().skip(1) {
            let mut groups = round.batch.groups.clone();
            if round.gpo_pdol.is_some() {
                // Rebuilt with each read's terminal data.
                if let Some(gpo) = groups.first_mut().and_then(|g| g.apdus.first_mut()) {
                    gpo.clear();
                }
            }
            rounds.push(LearnedRound {
                groups,
                gpo_pdol: round.gpo_pdol.clone(),
                after: shapes(r - 1, 0)?,
            });
        }
        let ac = match (&self.cdol1, issuer_digits) {
            (Some(cdol1), Some(digits)) => {
                // Whole bytes: an odd count keeps one digit more, never one less.
                let number_bytes = digits.max(IIN_DIGITS).div_ceil(2);
                let mut after = Vec::new();
                for r in 1..self.history.len() {
                    after.extend(shapes(r, number_bytes)?.into_iter().map(|(g, i, shape)| (r, g, i, shape)));
                }
                Some(LearnedAc { cdol1: cdol1.clone(), after })
            }
            _ => None,
        };
        Some(Profile { atr: self.atr.clone(), rounds, ac })
    }

    /// Whether the batch awaiting its answers carries a predicted GENERATE AC (a terminal whose
    /// local policy refuses the command refuses the whole batch).
    pub fn sends_generate_ac(&self) -> bool {
        self.predicted_ac.is_some()
    }

    /// The GENERATE AC a predicted read's batch carried, and the card's answer, if it ran. Use the
    /// answer only for the very command the read's own CDOL1 and terminal data give.
    pub fn predicted_generate_ac(&self) -> Option<(&ArqcRequest, &[u8])> {
        self.ac_answer.as_ref().map(|(request, raw)| (request, raw.as_slice()))
    }

    /// The terminal data the read sends (PDOL, CDOL1), with its unpredictable number.
    pub fn terminal(&self) -> &Terminal {
        &self.terminal
    }

    /// Batches emitted so far (the first one included); once done, the read's round trips.
    pub fn round_trips(&self) -> usize {
        self.round_trips
    }

    /// Whether the ATR is a PC/SC contactless one (`3B 8x 80 01 …`).
    pub fn contactless(&self) -> bool {
        self.contactless
    }

    /// Take the responses to the last batch, shaped as `batch::execute` returns them.
    ///
    /// The answers of a predicted round are taken only where the read's own next round is that
    /// very round; from the first round that was skipped (its conditions did not hold) the read
    /// sends its rounds as usual. A predicted round that ran although the read needs another
    /// one (it never happens with the conditions [`predict`] writes) starts the read over.
    pub fn advance(&mut self, responses: Vec<Vec<Vec<u8>>>) -> Result<Next, ReadError> {
        // Any error ends the read: the stage stays `Over`.
        let mut stage = std::mem::replace(&mut self.stage, Stage::Over);
        if matches!(stage, Stage::Over) {
            return Err(ReadError::UnexpectedResponse(
                "the read is already over".into(),
            ));
        }
        batch::check_shape(&self.sent, &responses).map_err(ReadError::UnexpectedResponse)?;
        let mut answers = responses.into_iter();
        let mut part: Vec<Vec<Vec<u8>>> = answers.by_ref().take(self.current.groups.len()).collect();
        let predicted: Vec<(Predicted, Vec<Vec<Vec<u8>>>)> = std::mem::take(&mut self.predicted)
            .into_iter()
            .map(|p| {
                let part = answers.by_ref().take(p.n_groups).collect();
                (p, part)
            })
            .collect();
        if let Some(request) = self.predicted_ac.take() {
            if let Some(raw) = answers.next().and_then(|group| group.into_iter().next()) {
                self.ac_answer = Some((request, raw));
            }
        }
        let mut predicted = predicted.into_iter();
        loop {
            let gpo_pdol = match &stage {
                Stage::Gpo { pdol, .. } => Some(pdol.clone()),
                _ => None,
            };
            let step = self.step(stage, &part)?;
            self.history.push(Round { batch: std::mem::take(&mut self.current), responses: part, gpo_pdol });
            match step {
                Step::Done(identity) => {
                    if let CardIdentity::Bank { auth, .. } = &identity {
                        self.bank_read = true;
                        self.cdol1 = auth.cdol1.clone();
                    }
                    return Ok(Next::Done(identity));
                }
                Step::Send(next, batch) => match predicted.next() {
                    Some((round, answers)) if answers.first().is_some_and(|g| !g.is_empty()) => {
                        if round.batch != batch {
                            return self.start_over();
                        }
                        self.current = batch;
                        stage = next;
                        part = answers;
                    }
                    _ => return self.send(next, batch),
                },
            }
        }
    }

    /// Send `batch`, a round of the read, for real.
    fn send(&mut self, stage: Stage, batch: Batch) -> Result<Next, ReadError> {
        if self.round_trips >= MAX_ROUND_TRIPS {
            return Err(ReadError::TooManyRoundTrips);
        }
        self.round_trips += 1;
        self.stage = stage;
        self.current = batch.clone();
        self.sent = batch.clone();
        Ok(Next::Send(batch))
    }

    /// Start the read over with round 1: the card ran commands the read did not decide on.
    fn start_over(&mut self) -> Result<Next, ReadError> {
        self.history.clear();
        self.ac_answer = None;
        self.send(Stage::Directory, round_1())
    }

    fn step(&mut self, stage: Stage, responses: &[Vec<Vec<u8>>]) -> Result<Step, ReadError> {
        match stage {
            Stage::Over => Err(ReadError::UnexpectedResponse(
                "the read is already over".into(),
            )),
            Stage::Directory => self.after_directory(responses),
            Stage::PseRecords { uid, failed } => self.select(
                directory_records(responses[0].get(1..).unwrap_or_default()),
                uid,
                Speculative {
                    failed,
                    // Round 2 selected the PSE again: the application selection is gone.
                    selected: None,
                },
            ),
            Stage::Select { candidates, uid } => self.after_select(responses, candidates, uid),
            Stage::Gpo { app, layout, .. } => self.after_gpo(responses, app, layout),
            Stage::Records {
                app,
                gpo,
                gpo_sw,
                mut records,
                layout,
            } => {
                for (raw, &at) in responses.iter().flatten().zip(&layout) {
                    if let Some(data) = success_data(raw) {
                        records.insert(at, data.to_vec());
                    }
                }
                finish(app, gpo.as_ref(), gpo_sw, &records)
            }
        }
    }

    fn after_directory(&mut self, responses: &[Vec<Vec<u8>>]) -> Result<Step, ReadError> {
        let uid = responses[2]
            .first()
            .and_then(|r| success_data(r))
            .filter(|d| (1..=16).contains(&d.len()))
            .map(<[u8]>::to_vec);
        let speculative = Speculative::from_round_1(&responses[3]);

        let ppse_entries = match responses[0].first().and_then(|r| success_data(r)) {
            // A directory that does not parse is treated as absent: the known-AID list follows.
            Some(fci) => tlv::parse(fci)
                .map(|t| card_data::directory_entries(&t))
                .unwrap_or_default(),
            None => Vec::new(),
        };
        if !ppse_entries.is_empty() {
            return self.select(ppse_entries, uid, speculative);
        }

        let pse = &responses[1];
        if let Some(fci) = pse.first().and_then(|r| success_data(r)) {
            if let Some(sfi) = card_data::pse_sfi(fci).filter(|&s| s != 1) {
                // The directory is not where round 1 looked: one extra round.
                let apdus = std::iter::once(Apdu::select_by_name(PSE).to_bytes())
                    .chain((1..=DIRECTORY_RECORDS).map(|r| Apdu::read_record(r, sfi).to_bytes()))
                    .collect();
                return Ok(Step::Send(
                    Stage::PseRecords {
                        uid,
                        failed: speculative.failed,
                    },
                    Batch {
                        groups: vec![Group::sequence(apdus)],
                    },
                ));
            }
        }
        let pse_entries = directory_records(pse.get(1..).unwrap_or_default());
        self.select(pse_entries, uid, speculative)
    }

    /// The candidates are the directory entries by priority, then the known AIDs not already
    /// listed; a SELECT round would stop at the first of them the card selects. Candidates round 1
    /// already failed to select are dropped. If the first one left is the application round 1
    /// selected, its FCI is already here and still in force: straight to GPO. Otherwise a SELECT
    /// round over the candidates left.
    fn select(
        &self,
        mut entries: Vec<Candidate>,
        uid: Option<Vec<u8>>,
        speculative: Speculative,
    ) -> Result<Step, ReadError> {
        card_data::sort_by_priority(&mut entries);
        for aid in known_aids() {
            if !entries.iter().any(|c| c.aid == aid) {
                entries.push(Candidate {
                    aid,
                    label: None,
                    priority: None,
                });
            }
        }
        entries.retain(|c| !speculative.failed.contains(&c.aid));
        let Some(first) = entries.first() else {
            // Every candidate already failed: what a SELECT round would conclude.
            return no_application(uid);
        };
        if let Some((aid, fci)) = &speculative.selected {
            if *aid == first.aid {
                return self.gpo_step(first, fci);
            }
        }
        let apdus = entries
            .iter()
            .map(|c| Apdu::select_by_name(&c.aid).to_bytes())
            .collect();
        Ok(Step::Send(
            Stage::Select {
                candidates: entries,
                uid,
            },
            Batch {
                groups: vec![Group::first_success(apdus)],
            },
        ))
    }

    fn after_select(
        &mut self,
        responses: &[Vec<Vec<u8>>],
        candidates: Vec<Candidate>,
        uid: Option<Vec<u8>>,
    ) -> Result<Step, ReadError> {
        let selected = responses[0]
            .iter()
            .enumerate()
            .find_map(|(i, raw)| success_data(raw).map(|fci| (i, fci)));
        let Some((index, fci)) = selected else {
            return no_application(uid);
        };
        self.gpo_step(&candidates[index], fci)
    }

    /// The GPO round for the application `candidate` selected with `fci`.
    fn gpo_step(&self, candidate: &Candidate, fci: &[u8]) -> Result<Step, ReadError> {
        let Fci {
            df_name,
            label,
            pdol,
        } = card_data::parse_fci(fci)?;
        let app = App {
            aid: df_name.unwrap_or_else(|| candidate.aid.clone()),
            label: label.or_else(|| candidate.label.clone()),
        };
        let pdol_data = self.terminal.build_dol(&pdol)?;

        let mut groups = vec![Group::sequence(vec![Apdu::get_processing_options(
            &pdol_data,
        )
        .to_bytes()])];
        let mut layout = Vec::new();
        for sfi in SPECULATIVE_SFIS {
            for records in [1..=1, 2..=SPECULATIVE_RECORDS] {
                let at: Vec<(u8, u8)> = records.map(|r| (sfi, r)).collect();
                groups.push(Group::sequence(
                    at.iter()
                        .map(|&(s, r)| Apdu::read_record(r, s).to_bytes())
                        .collect(),
                ));
                layout.push(at);
            }
        }
        Ok(Step::Send(Stage::Gpo { app, layout, pdol }, Batch { groups }))
    }

    fn after_gpo(
        &mut self,
        responses: &[Vec<Vec<u8>>],
        app: App,
        layout: Vec<Vec<(u8, u8)>>,
    ) -> Result<Step, ReadError> {
        let gpo_raw = responses[0]
            .first()
            .ok_or_else(|| ReadError::UnexpectedResponse("no GPO response".into()))?;
        let gpo_sw = StatusWord::of_response(gpo_raw).unwrap_or(StatusWord(0));
        let gpo = success_data(gpo_raw)
            .map(card_data::parse_gpo)
            .transpose()?;

        let mut records = BTreeMap::new();
        for (group, at) in responses[1..].iter().zip(&layout) {
            for (raw, &key) in group.iter().zip(at) {
                if let Some(data) = success_data(raw) {
                    records.insert(key, data.to_vec());
                }
            }
        }

        if let Some(gpo) = &gpo {
            let afl_records: Vec<(u8, u8)> = gpo.afl.iter().flat_map(|e| e.records()).collect();
            if card_data::find_pan(
                &sources(gpo, &records, false)
                    .iter()
                    .map(Vec::as_slice)
                    .collect::<Vec<_>>(),
            )
            .is_err()
            {
                let missing: Vec<(u8, u8)> = afl_records
                    .iter()
                    .copied()
                    .filter(|k| !records.contains_key(k))
                    .take(MAX_EXTRA_RECORDS)
                    .collect();
                if !missing.is_empty() {
                    let groups = missing
                        .iter()
                        .map(|&(s, r)| Group::sequence(vec![Apdu::read_record(r, s).to_bytes()]))
                        .collect();
                    let stage = Stage::Records {
                        app,
                        gpo: Some(gpo.clone()),
                        gpo_sw,
                        records,
                        layout: missing,
                    };
                    return Ok(Step::Send(stage, Batch { groups }));
                }
            }
        }
        finish(app, gpo.as_ref(), gpo_sw, &records)
    }
}

/// Shows where the read is, never card data.
impl fmt::Debug for ReadSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = match self.stage {
            Stage::Directory => "directory",
            Stage::PseRecords { .. } => "pse-records",
            Stage::Select { .. } => "select",
            Stage::Gpo { .. } => "gpo",
            Stage::Records { .. } => "records",
            Stage::Over => "over",
        };
        f.debug_struct("ReadSession")
            .field("stage", &stage)
            .field("round_trips", &self.round_trips)
            .field("contactless", &self.contactless)
            .finish()
    }
}

enum Step {
    Send(Stage, Batch),
    Done(CardIdentity),
}

/// Round 1: directories, UID, and the speculative selection of the known AIDs.
fn round_1() -> Batch {
    Batch {
        groups: vec![
            Group::sequence(vec![Apdu::select_by_name(PPSE).to_bytes()]),
            Group::sequence(
                std::iter::once(Apdu::select_by_name(PSE).to_bytes())
                    .chain((1..=DIRECTORY_RECORDS).map(|r| Apdu::read_record(r, 1).to_bytes()))
                    .collect(),
            ),
            Group::sequence(vec![Apdu::get_uid().to_bytes()]),
            // Last, so that its selection is the one in force after the batch.
            Group::first_success(
                known_aids()
                    .iter()
                    .map(|aid| Apdu::select_by_name(aid).to_bytes())
                    .collect(),
            ),
        ],
    }
}

/// [`KNOWN_AIDS`] as bytes, in order.
fn known_aids() -> Vec<Vec<u8>> {
    KNOWN_AIDS
        .iter()
        .filter_map(|a| hex::decode(a).ok())
        .collect()
}

/// What round 1's SELECTs of the known AIDs found out.
struct Speculative {
    /// Known AIDs the card did not select.
    failed: Vec<Vec<u8>>,
    /// The AID the card selected and its FCI, while that selection is still in force.
    selected: Option<(Vec<u8>, Vec<u8>)>,
}

impl Speculative {
    /// From the responses of the `FirstSuccess` group: all failures but perhaps the last.
    fn from_round_1(responses: &[Vec<u8>]) -> Speculative {
        let mut failed = Vec::new();
        let mut selected = None;
        for (aid, raw) in known_aids().into_iter().zip(responses) {
            match success_data(raw) {
                Some(fci) => {
                    selected = Some((aid, fci.to_vec()));
                    break;
                }
                None => failed.push(aid),
            }
        }
        Speculative { failed, selected }
    }
}

/// No application can be selected: the UID if the card gave one.
fn no_application(uid: Option<Vec<u8>>) -> Result<Step, ReadError> {
    match uid {
        Some(uid) => Ok(Step::Done(CardIdentity::Uid { uid })),
        None => Err(ReadError::NoApplication),
    }
}

/// Decoded data to search, in order: the GPO objects, the AFL records (AFL order), and with
/// `others` the records read that the AFL does not name. Records that do not decode are skipped.
fn sources(gpo: &GpoData, records: &BTreeMap<(u8, u8), Vec<u8>>, others: bool) -> Vec<Vec<Tlv>> {
    let mut out = vec![gpo.tlvs.clone()];
    let afl: Vec<(u8, u8)> = gpo.afl.iter().flat_map(|e| e.records()).collect();
    for key in &afl {
        if let Some(Ok(t)) = records.get(key).map(|r| tlv::parse(r)) {
            out.push(t);
        }
    }
    if others {
        for (key, raw) in records {
            if !afl.contains(key) {
                if let Ok(t) = tlv::parse(raw) {
                    out.push(t);
                }
            }
        }
    }
    out
}

fn finish(
    app: App,
    gpo: Option<&GpoData>,
    gpo_sw: StatusWord,
    records: &BTreeMap<(u8, u8), Vec<u8>>,
) -> Result<Step, ReadError> {
    // A failed GPO leaves no AFL: every record read is a candidate source.
    let empty = GpoData::default();
    let decoded = sources(gpo.unwrap_or(&empty), records, true);
    match card_data::find_pan(&decoded.iter().map(Vec::as_slice).collect::<Vec<_>>()) {
        Ok(found) => {
            if !card_data::numbers_agree(&decoded.iter().map(Vec::as_slice).collect::<Vec<_>>(), &found.pan) {
                return Err(ReadError::InconsistentNumber);
            }
            let auth = card_data::auth_data(gpo, &decoded);
            Ok(Step::Done(CardIdentity::Bank {
                pan: found.pan,
                expiry: found.expiry,
                aid: app.aid,
                label: app.label,
                auth,
            }))
        }
        Err(Some(why)) => Err(ReadError::InvalidNumber(why)),
        Err(None) if gpo.is_none() => Err(ReadError::UnexpectedResponse(format!(
            "GET PROCESSING OPTIONS answered {gpo_sw}"
        ))),
        Err(None) => match records
            .iter()
            .find_map(|(key, raw)| tlv::parse(raw).err().map(|e| (key, e)))
        {
            Some(((sfi, rec), e)) => Err(ReadError::Malformed(format!(
                "record {rec} of SFI {sfi}: {e}"
            ))),
            None => Err(ReadError::NoCardNumber),
        },
    }
}

/// Application entries in PSE directory records (raw responses; failures ignored).
fn directory_records(raws: &[Vec<u8>]) -> Vec<Candidate> {
    raws.iter()
        .filter_map(|r| success_data(r))
        .filter_map(|data| tlv::parse(data).ok())
        .flat_map(|t| card_data::directory_entries(&t))
        .collect()
}

/// The data of a `9000` response.
fn success_data(raw: &[u8]) -> Option<&[u8]> {
    match raw {
        [data @ .., 0x90, 0x00] => Some(data),
        _ => None,
    }
}


/// PC/SC part 3 ATR of a contactless card: `3B 8n 80 01 …`.
pub fn is_contactless_atr(atr: &[u8]) -> bool {
    matches!(atr, [0x3B, t0, 0x80, 0x01, ..] if t0 & 0xF0 == 0x80)
}

/// Run a whole read against a transmit function (tests, the local-read benchmark). Returns the
/// identity and the number of round trips (batches) it took.
pub fn read_card<E>(
    atr: &[u8],
    transmit: &mut Transmit<'_, E>,
) -> Result<(CardIdentity, usize), ReadCardError<E>> {
    let (mut session, mut next) = ReadSession::start(atr);
    loop {
        let responses = batch::execute(&next, transmit)?;
        match session.advance(responses)? {
            Next::Send(batch) => next = batch,
            Next::Done(identity) => return Ok((identity, session.round_trips())),
        }
    }
}

#[cfg(test)]
mod tests;
