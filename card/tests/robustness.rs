//! Randomized robustness: hostile bytes into the TLV parser, the read state machine and the purse sessions return errors or outcomes, never panic

use std::convert::Infallible;

use std::sync::{Arc, Mutex};

use card::batch::Batch;
use card::emv::{read_card, Next, ReadSession};
use card::purse::{
    self, CardSerial, LoadNext, LoadOutcome, LoadRequest, LoadSession, PendingLoad,
    RecoverySession, Resolution,
};
use card::sim::issuer::{test_purse_keys, TEST_PURSE_KEY_INDEX};
use card::sim::purse::{purse_card, PurseState, Tear, PURSE_CARD_SERIAL};
use card::sim::{self, SimCard};
use card::tlv;

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// Random bytes biased towards TLV structure: template tags, long lengths, SW-like tails.
    fn tlvish(&mut self, max: usize) -> Vec<u8> {
        const INTERESTING: &[u8] = &[
            0x6F, 0x70, 0x77, 0x80, 0x81, 0x82, 0x84, 0xA5, 0xBF, 0x0C, 0x9F, 0x5A, 0x57, 0x61,
            0x4F, 0x87, 0x94, 0x1F, 0xFF, 0x00, 0x90,
        ];
        let len = self.below(max + 1);
        (0..len)
            .map(|_| {
                if self.below(2) == 0 {
                    INTERESTING[self.below(INTERESTING.len())]
                } else {
                    self.next() as u8
                }
            })
            .collect()
    }
}

#[test]
fn tlv_parse_never_panics_on_random_or_truncated_input() {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for _ in 0..20_000 {
        let data = if rng.below(2) == 0 {
            rng.bytes(64)
        } else {
            rng.tlvish(64)
        };
        if let Ok(tlvs) = tlv::parse(&data) {
            let _ = tlv::find(&tlvs, 0x5A);
        }
        let _ = tlv::parse_dol(&data);
    }
    // Every prefix of real card data either parses or is an error.
    let record = hex::decode("7081A057135413336534958036D20022011515010100000F5A0854133365349580365F24032002295F25031602015F280202805F3401008C219F02069F03069F1A0295055F2A029A039C019F37049F35019F45029F4C089F34038D0C910A8A0295059F37049F4C088E0E00000000000000001E0342031F039F0702FF009F080200029F0D05B4508400009F0E0500000000009F0F05B4708480009F420209789F4A0182").unwrap();
    for end in 0..record.len() {
        let result = tlv::parse(&record[..end]);
        assert!(result.is_err() || end == 0, "prefix of {end} bytes parsed");
    }
    assert!(tlv::parse(&record).is_ok());
}

#[test]
fn advance_rejects_random_responses_without_panicking() {
    let mut rng = Rng(0xC0FF_EE00_0000_0042);
    for _ in 0..3_000 {
        let (mut session, _) = ReadSession::start(&[0x3B, 0x80, 0x80, 0x01, 0x01]);
        for _ in 0..4 {
            let groups = (0..rng.below(5))
                .map(|_| (0..rng.below(4)).map(|_| rng.tlvish(24)).collect())
                .collect();
            if session.advance(groups).is_err() {
                break;
            }
        }
    }
}

/// A card whose answers are sometimes mangled: truncated, bit-flipped, or another status word.
struct Mangled<'a> {
    inner: Box<dyn SimCard>,
    rng: &'a mut Rng,
}

impl Mangled<'_> {
    fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        let mut r = self.inner.transmit(apdu);
        match self.rng.below(12) {
            0 if !r.is_empty() => {
                let keep = self.rng.below(r.len());
                r.truncate(keep.max(2));
            }
            1 if !r.is_empty() => {
                let i = self.rng.below(r.len());
                r[i] ^= 1 << self.rng.below(8);
            }
            2 if r.len() > 2 => {
                let i = self.rng.below(r.len() - 2);
                r[i] = [0x81, 0x82, 0x84, 0xFF, 0x00, 0x1F][self.rng.below(6)];
            }
            3 => {
                let n = r.len();
                if n >= 2 {
                    r[n - 2..].copy_from_slice(
                        &[
                            [0x6A, 0x82],
                            [0x61, 0x10],
                            [0x6C, 0x05],
                            [0x90, 0x00],
                            [0x62, 0x83],
                        ][self.rng.below(5)],
                    );
                }
            }
            _ => {}
        }
        r
    }
}

#[test]
fn full_reads_against_mangled_cards_end_in_a_result() {
    let mut rng = Rng(0x0DDB_A11C_AFE0_0007);
    let mut ok = 0;
    let mut errors = 0;
    for round in 0..40 {
        for entry in sim::catalogue() {
            let inner = sim::load(entry.name).unwrap();
            let atr = inner.atr();
            let mut card = Mangled {
                inner,
                rng: &mut rng,
            };
            let mut transmit =
                |apdu: &[u8]| -> Result<Vec<u8>, Infallible> { Ok(card.transmit(apdu)) };
            match read_card(&atr, &mut transmit) {
                Ok((_, trips)) => {
                    assert!(
                        trips <= card::emv::MAX_ROUND_TRIPS,
                        "round {round} {}",
                        entry.name
                    );
                    ok += 1;
                }
                Err(_) => errors += 1,
            }
        }
    }
    assert!(ok > 0 && errors > 0, "ok {ok}, errors {errors}");
}

#[test]
fn advance_after_the_end_is_an_error() {
    let mut card = sim::load("campus-card").unwrap();
    let (mut session, mut batch) = ReadSession::start(&card.atr());
    let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, Infallible> { Ok(card.transmit(apdu)) };
    loop {
        let responses = card::batch::execute(&batch, &mut transmit).unwrap();
        match session.advance(responses).unwrap() {
            Next::Send(next) => batch = next,
            Next::Done(_) => break,
        }
    }
    assert!(session.advance(vec![]).is_err());
}

/// Answers shaped like the batch (each group stops at its first failure), with random data of
/// lengths near the expected ones and status words a purse uses.
fn shaped_answers(batch: &Batch, rng: &mut Rng) -> Vec<Vec<Vec<u8>>> {
    const SWS: &[[u8; 2]] = &[
        [0x90, 0x00],
        [0x90, 0x00],
        [0x90, 0x00],
        [0x6A, 0x82],
        [0x93, 0x02],
        [0x69, 0x01],
        [0x65, 0x81],
        [0x94, 0x06],
        [0x62, 0x83],
    ];
    const LENGTHS: &[usize] = &[0, 3, 4, 8, 15, 16, 17, 23, 28, 30];
    batch
        .groups
        .iter()
        .map(|group| {
            let mut answers = Vec::new();
            for _ in &group.apdus {
                let sw = SWS[rng.below(SWS.len())];
                let len = LENGTHS[rng.below(LENGTHS.len())];
                let mut raw: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                raw.extend(sw);
                answers.push(raw);
                if group
                    .mode
                    .stops_after(card::apdu::StatusWord::from_bytes(sw[0], sw[1]))
                {
                    break;
                }
            }
            answers
        })
        .collect()
}

fn load_request(amount: u32) -> LoadRequest {
    LoadRequest {
        key_index: TEST_PURSE_KEY_INDEX,
        amount,
        terminal_id: [0, 0, 0, 0, 0, 7],
        date: [0x20, 0x26, 0x12, 0x03],
        time: [0x15, 0x00, 0x00],
        card: None,
    }
}

#[test]
fn purse_sessions_take_random_answers_without_panicking() {
    let mut rng = Rng(0x9B0C_0025_0000_0001);
    let keys = test_purse_keys();
    for _ in 0..3_000 {
        let (mut session, mut batch) =
            LoadSession::start(load_request(1 + rng.below(1000) as u32)).unwrap();
        for _ in 0..4 {
            let answers = if rng.below(8) == 0 {
                (0..rng.below(4))
                    .map(|_| (0..rng.below(3)).map(|_| rng.tlvish(20)).collect())
                    .collect()
            } else {
                shaped_answers(&batch, &mut rng)
            };
            match session.advance(&answers, &keys) {
                Ok(LoadNext::Send(next)) => batch = next,
                Ok(LoadNext::Done(_)) | Err(_) => break,
            }
        }

        let pending = PendingLoad {
            card_serial: CardSerial::new(PURSE_CARD_SERIAL),
            online_serial: rng.next() as u16,
            old_balance: rng.next() as u32,
            amount: rng.next() as u32,
            terminal_id: [1; 6],
            date: [0x20, 0x26, 0x12, 0x03],
            time: [0; 3],
            mac2: [0; 4],
        };
        let (recovery, batch) = RecoverySession::start(pending, TEST_PURSE_KEY_INDEX);
        let _ = recovery.finish(&shaped_answers(&batch, &mut rng), &keys);
        let _ = purse::balance_from(&shaped_answers(&purse::balance_batch(), &mut rng));
    }
}

#[test]
fn loads_against_mangled_and_torn_purses_never_claim_what_the_card_did_not_do() {
    let mut rng = Rng(0x70A0_0F00_0000_0003);
    let keys = test_purse_keys();
    let (mut completed, mut other) = (0, 0);
    let (mut committed, mut not_committed) = (0, 0);
    for _ in 0..400 {
        let balance = rng.below(50_000) as u32;
        let state = Arc::new(Mutex::new(PurseState::with_balance(balance)));
        let mut purse = purse_card().with_state(Arc::clone(&state));
        match rng.below(4) {
            0 => purse.tear_next_credit(Tear::AfterCommit),
            1 => purse.tear_next_credit(Tear::BeforeCommit),
            _ => {}
        }
        let mut card = Mangled {
            inner: Box::new(purse),
            rng: &mut rng,
        };
        let amount = 1 + (balance % 997);
        let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, Infallible> { Ok(card.transmit(apdu)) };

        let outcome = purse::run_load(&mut transmit, &keys, load_request(amount)).unwrap();

        let memory = state.lock().unwrap().clone();
        match outcome {
            LoadOutcome::Completed {
                new_balance,
                online_serial,
                ..
            } => {
                // A verified TAC means the card committed exactly this.
                assert_eq!(memory.balance, new_balance);
                assert_eq!(memory.log[0].online_serial, online_serial);
                completed += 1;
            }
            LoadOutcome::Unknown { pending, .. } => {
                // Resolve on the same card, inserted again without mangling.
                let mut again = purse_card().with_state(Arc::clone(&state));
                let mut transmit =
                    |apdu: &[u8]| -> Result<Vec<u8>, Infallible> { Ok(again.transmit(apdu)) };
                match purse::recover(&mut transmit, &keys, pending.clone(), TEST_PURSE_KEY_INDEX)
                    .unwrap()
                {
                    Resolution::Committed { balance, .. } => {
                        assert_eq!(memory.last_proof.map(|p| p.0), Some(pending.online_serial));
                        assert_eq!(balance, pending.old_balance + amount);
                        committed += 1;
                    }
                    Resolution::NotCommitted { balance } => {
                        assert_eq!(memory.online_serial, pending.online_serial);
                        assert_eq!(balance, pending.old_balance);
                        not_committed += 1;
                    }
                    Resolution::Undetermined { .. } => {
                        panic!("one load cannot leave a card undetermined")
                    }
                }
                other += 1;
            }
            LoadOutcome::Refused(_) => other += 1,
        }
    }
    assert!(
        completed > 0 && other > 0,
        "completed {completed}, other {other}"
    );
    assert!(
        committed > 0 && not_committed > 0,
        "committed {committed}, not {not_committed}"
    );
}
