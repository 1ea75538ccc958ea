//! Tests of the read's slower and failing paths, against small card models

use std::collections::BTreeMap;
use std::convert::Infallible;

use super::*;
use crate::sim::model::{bcd_pan, AppSpec, GpoFormat, ModelCard};
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
fn a_pan_beyond_the_speculative_reads_takes_a_fourth_round() {
    // SFI 5 is not read speculatively.
    let mut card = contactless(vec![app("28010100", vec![((5, 1), pan_record())])]);

    let (result, batches) = read(&mut card, terminal());

    assert_eq!(pan_of(&result.unwrap()), PAN);
    assert_eq!(batches.len(), 4);
    assert_eq!(
        batches[3].groups,
        vec![Group::sequence(vec![h("00B2012C00")])],
        "exactly the missing AFL records"
    );
}

#[test]
fn records_from_record_3_on_take_a_fourth_round() {
    let mut card = contactless(vec![app("10030300", vec![((2, 3), pan_record())])]);
    let (result, batches) = read(&mut card, terminal());
    assert_eq!(pan_of(&result.unwrap()), PAN);
    assert_eq!(batches.len(), 4);
}

#[test]
fn a_record_2_start_stays_within_three() {
    let mut card = contactless(vec![app("10020200", vec![((2, 2), pan_record())])]);
    let (result, batches) = read(&mut card, terminal());
    assert_eq!(pan_of(&result.unwrap()), PAN);
    assert_eq!(batches.len(), 3);
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
    assert_eq!(batches.len(), 3);

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
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[1].groups[0].apdus.len(), KNOWN_AIDS.len());

    // An application without any card number.
    let other = t(0x70, &t(0x5F20, b"NOBODY"));
    let mut card = contactless(vec![app("08010100", vec![((1, 1), other)])]);
    assert_eq!(read(&mut card, terminal()).0, Err(ReadError::NoCardNumber));

    // A number that fails Luhn.
    let bad = t(0x70, &t(0x5A, &bcd_pan("4761739001010011")));
    let mut card = contactless(vec![app("08010100", vec![((1, 1), bad)])]);
    assert!(matches!(
        read(&mut card, terminal()).0,
        Err(ReadError::Malformed(_))
    ));

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

    let shapes: Vec<Vec<Vec<Vec<u8>>>> = vec![
        vec![],
        vec![vec![not_found.clone()], vec![not_found.clone()]],
        vec![
            vec![not_found.clone()],
            vec![not_found.clone(), ok.clone()],
            vec![not_found.clone()],
        ],
        vec![
            vec![not_found.clone()],
            vec![ok.clone()],
            vec![not_found.clone()],
        ],
        vec![
            vec![not_found.clone(), not_found.clone()],
            vec![not_found.clone()],
            vec![not_found.clone()],
        ],
        vec![vec![], vec![not_found.clone()], vec![not_found.clone()]],
        vec![
            vec![vec![0x90]],
            vec![not_found.clone()],
            vec![not_found.clone()],
        ],
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

    let mut session = start();
    let good = vec![
        vec![not_found.clone()],
        vec![not_found.clone()],
        vec![not_found.clone()],
    ];
    assert!(matches!(session.advance(good), Ok(Next::Send(_))));
    assert_eq!(session.round_trips(), 2);
}

#[test]
fn round_one_asks_for_directories_and_uid() {
    let (session, batch) = ReadSession::start(&h("3B8080010101"));
    assert!(session.contactless());
    assert_eq!(session.round_trips(), 1);
    assert_eq!(batch.groups.len(), 3);
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
    assert!(batch
        .groups
        .iter()
        .all(|g| g.mode == batch::GroupMode::Sequence));
    assert!(!ReadSession::start(&h("3B600000")).0.contactless());
}
