//! Tests of the read's slower and failing paths, against small card models

use std::collections::BTreeMap;
use std::convert::Infallible;

use super::*;
use crate::sim::model::{bcd_pan, track2, AppSpec, GpoFormat, ModelCard};
use crate::sim::SimCard;
use crate::tlv::encode as t;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

const PAN: &str = "4761739001010010";

fn app(afl: &str, records: Vec<((u8, u8), Vec<u8>)>) -> AppSpec {
    AppSpec {
        aid: h("A0000000031010"),
        label: "VISA",
        priority: None,
        pdol: h("9F66049F3704"),
        needs_contactless_ttq: true,
        gpo: GpoFormat::Two { extra: Vec::new() },
        aip: [0x20, 0x00],
        afl: h(afl),
        records: records.into_iter().collect::<BTreeMap<_, _>>(),
        icc_key: None,
    }
}

fn pan_record() -> Vec<u8> {
    t(
        0x70,
        &[t(0x5A, &bcd_pan(PAN)), t(0x5F24, &h("301231"))].concat(),
    )
}

fn contactless(apps: Vec<AppSpec>) -> ModelCard {
    let mut card = ModelCard::new("model", h("3B8080010101"), apps);
    card.ppse = true;
    card
}

/// Run a read with given terminal data; returns the result, the batches sent.
fn read(
    card: &mut dyn SimCard,
    terminal: Terminal,
) -> (Result<CardIdentity, ReadError>, Vec<Batch>) {
    let (mut session, mut batch) = ReadSession::start_with(&card.atr(), terminal);
    let mut batches = vec![batch.clone()];
    let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, Infallible> { Ok(card.transmit(apdu)) };
    loop {
        let responses = batch::execute(&batch, &mut transmit).unwrap();
        match session.advance(responses) {
            Ok(Next::Send(next)) => {
                batches.push(next.clone());
                batch = next;
            }
            Ok(Next::Done(identity)) => {
                assert_eq!(session.round_trips(), batches.len());
                return (Ok(identity), batches);
            }
            Err(e) => return (Err(e), batches),
        }
    }
}

fn terminal() -> Terminal {
    Terminal::at(1_795_320_306, [1, 2, 3, 4])
}

fn pan_of(identity: &CardIdentity) -> &str {
    match identity {
        CardIdentity::Bank { pan, .. } => pan.as_str(),
        CardIdentity::Uid { .. } => "uid",
    }
}

#[test]
fn a_pan_beyond_the_speculative_reads_takes_a_third_round() {
    // SFI 5 is not read speculatively.
    let mut card = contactless(vec![app("28010100", vec![((5, 1), pan_record())])]);

    let (result, batches) = read(&mut card, terminal());

    assert_eq!(pan_of(&result.unwrap()), PAN);
    assert_eq!(batches.len(), 3);
    assert_eq!(
        batches[2].groups,
        vec![Group::sequence(vec![h("00B2012C00")])],
        "exactly the missing AFL records"
    );
}

#[test]
fn records_from_record_3_on_take_a_third_round() {
    let mut card = contactless(vec![app("10030300", vec![((2, 3), pan_record())])]);
    let (result, batches) = read(&mut card, terminal());
    assert_eq!(pan_of(&result.unwrap()), PAN);
    assert_eq!(batches.len(), 3);
}

#[test]
fn a_record_2_start_stays_within_two() {
    let mut card = contactless(vec![app("10020200", vec![((2, 2), pan_record())])]);
    let (result, batches) = read(&mut card, terminal());
    assert_eq!(pan_of(&result.unwrap()), PAN);
    assert_eq!(batches.len(), 2);
}

#[test]
fn a_pse_directory_outside_sfi_1_costs_one_round() {
    let mut card = ModelCard::new(
        "pse-sfi-2",
        h("3B600000"),
        vec![app("08010100", vec![((1, 1), pan_record())])],
    );
    card.pse_sfi = Some(2);
    card.apps[0].needs_contactless_ttq = false;
    card.apps[0].aid = h("A0000000999999");

    let (result, batches) = read(&mut card, terminal());

    assert_eq!(
        pan_of(&result.unwrap()),
        PAN,
        "an AID only the directory knows"
    );
    assert_eq!(batches.len(), 4);
    assert_eq!(batches[1].groups[0].apdus[1], h("00B2011400"));
}

#[test]
fn a_declined_gpo_still_reads_records_read_speculatively() {
    let mut card = contactless(vec![app("08010100", vec![((1, 1), pan_record())])]);
    let mut no_contactless = terminal();
    no_contactless.ttq = [0; 4];

    let (result, batches) = read(&mut card, no_contactless.clone());

    assert_eq!(pan_of(&result.unwrap()), PAN);
    assert_eq!(batches.len(), 2);

    let mut empty = contactless(vec![app("08010100", vec![])]);
    let (result, _) = read(&mut empty, no_contactless);
    assert_eq!(
        result,
        Err(ReadError::UnexpectedResponse(
            "GET PROCESSING OPTIONS answered 6985".into()
        ))
    );
}

#[test]
fn failures_name_what_went_wrong() {
    // No application and no UID.
    let mut card = ModelCard::new("empty", h("3B600000"), vec![]);
    let (result, batches) = read(&mut card, terminal());
    assert_eq!(result, Err(ReadError::NoApplication));
    assert_eq!(batches.len(), 1, "round 1 already tried every candidate");
    assert_eq!(batches[0].groups[3].apdus.len(), KNOWN_AIDS.len());

    // An application without any card number.
    let other = t(0x70, &t(0x5F20, b"NOBODY"));
    let mut card = contactless(vec![app("08010100", vec![((1, 1), other)])]);
    assert_eq!(read(&mut card, terminal()).0, Err(ReadError::NoCardNumber));

    // A Visa number that fails Luhn; a UnionPay number that fails it is a card number.
    let bad = t(0x70, &t(0x5A, &bcd_pan("4761739001010011")));
    let mut card = contactless(vec![app("08010100", vec![((1, 1), bad)])]);
    assert_eq!(
        read(&mut card, terminal()).0,
        Err(ReadError::InvalidNumber(crate::pan::PanError::Luhn))
    );
    let unionpay = t(0x70, &t(0x5A, &bcd_pan("6217001234567890")));
    let mut card = contactless(vec![app("08010100", vec![((1, 1), unionpay)])]);
    assert!(read(&mut card, terminal()).0.is_ok());

    // A PDOL that asks for more than a command carries.
    let mut card = contactless(vec![app("08010100", vec![((1, 1), pan_record())])]);
    card.apps[0].pdol = h("9F4E809F4F80");
    assert!(matches!(
        read(&mut card, terminal()).0,
        Err(ReadError::Malformed(_))
    ));
}

#[test]
fn responses_must_fit_the_batch() {
    let start = || ReadSession::start_with(&[0x3B, 0x60, 0x00, 0x00], terminal()).0;
    let ok = h("9000");
    let not_found = h("6A82");
    let nf = || vec![not_found.clone()];
    let no_aid = || vec![not_found.clone(); KNOWN_AIDS.len()];

    let shapes: Vec<Vec<Vec<Vec<u8>>>> = vec![
        vec![],
        vec![nf(), nf(), nf()],
        vec![nf(), nf(), nf(), no_aid(), nf()],
        vec![nf(), vec![not_found.clone(), ok.clone()], nf(), no_aid()],
        vec![nf(), vec![ok.clone()], nf(), no_aid()],
        vec![
            vec![not_found.clone(), not_found.clone()],
            nf(),
            nf(),
            no_aid(),
        ],
        vec![vec![], nf(), nf(), no_aid()],
        vec![vec![vec![0x90]], nf(), nf(), no_aid()],
        // The known-AID group is FirstSuccess: it stops at the first 9000, not before.
        vec![nf(), nf(), nf(), vec![ok.clone(), not_found.clone()]],
        vec![nf(), nf(), nf(), vec![not_found.clone(), not_found.clone()]],
        vec![nf(), nf(), nf(), vec![]],
    ];
    for (i, responses) in shapes.into_iter().enumerate() {
        let mut session = start();
        assert!(
            matches!(
                session.advance(responses),
                Err(ReadError::UnexpectedResponse(_))
            ),
            "shape {i}"
        );
        assert!(
            session.advance(vec![]).is_err(),
            "shape {i}: the session is over"
        );
    }

    // The second known AID selects with an empty FCI: straight to GPO.
    let mut session = start();
    let good = vec![nf(), nf(), nf(), vec![not_found.clone(), h("6F009000")]];
    let Ok(Next::Send(batch)) = session.advance(good) else {
        panic!("no GPO round")
    };
    assert_eq!(batch.groups[0].apdus, vec![h("80A8000002830000")]);
    assert_eq!(session.round_trips(), 2);
}

#[test]
fn round_one_asks_for_directories_and_uid() {
    let (session, batch) = ReadSession::start(&h("3B8080010101"));
    assert!(session.contactless());
    assert_eq!(session.round_trips(), 1);
    assert_eq!(batch.groups.len(), 4);
    assert_eq!(
        batch.groups[0].apdus,
        vec![h("00A404000E325041592E5359532E444446303100")]
    );
    assert_eq!(
        batch.groups[1].apdus[0],
        h("00A404000E315041592E5359532E444446303100")
    );
    assert_eq!(
        batch.groups[1].apdus[1..],
        (1..=8)
            .map(|r| vec![0x00, 0xB2, r, 0x0C, 0x00])
            .collect::<Vec<_>>()[..]
    );
    assert_eq!(batch.groups[2].apdus, vec![h("FFCA000000")]);
    assert!(batch.groups[..3]
        .iter()
        .all(|g| g.mode == batch::GroupMode::Sequence));
    assert_eq!(batch.groups[3].mode, batch::GroupMode::FirstSuccess);
    assert_eq!(
        batch.groups[3].apdus,
        KNOWN_AIDS
            .iter()
            .map(|a| Apdu::select_by_name(&h(a)).to_bytes())
            .collect::<Vec<_>>(),
        "every known AID, in order, UnionPay first"
    );
    assert!(!ReadSession::start(&h("3B600000")).0.contactless());
}

const OTHER_PAN: &str = "6200000000000047";

fn other_pan_record() -> Vec<u8> {
    t(
        0x70,
        &[t(0x5A, &bcd_pan(OTHER_PAN)), t(0x5F24, &h("290531"))].concat(),
    )
}

/// A card that answers `sw` to a SELECT of `aid` (a blocked application), without passing it on.
struct Refuses {
    inner: ModelCard,
    aid: Vec<u8>,
    sw: [u8; 2],
}

impl SimCard for Refuses {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn atr(&self) -> Vec<u8> {
        self.inner.atr()
    }
    fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        if apdu.starts_with(&[0x00, 0xA4, 0x04, 0x00])
            && apdu.get(5..5 + self.aid.len()) == Some(&self.aid[..])
        {
            return self.sw.to_vec();
        }
        self.inner.transmit(apdu)
    }
    fn reset(&mut self) {
        self.inner.reset()
    }
}

/// Co-badged: Visa (priority 1) and UnionPay debit (priority 2, the first known AID).
fn co_badged() -> ModelCard {
    let visa = AppSpec {
        priority: Some(1),
        ..app("08010100", vec![((1, 1), pan_record())])
    };
    let unionpay = AppSpec {
        aid: h("A000000333010101"),
        label: "UnionPay Debit",
        priority: Some(2),
        ..app("10010100", vec![((2, 1), other_pan_record())])
    };
    contactless(vec![unionpay, visa])
}

fn is_gpo(batch: &Batch) -> bool {
    batch.groups[0].apdus[0].starts_with(&[0x80, 0xA8])
}

#[test]
fn a_speculative_selection_that_is_not_the_first_priority_is_not_used() {
    let mut card = co_badged();

    let (result, batches) = read(&mut card, terminal());

    let identity = result.unwrap();
    assert_eq!(
        pan_of(&identity),
        PAN,
        "the priority 1 application's number"
    );
    let CardIdentity::Bank { aid, .. } = identity else {
        unreachable!()
    };
    assert_eq!(aid, h("A0000000031010"));
    assert_eq!(batches.len(), 3, "a SELECT round, then GPO");
    assert_eq!(
        batches[1].groups[0].apdus[0],
        h("00A4040007A000000003101000"),
        "priority 1 first"
    );
    assert!(is_gpo(&batches[2]));
}

#[test]
fn a_first_candidate_round_1_failed_to_select_is_skipped() {
    // Priority 1 is UnionPay debit, blocked; round 1 saw it fail and selected Visa (priority 2).
    let mut inner = co_badged();
    inner.apps[0].priority = Some(1);
    inner.apps[1].priority = Some(2);
    let mut card = Refuses {
        inner,
        aid: h("A000000333010101"),
        sw: [0x62, 0x83],
    };

    let (result, batches) = read(&mut card, terminal());

    assert_eq!(pan_of(&result.unwrap()), PAN);
    assert_eq!(batches.len(), 2);
    assert!(is_gpo(&batches[1]));
}

#[test]
fn a_first_candidate_only_the_directory_knows_that_fails_costs_the_select_round() {
    // Priority 1 is an AID outside the known list that does not select: round 1 could not try
    // it, so the SELECT round runs and falls through to Visa, as a read without round 1's
    // speculation would.
    let mut unknown = app("18010100", vec![((3, 1), other_pan_record())]);
    unknown.aid = h("A0000000999999");
    unknown.priority = Some(1);
    let visa = AppSpec {
        priority: Some(2),
        ..app("08010100", vec![((1, 1), pan_record())])
    };
    let mut card = Refuses {
        inner: contactless(vec![unknown, visa]),
        aid: h("A0000000999999"),
        sw: [0x6A, 0x82],
    };

    let (result, batches) = read(&mut card, terminal());

    assert_eq!(pan_of(&result.unwrap()), PAN);
    assert_eq!(batches.len(), 3);
    assert_eq!(
        batches[1].groups[0].apdus[..2],
        [
            h("00A4040007A000000099999900"),
            h("00A4040007A000000003101000")
        ]
    );
    assert!(is_gpo(&batches[2]));
}

#[test]
fn the_select_round_leaves_out_known_aids_round_1_saw_fail() {
    // Only the directory knows this AID; the known AIDs all failed in round 1.
    let mut unknown = app("08010100", vec![((1, 1), pan_record())]);
    unknown.aid = h("A0000000999999");
    let mut card = contactless(vec![unknown]);

    let (result, batches) = read(&mut card, terminal());

    assert_eq!(pan_of(&result.unwrap()), PAN);
    assert_eq!(batches.len(), 3);
    assert_eq!(
        batches[1].groups,
        vec![Group::first_success(vec![h("00A4040007A000000099999900")])]
    );
}

/// A read of an issued simulated card, then GENERATE AC with a fresh unpredictable number: the
/// issuer-side check accepts the cryptogram with the key derived from the test issuer master key,
/// and refuses it for another number, another unpredictable number or another key.
#[test]
fn an_issued_card_proves_itself_with_an_arqc_over_the_servers_number() {
    use crate::emv::cryptogram::{check_arqc, parse_response, request_arqc};
    use crate::sim::issuer::TEST_ISSUER_MASTER_KEY;

    for name in [
        "unionpay-debit",
        "unionpay-credit",
        "chained-t0",
        "ppse-missing",
        "unionpay-pse-multi",
        "unionpay-19-digits",
        "unionpay-two-priorities",
        "unionpay-no-luhn",
    ] {
        let mut card = crate::sim::load(name).unwrap();
        let atr = card.atr();
        let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, std::convert::Infallible> { Ok(card.transmit(apdu)) };
        let (identity, _) = crate::emv::read_card(&atr, &mut transmit).unwrap();
        let CardIdentity::Bank { pan, auth, .. } = identity else { panic!("{name}: not a bank card") };
        let terminal = Terminal::at(1_780_000_000, [0x1F, 0x2E, 0x3D, 0x4C]);
        let request = request_arqc(auth.cdol1.as_deref().expect("CDOL1"), &terminal).unwrap();
        let raw = crate::apdu::exchange(&request.apdu, &mut transmit).unwrap();
        let response = parse_response(&raw).unwrap();
        let key = crate::crypto::derive_icc_master_key(&TEST_ISSUER_MASTER_KEY, pan.as_str(), auth.psn.unwrap_or(0)).unwrap();
        let aip = auth.aip.expect("AIP");

        assert!(check_arqc(&key, &request.terminal_data, aip, &response), "{name}");
        let mut other_un = request.terminal_data.clone();
        *other_un.last_mut().unwrap() ^= 1;
        assert!(!check_arqc(&key, &other_un, aip, &response), "{name}: replay under another number");
        let other_card = crate::crypto::derive_icc_master_key(&TEST_ISSUER_MASTER_KEY, "6200000000000013", 1).unwrap();
        assert!(!check_arqc(&other_card, &request.terminal_data, aip, &response), "{name}: another card's key");
        // A second GENERATE AC without a new GET PROCESSING OPTIONS is refused by the card.
        let again = crate::apdu::exchange(&request.apdu, &mut transmit).unwrap();
        assert_eq!(again, [0x69, 0x85], "{name}");
    }
}

#[test]
fn recorded_cards_have_no_keys() {
    for entry in crate::sim::catalogue().iter().filter(|e| e.bank) {
        let issued = crate::sim::issuer::TEST_ISSUER_RANGES.iter().any(|r| entry.expected_number.starts_with(r));
        let synthetic = [
            "unionpay-debit",
            "unionpay-credit",
            "chained-t0",
            "ppse-missing",
            "unionpay-pse-multi",
            "unionpay-19-digits",
            "unionpay-two-priorities",
            "unionpay-no-luhn",
        ]
        .contains(&entry.name);
        assert_eq!(issued, synthetic, "{}", entry.name);
    }
}

#[test]
fn two_different_numbers_on_one_card_are_refused() {
    let mut card = ModelCard::new(
        "two-numbers",
        h("3B8080010101"),
        vec![app(
            "08010100",
            vec![(
                (1, 1),
                t(0x70, &[t(0x5A, &bcd_pan(PAN)), t(0x57, &track2("4761739001010028", "3012", "201", "0"))].concat()),
            )],
        )],
    );
    card.ppse = true;
    let atr = card.atr();
    let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, std::convert::Infallible> { Ok(card.transmit(apdu)) };
    let result = crate::emv::read_card(&atr, &mut transmit);
    assert!(matches!(result, Err(crate::emv::ReadCardError::Read(ReadError::InconsistentNumber))), "{result:?}");
}
