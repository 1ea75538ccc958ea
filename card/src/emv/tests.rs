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

// ---- predicted reads ----

/// The commands a card received, and what it answered.
struct Logged<'a> {
    card: &'a mut dyn SimCard,
    seen: Vec<Vec<u8>>,
}

impl SimCard for Logged<'_> {
    fn name(&self) -> &str {
        self.card.name()
    }
    fn atr(&self) -> Vec<u8> {
        self.card.atr()
    }
    fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        self.seen.push(apdu.to_vec());
        self.card.transmit(apdu)
    }
    fn reset(&mut self) {
        self.card.reset()
    }
}

/// A read as the server runs it: with the terminal's profile if any, each batch through
/// `batch::execute`. Returns the result, the session and the commands the card received.
fn read_with(
    card: &mut dyn SimCard,
    terminal: Terminal,
    profile: Option<&Profile>,
) -> (Result<CardIdentity, ReadError>, ReadSession, Vec<Vec<u8>>) {
    let atr = card.atr();
    let mut logged = Logged { card, seen: Vec::new() };
    let (mut session, mut batch) = ReadSession::start_predicted(&atr, terminal, profile);
    let result = loop {
        let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, Infallible> { Ok(logged.transmit(apdu)) };
        let responses = batch::execute(&batch, &mut transmit).unwrap();
        match session.advance(responses) {
            Ok(Next::Send(next)) => batch = next,
            Ok(Next::Done(identity)) => break Ok(identity),
            Err(e) => break Err(e),
        }
    };
    (result, session, logged.seen)
}

fn is_generate_ac(apdu: &[u8]) -> bool {
    apdu.starts_with(&[0x80, 0xAE])
}

/// The card authenticates as the server would have it: a card in the test issuer's ranges whose
/// cryptogram over `session`'s terminal data verifies under its derived key. Uses the predicted
/// GENERATE AC when the read carried it, else sends one.
fn authenticates(card: &mut dyn SimCard, identity: &CardIdentity, session: &ReadSession) -> bool {
    use crate::emv::cryptogram::{check_arqc, parse_response, request_arqc};
    use crate::sim::issuer::{TEST_ISSUER_MASTER_KEY, TEST_ISSUER_RANGES};
    let CardIdentity::Bank { pan, auth, .. } = identity else { return false };
    if !TEST_ISSUER_RANGES.iter().any(|r| pan.as_str().starts_with(r)) {
        return false;
    }
    let (Some(cdol1), Some(aip)) = (auth.cdol1.as_deref(), auth.aip) else { return false };
    let Ok(request) = request_arqc(cdol1, session.terminal()) else { return false };
    let raw = match session.predicted_generate_ac() {
        Some((sent, raw)) => {
            assert_eq!(sent, &request, "the predicted GENERATE AC is the one the read's CDOL1 gives");
            raw.to_vec()
        }
        None => {
            let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, Infallible> { Ok(card.transmit(apdu)) };
            crate::apdu::exchange(&request.apdu, &mut transmit).unwrap()
        }
    };
    let key = crate::crypto::derive_icc_master_key(&TEST_ISSUER_MASTER_KEY, pan.as_str(), auth.psn.unwrap_or(0)).unwrap();
    parse_response(&raw).is_ok_and(|r| check_arqc(&key, &request.terminal_data, aip, &r))
}

/// What a terminal learns from reading `name` (its first tap there), as the server learns it.
fn learn(name: &str) -> Profile {
    let mut card = crate::sim::load(name).unwrap();
    let (result, session, _) = read_with(card.as_mut(), terminal(), None);
    let identity = result.unwrap();
    let verified = authenticates(card.as_mut(), &identity, &session);
    session.learned(verified.then_some(IIN_DIGITS)).unwrap_or_else(|| panic!("{name}: nothing learned"))
}

fn another_terminal() -> Terminal {
    Terminal::at(1_795_400_000, [0xA5, 0x5A, 0x0F, 0xF0])
}

#[test]
fn a_card_like_the_last_one_reads_and_authenticates_in_one_round_trip() {
    for entry in crate::sim::catalogue().into_iter().filter(|e| e.bank) {
        let profile = learn(entry.name);
        let mut card = crate::sim::load(entry.name).unwrap();
        let (plain, _, _) = read_with(crate::sim::load(entry.name).unwrap().as_mut(), another_terminal(), None);

        let (result, session, seen) = read_with(card.as_mut(), another_terminal(), Some(&profile));

        let identity = result.unwrap_or_else(|e| panic!("{}: {e}", entry.name));
        assert_eq!(identity, plain.unwrap(), "{}", entry.name);
        assert_eq!(session.round_trips(), 1, "{}", entry.name);
        let issued = profile.predicts_generate_ac();
        assert_eq!(session.predicted_generate_ac().is_some(), issued, "{}", entry.name);
        assert_eq!(seen.iter().filter(|c| is_generate_ac(c)).count(), usize::from(issued), "{}", entry.name);
        assert_eq!(authenticates(card.as_mut(), &identity, &session), issued, "{}", entry.name);
        // The read learns the same again: the next card is predicted as well.
        assert_eq!(session.learned(issued.then_some(IIN_DIGITS)).as_ref(), Some(&profile), "{}", entry.name);
    }
}

#[test]
fn a_prediction_never_changes_a_read_nor_asks_a_foreign_card_for_a_cryptogram() {
    // Every catalogue card read on a terminal whose last card was any other (the ATR check set
    // aside, so that the conditions alone decide): the same identity (or failure) as a plain read,
    // never more round trips, GENERATE AC only on an issued card of the learned card's issuer,
    // and then one whose cryptogram verifies.
    let catalogue: Vec<_> = crate::sim::catalogue().into_iter().filter(|e| e.bank).collect();
    let profiles: Vec<(&str, Profile)> = catalogue.iter().map(|e| (e.name, learn(e.name))).collect();
    for entry in &catalogue {
        let mut card = crate::sim::load(entry.name).unwrap();
        let atr = card.atr();
        let (plain, plain_session, _) = read_with(crate::sim::load(entry.name).unwrap().as_mut(), another_terminal(), None);
        for (learned_from, profile) in &profiles {
            let mut profile = profile.clone();
            profile.atr = atr.clone();
            let mut card = crate::sim::load(entry.name).unwrap();

            let (result, session, seen) = read_with(card.as_mut(), another_terminal(), Some(&profile));

            let case = format!("{} after {learned_from}", entry.name);
            assert_eq!(result, plain, "{case}");
            assert!(session.round_trips() <= plain_session.round_trips(), "{case}");
            if seen.iter().any(|c| is_generate_ac(c)) {
                let identity = result.as_ref().unwrap();
                let CardIdentity::Bank { pan, .. } = identity else { unreachable!() };
                assert!(profile.predicts_generate_ac(), "{case}");
                assert_eq!(pan.as_str()[..IIN_DIGITS], entry.expected_number[..IIN_DIGITS], "{case}");
                assert!(authenticates(card.as_mut(), identity, &session), "{case}");
            }
        }
        let _ = card.as_mut();
    }
}

const ISSUED_CDOL1: &str = "9F02069F03069F1A0295055F2A029A039C019F37049F35019F3403";

/// A contactless UnionPay debit card like `unionpay-debit` (qUICS GPO with a cryptogram, the
/// number and CDOL1 in SFI 1, offline data authentication records in SFI 2), with its own number,
/// PDOL and CDOL1, keyed like the test issuer's cards.
fn debit_like(pan: &str, pdol: &str, cdol1: &str) -> ModelCard {
    let records = BTreeMap::from([
        (
            (1, 1),
            t(
                0x70,
                &[
                    t(0x5A, &bcd_pan(pan)),
                    t(0x5F24, &h("301231")),
                    t(0x5F34, &[0x01]),
                    t(0x8C, &h(cdol1)),
                ]
                .concat(),
            ),
        ),
        ((2, 1), t(0x70, &[t(0x8F, &[0x0B]), t(0x90, &[0x5A; 64])].concat())),
        ((2, 2), t(0x70, &t(0x9F46, &[0xA5; 48]))),
    ]);
    let app = AppSpec {
        aid: h("A000000333010101"),
        label: "UnionPay Debit",
        priority: Some(1),
        pdol: h(pdol),
        needs_contactless_ttq: true,
        gpo: GpoFormat::Two {
            extra: [t(0x9F36, &[0x00, 0x11]), t(0x9F26, &h("0102030405060708")), t(0x9F27, &[0x80])].concat(),
        },
        aip: [0x7C, 0x00],
        afl: h("0801010010010200"),
        records,
        icc_key: crate::sim::issuer::icc_key(pan, 1),
    };
    contactless(vec![app])
}

const DEBIT_PDOL: &str = "9F66049F02069F1A025F2A02";

fn learn_card(card: &mut dyn SimCard) -> Profile {
    let (result, session, _) = read_with(card, terminal(), None);
    let identity = result.unwrap();
    let verified = authenticates(card, &identity, &session);
    session.learned(verified.then_some(IIN_DIGITS)).expect("a profile")
}

#[test]
fn a_foreign_card_of_the_same_product_is_read_in_one_round_trip_and_never_asked_for_a_cryptogram() {
    let profile = learn_card(&mut debit_like("6200000000000005", DEBIT_PDOL, ISSUED_CDOL1));
    assert!(profile.predicts_generate_ac());
    // Same product, another issuer (not in the test issuer's ranges).
    let mut foreign = debit_like("6210000000000013", DEBIT_PDOL, ISSUED_CDOL1);

    let (result, session, seen) = read_with(&mut foreign, another_terminal(), Some(&profile));

    assert_eq!(pan_of(&result.unwrap()), "6210000000000013");
    assert_eq!(session.round_trips(), 1);
    assert!(!seen.iter().any(|c| is_generate_ac(c)), "a foreign card was asked for a cryptogram");
    assert!(session.predicted_generate_ac().is_none());

    // Another card of the issuer, same first eight digits: one round trip, authenticated.
    let mut ours = debit_like("6200000000000013", DEBIT_PDOL, ISSUED_CDOL1);
    let (result, session, seen) = read_with(&mut ours, another_terminal(), Some(&profile));
    let identity = result.unwrap();
    assert_eq!(session.round_trips(), 1);
    assert_eq!(seen.iter().filter(|c| is_generate_ac(c)).count(), 1);
    assert!(authenticates(&mut ours, &identity, &session));

    // Of the issuer's range but not of the first eight digits: one round trip for the read, and
    // GENERATE AC on its own after it, as without a prediction.
    let mut cousin = debit_like("6200001200000013", DEBIT_PDOL, ISSUED_CDOL1);
    let (result, session, seen) = read_with(&mut cousin, another_terminal(), Some(&profile));
    let identity = result.unwrap();
    assert_eq!(session.round_trips(), 1);
    assert!(!seen.iter().any(|c| is_generate_ac(c)));
    assert!(authenticates(&mut cousin, &identity, &session));
}

#[test]
fn a_card_that_answers_otherwise_is_read_as_without_a_prediction() {
    let profile = learn_card(&mut debit_like("6200000000000005", DEBIT_PDOL, ISSUED_CDOL1));

    // Another CDOL1 (one more element): the read is predicted, GENERATE AC is not.
    let mut other_cdol = debit_like("6200000000000013", DEBIT_PDOL, &format!("{ISSUED_CDOL1}9F4501"));
    let (result, session, seen) = read_with(&mut other_cdol, another_terminal(), Some(&profile));
    let identity = result.unwrap();
    assert_eq!(session.round_trips(), 1);
    assert!(!seen.iter().any(|c| is_generate_ac(c)));
    assert!(authenticates(&mut other_cdol, &identity, &session), "GENERATE AC on its own, with the card's CDOL1");

    // Another PDOL: nothing after round 1 runs; the read takes its usual two round trips.
    let mut other_pdol = debit_like("6200000000000013", "9F66049F02069F1A025F2A029F3704", ISSUED_CDOL1);
    let (result, session, seen) = read_with(&mut other_pdol, another_terminal(), Some(&profile));
    assert_eq!(pan_of(&result.unwrap()), "6200000000000013");
    assert_eq!(session.round_trips(), 2);
    assert_eq!(seen.iter().filter(|c| c.starts_with(&[0x80, 0xA8])).count(), 1, "one GPO, with the card's own PDOL");
    assert!(!seen.iter().any(|c| is_generate_ac(c)));

    // Another application first in the directory: the read selects it as it would anyway.
    let (plain, plain_session, _) = read_with(&mut co_badged(), another_terminal(), None);
    let (result, session, seen) = read_with(&mut co_badged(), another_terminal(), Some(&profile));
    assert_eq!(result, plain);
    assert_eq!(session.round_trips(), plain_session.round_trips());
    assert!(!seen.iter().any(|c| is_generate_ac(c)));
}

#[test]
fn a_predicted_round_the_read_would_not_send_starts_the_read_over() {
    let mut profile = learn("unionpay-debit");
    // A round whose conditions hold but which is not the round the read decides on.
    profile.rounds[0].groups.pop();
    let mut card = crate::sim::load("unionpay-debit").unwrap();

    let (result, session, seen) = read_with(card.as_mut(), another_terminal(), Some(&profile));

    let identity = result.unwrap();
    assert_eq!(pan_of(&identity), "6200000000000005");
    assert_eq!(session.round_trips(), 3, "the predicted batch, then round 1 and 2 again");
    assert!(session.predicted_generate_ac().is_none(), "a GENERATE AC before the read started over is void");
    assert_eq!(seen.iter().filter(|c| c.starts_with(&[0x80, 0xA8])).count(), 2);
    assert!(authenticates(card.as_mut(), &identity, &session));
}

#[test]
fn answers_claimed_for_a_skipped_round_are_refused() {
    // An agent that runs a predicted round whose conditions do not hold (or skips one whose
    // conditions hold) answers a batch the read did not send.
    let profile = learn("unionpay-debit");
    let mut card = debit_like("6200000000000005", "9F66049F02069F1A025F2A029F3704", ISSUED_CDOL1);
    let (mut session, batch) = ReadSession::start_predicted(&card.atr(), another_terminal(), Some(&profile));
    let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, Infallible> { Ok(card.transmit(apdu)) };
    let mut responses = batch::execute(&batch, &mut transmit).unwrap();
    assert!(responses[4].is_empty(), "the GPO's conditions do not hold");
    responses[4] = vec![h("6985")];

    assert!(matches!(session.advance(responses), Err(ReadError::UnexpectedResponse(_))));
}

#[test]
fn a_profile_holds_no_card_data() {
    let profile = learn("unionpay-debit");
    let (_, session, _) = read_with(crate::sim::load("unionpay-debit").unwrap().as_mut(), terminal(), Some(&profile));
    let (_, batch) = ReadSession::start_predicted(&h("3B8080010101"), terminal(), Some(&profile));
    let sent = format!("{batch:?}");
    // The number beyond its first 8 digits, the expiry (291231) and the qUICS cryptogram's
    // counter are nowhere in the conditions.
    for secret in ["0000000000000005", "291231"] {
        let bytes = h(&format!("{secret}{}", if secret.len() % 2 == 1 { "F" } else { "" }));
        assert!(!batch.groups.iter().flat_map(|g| &g.when).any(|c| match c {
            crate::batch::Condition::Response { segments, .. } => segments.iter().any(|s| s.bytes.windows(bytes.len()).any(|w| w == bytes.as_slice())),
            _ => false,
        }), "{secret} in {sent}");
    }
    assert!(format!("{profile:?}").len() < 80);
    let _ = session;
}
