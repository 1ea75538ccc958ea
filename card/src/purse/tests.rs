//! The purse load, balance read, inquiry and torn-load resolution against the simulated purses

use std::convert::Infallible;

use super::*;
use crate::sim::issuer::{
    test_purse_keys, TEST_PURSE_ISSUER_ID, TEST_PURSE_KEY_INDEX, TEST_PURSE_LOAD_MASTER_KEY,
    TEST_PURSE_TAC_MASTER_KEY,
};
use crate::sim::purse::{
    purse_card, PurseCard, PurseState, Tear, FOREIGN_ISSUER_ID, FOREIGN_PURSE_LOAD_MASTER_KEY,
    FOREIGN_PURSE_TAC_MASTER_KEY, PURSE_CARD_2, PURSE_CARD_2_SERIAL, PURSE_CARD_SERIAL,
    PURSE_CLONE, PURSE_FOREIGN, PURSE_FOREIGN_SERIAL,
};
use crate::sim::SimCard;

const TERMINAL: [u8; 6] = [0x00, 0x00, 0x00, 0x00, 0x00, 0x01];

fn request(amount: u32) -> LoadRequest {
    LoadRequest {
        key_index: TEST_PURSE_KEY_INDEX,
        amount,
        terminal_id: TERMINAL,
        date: [0x20, 0x26, 0x12, 0x03],
        time: [0x14, 0x30, 0x00],
        card: Some(CardSerial::new(PURSE_CARD_SERIAL)),
    }
}

fn card_with(balance: u32) -> PurseCard {
    purse_card().with_state(std::sync::Arc::new(std::sync::Mutex::new(
        PurseState::with_balance(balance),
    )))
}

/// Run a load, returning the outcome and the INS bytes of every command the card received.
fn load(card: &mut PurseCard, keys: &dyn PurseKeys, req: LoadRequest) -> (LoadOutcome, Vec<u8>) {
    let mut seen = Vec::new();
    let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, Infallible> {
        seen.push(apdu[1]);
        Ok(card.transmit(apdu))
    };
    let outcome = run_load(&mut transmit, keys, req).unwrap();
    (outcome, seen)
}

fn recover_on(
    card: &mut PurseCard,
    pending: PendingLoad,
) -> Result<Resolution, PurseCardError<Infallible>> {
    let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, Infallible> { Ok(card.transmit(apdu)) };
    recover(
        &mut transmit,
        &test_purse_keys(),
        pending,
        TEST_PURSE_KEY_INDEX,
    )
}

fn balance_of(card: &mut PurseCard) -> u32 {
    let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, Infallible> { Ok(card.transmit(apdu)) };
    read_balance(&mut transmit).unwrap().balance
}

/// The card pulled out and inserted again: a new instance on the same persistent memory.
fn reinserted(card: &PurseCard) -> PurseCard {
    purse_card().with_state(card.state())
}

fn unknown(outcome: LoadOutcome) -> PendingLoad {
    match outcome {
        LoadOutcome::Unknown { pending, cause } => {
            assert_eq!(cause, UnknownCause::CardGone);
            pending
        }
        other => panic!("expected an unknown outcome, got {other:?}"),
    }
}

#[test]
fn a_load_credits_the_card_with_a_tac_that_verifies_and_logs_it() {
    let mut card = card_with(1_000);

    let (outcome, _) = load(&mut card, &test_purse_keys(), request(500));

    let LoadOutcome::Completed {
        new_balance,
        tac,
        online_serial,
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    assert_eq!((new_balance, online_serial), (1_500, 0));
    let tac_key = keys::diversify(
        &TEST_PURSE_TAC_MASTER_KEY,
        &CardSerial::new(PURSE_CARD_SERIAL),
    );
    let input = TacInput {
        new_balance: 1_500,
        online_serial: 0,
        amount: 500,
        terminal_id: TERMINAL,
        date: [0x20, 0x26, 0x12, 0x03],
        time: [0x14, 0x30, 0x00],
    };
    assert_eq!(tac, keys::load_tac(&tac_key, &input));
    assert_eq!(balance_of(&mut card), 1_500);
    let record = card.transmit(&Apdu::read_record(1, SFI_LOAD_LOG).to_bytes());
    let (data, sw) = split(&record);
    assert!(sw.is_success());
    let record = LoadLogRecord::parse(data).unwrap();
    assert_eq!(
        (record.online_serial, record.amount, record.transaction_type),
        (0, 500, 2)
    );
    assert_eq!(
        (record.terminal_id, record.date, record.time),
        (TERMINAL, input.date, input.time)
    );
    assert_eq!(card.state().lock().unwrap().online_serial, 1);
}

#[test]
fn the_load_takes_three_round_trips() {
    let mut card = card_with(0);
    let keys = test_purse_keys();
    let (mut session, mut batch) = LoadSession::start(request(100)).unwrap();
    let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, Infallible> { Ok(card.transmit(apdu)) };
    let mut trips = 1;

    let outcome = loop {
        let responses = batch::execute(&batch, &mut transmit).unwrap();
        match session.advance(&responses, &keys).unwrap() {
            LoadNext::Send(next) => {
                trips += 1;
                batch = next;
            }
            LoadNext::Done(outcome) => break outcome,
        }
    };

    assert!(matches!(
        outcome,
        LoadOutcome::Completed {
            new_balance: 100,
            ..
        }
    ));
    assert_eq!(trips, 3);
    assert_eq!(session.advance(&[], &keys).unwrap_err(), PurseError::Over);
}

#[test]
fn a_card_with_other_keys_fails_mac1_and_never_sees_credit_for_load() {
    let mut card = card_with(1_000).with_card_keys([0x5A; 16], [0xA5; 16]);

    let (outcome, seen) = load(&mut card, &test_purse_keys(), request(500));

    assert_eq!(outcome, LoadOutcome::Refused(Refusal::BadMac1));
    assert!(seen.contains(&0x50) && !seen.contains(&0x52), "{seen:02X?}");
    assert_eq!(balance_of(&mut card), 1_000);
}

#[test]
fn a_bad_mac2_is_rejected_with_9302_and_nothing_is_committed() {
    let mut card = card_with(1_000);
    let keys = test_purse_keys();
    let (mut session, mut batch) = LoadSession::start(request(500)).unwrap();
    let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, Infallible> { Ok(card.transmit(apdu)) };
    for _ in 0..2 {
        let responses = batch::execute(&batch, &mut transmit).unwrap();
        let LoadNext::Send(next) = session.advance(&responses, &keys).unwrap() else {
            panic!("the load ended early");
        };
        batch = next;
    }
    assert!(session.credit_sent());
    // MAC2 is the 4 bytes before Le.
    let credit = &mut batch.groups[0].apdus[0];
    let at = credit.len() - 2;
    credit[at] ^= 0x01;

    let responses = batch::execute(&batch, &mut transmit).unwrap();
    let outcome = session.advance(&responses, &keys).unwrap();

    assert_eq!(responses[0][0], vec![0x93, 0x02]);
    assert!(matches!(
        outcome,
        LoadNext::Done(LoadOutcome::Refused(Refusal::MacRejected))
    ));
    let state = card.state().lock().unwrap().clone();
    assert_eq!(
        (state.balance, state.online_serial, state.log.len()),
        (1_000, 0, 0)
    );
}

#[test]
fn a_card_pulled_after_the_commit_is_unknown_then_recovery_finds_the_load() {
    let mut card = card_with(1_000);
    card.tear_next_credit(Tear::AfterCommit);

    let (outcome, _) = load(&mut card, &test_purse_keys(), request(500));
    let pending = unknown(outcome);
    let mut again = reinserted(&card);
    let resolution = recover_on(&mut again, pending.clone()).unwrap();

    let stored = card.state().lock().unwrap().last_proof.unwrap();
    assert_eq!(
        resolution,
        Resolution::Committed {
            tac: stored.2,
            balance: 1_500
        }
    );
    assert_eq!(
        (pending.online_serial, pending.old_balance, pending.amount),
        (0, 1_000, 500)
    );
    assert_eq!(balance_of(&mut again), 1_500);
}

#[test]
fn a_card_pulled_before_the_commit_is_unknown_then_recovery_says_not_committed() {
    let mut card = card_with(1_000);
    card.tear_next_credit(Tear::BeforeCommit);

    let (outcome, seen) = load(&mut card, &test_purse_keys(), request(500));
    let pending = unknown(outcome);
    let resolution = recover_on(&mut reinserted(&card), pending).unwrap();

    assert!(seen.contains(&0x52));
    assert_eq!(resolution, Resolution::NotCommitted { balance: 1_000 });
    assert_eq!(card.state().lock().unwrap().online_serial, 0);
}

#[test]
fn a_torn_load_whose_proof_was_replaced_is_undetermined_with_the_log_record() {
    let mut card = card_with(1_000);
    card.tear_next_credit(Tear::AfterCommit);
    let pending = unknown(load(&mut card, &test_purse_keys(), request(500)).0);
    let mut again = reinserted(&card);
    let (later, _) = load(&mut again, &test_purse_keys(), request(100));
    assert!(
        matches!(
            later,
            LoadOutcome::Completed {
                online_serial: 1,
                ..
            }
        ),
        "{later:?}"
    );

    let resolution = recover_on(&mut again, pending.clone()).unwrap();

    let Resolution::Undetermined {
        balance,
        online_serial,
        log_record,
    } = resolution
    else {
        panic!("{resolution:?}");
    };
    assert_eq!((balance, online_serial), (1_600, Some(2)));
    assert_eq!(
        log_record.map(|r| (r.online_serial, r.amount)),
        Some((0, 500))
    );
}

#[test]
fn the_state_survives_removal_and_reinsertion() {
    let mut card = card_with(0);
    assert!(matches!(
        load(&mut card, &test_purse_keys(), request(250)).0,
        LoadOutcome::Completed { .. }
    ));
    let handle = card.state();
    drop(card);

    let mut same = purse_card().with_state(handle);

    assert_eq!(balance_of(&mut same), 250);
    assert!(matches!(
        load(&mut same, &test_purse_keys(), request(250)).0,
        LoadOutcome::Completed {
            new_balance: 500,
            online_serial: 1,
            ..
        }
    ));
}

#[test]
fn the_load_session_dies_on_reset_on_select_and_after_a_credit() {
    let keys = test_purse_keys();
    for interruption in ["reset", "select", "credit"] {
        let mut card = card_with(1_000);
        let (mut session, mut batch) = LoadSession::start(request(500)).unwrap();
        for _ in 0..2 {
            let mut transmit =
                |apdu: &[u8]| -> Result<Vec<u8>, Infallible> { Ok(card.transmit(apdu)) };
            let responses = batch::execute(&batch, &mut transmit).unwrap();
            let LoadNext::Send(next) = session.advance(&responses, &keys).unwrap() else {
                panic!("the load ended early");
            };
            batch = next;
        }
        match interruption {
            "reset" => card.reset(),
            "select" => drop(card.transmit(&select_purse().to_bytes())),
            _ => {
                // The same CREDIT FOR LOAD twice: the first uses the session up.
                let first = card.transmit(&batch.groups[0].apdus[0]);
                assert_eq!(first[first.len() - 2..], [0x90, 0x00]);
            }
        }

        let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, Infallible> { Ok(card.transmit(apdu)) };
        let responses = batch::execute(&batch, &mut transmit).unwrap();
        let outcome = session.advance(&responses, &keys).unwrap();

        assert_eq!(responses[0][0], vec![0x69, 0x01], "{interruption}");
        assert!(
            matches!(
                outcome,
                LoadNext::Done(LoadOutcome::Refused(Refusal::WrongState))
            ),
            "{interruption}: {outcome:?}"
        );
        let expected = if interruption == "credit" {
            1_500
        } else {
            1_000
        };
        assert_eq!(
            card.state().lock().unwrap().balance,
            expected,
            "{interruption}"
        );
    }
}

#[test]
fn refusals_for_ceiling_key_index_wrong_card_and_missing_keys() {
    let mut card = card_with(900).with_ceiling(1_000);
    assert_eq!(
        load(&mut card, &test_purse_keys(), request(200)).0,
        LoadOutcome::Refused(Refusal::BalanceCeiling)
    );

    let other_index = LoadRequest {
        key_index: 2,
        ..request(50)
    };
    assert_eq!(
        load(&mut card, &test_purse_keys(), other_index).0,
        LoadOutcome::Refused(Refusal::KeyIndexNotSupported)
    );

    let other_card = LoadRequest {
        card: Some(CardSerial::new([9; 8])),
        ..request(50)
    };
    let (outcome, seen) = load(&mut card, &test_purse_keys(), other_card);
    assert_eq!(outcome, LoadOutcome::Refused(Refusal::WrongCard));
    assert!(!seen.contains(&0x50));

    let no_keys = MasterKeys::new(7, [0; 16], [0; 16]);
    assert_eq!(
        load(&mut card, &no_keys, request(50)).0,
        LoadOutcome::Refused(Refusal::NoKey)
    );
    assert_eq!(
        LoadSession::start(request(0)).unwrap_err(),
        PurseError::ZeroAmount
    );
    assert_eq!(card.state().lock().unwrap().balance, 900);
}

#[test]
fn a_card_gone_before_credit_is_a_refusal_and_after_it_unknown() {
    let mut card = card_with(0);
    let mut gone = |_: &[u8]| -> Result<Vec<u8>, &'static str> { Err("reader unplugged") };
    assert_eq!(
        run_load(&mut gone, &test_purse_keys(), request(10)).unwrap(),
        LoadOutcome::Refused(Refusal::CardGone)
    );

    let mut count = 0;
    let mut vanishing = |apdu: &[u8]| -> Result<Vec<u8>, Infallible> {
        count += 1;
        // The fifth command is CREDIT FOR LOAD: the card runs it, the answer is lost.
        let answer = card.transmit(apdu);
        Ok(if count == 5 { Vec::new() } else { answer })
    };
    let outcome = run_load(&mut vanishing, &test_purse_keys(), request(10)).unwrap();
    assert!(matches!(
        outcome,
        LoadOutcome::Unknown {
            cause: UnknownCause::CardGone,
            ..
        }
    ));
}

#[test]
fn credit_answers_that_do_not_prove_the_load_are_unknown() {
    let pending = PendingLoad {
        card_serial: CardSerial::new(PURSE_CARD_SERIAL),
        online_serial: 4,
        old_balance: 100,
        amount: 50,
        terminal_id: TERMINAL,
        date: [0x20, 0x26, 0x12, 0x03],
        time: [0x14, 0x30, 0x00],
        mac2: [0; 4],
    };
    let tac_key = [0x33; 16];
    let good = keys::load_tac(&tac_key, &pending.tac_input().unwrap());
    let with_sw = |data: &[u8], sw: [u8; 2]| [data, &sw].concat();

    let cases = [
        (
            with_sw(&[1, 2, 3, 4], [0x90, 0x00]),
            Some(UnknownCause::TacMismatch),
        ),
        (
            with_sw(&good[..3], [0x90, 0x00]),
            Some(UnknownCause::Malformed),
        ),
        (
            with_sw(&[], [0x65, 0x81]),
            Some(UnknownCause::UncertainStatus(StatusWord(0x6581))),
        ),
        (with_sw(&[], [0x93, 0x02]), None),
    ];
    for (raw, expected) in cases {
        let outcome = credit_outcome(Some(&raw), pending.clone(), &tac_key);
        match expected {
            Some(cause) => assert_eq!(
                outcome,
                LoadOutcome::Unknown {
                    pending: pending.clone(),
                    cause
                }
            ),
            None => assert_eq!(outcome, LoadOutcome::Refused(Refusal::MacRejected)),
        }
    }
    assert_eq!(
        credit_outcome(
            Some(&with_sw(&good, [0x90, 0x00])),
            pending.clone(),
            &tac_key
        ),
        LoadOutcome::Completed {
            new_balance: 150,
            tac: good,
            online_serial: 4
        }
    );
}

#[test]
fn recovery_on_another_card_or_a_non_purse_is_an_error() {
    let pending = PendingLoad {
        card_serial: CardSerial::new([7; 8]),
        online_serial: 0,
        old_balance: 0,
        amount: 1,
        terminal_id: TERMINAL,
        date: [0; 4],
        time: [0; 3],
        mac2: [0; 4],
    };
    assert!(matches!(
        recover_on(&mut card_with(0), pending.clone()),
        Err(PurseCardError::Purse(PurseError::WrongCard))
    ));

    let mut emv = crate::sim::load("unionpay-debit").unwrap();
    let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, Infallible> { Ok(emv.transmit(apdu)) };
    assert!(matches!(
        recover(&mut transmit, &test_purse_keys(), pending, 1),
        Err(PurseCardError::Purse(PurseError::NoPurse(_)))
    ));
    assert!(matches!(
        read_balance(&mut transmit),
        Err(PurseCardError::Purse(PurseError::NoPurse(_)))
    ));
}

#[test]
fn the_purse_loads_by_name_and_debug_output_masks_the_serial() {
    let mut card = crate::sim::load(crate::sim::purse::PURSE_CARD).unwrap();
    let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, Infallible> { Ok(card.transmit(apdu)) };
    let snapshot = read_balance(&mut transmit).unwrap();
    let full = hex::encode_upper(PURSE_CARD_SERIAL);

    let shown = [
        format!("{snapshot:?}"),
        format!("{:?}", unknown_pending()),
        format!("{:?}", card_with(0)),
    ];

    for text in shown {
        assert!(
            !text.contains(&full) && text.contains(&full[12..]),
            "{text}"
        );
    }
    assert!(crate::sim::catalogue()
        .iter()
        .all(|e| e.name != crate::sim::purse::PURSE_CARD));
}

fn unknown_pending() -> PendingLoad {
    let mut card = card_with(0);
    card.tear_next_credit(Tear::AfterCommit);
    unknown(load(&mut card, &test_purse_keys(), request(1)).0)
}

#[test]
fn responses_that_do_not_match_the_batch_are_refused() {
    let keys = test_purse_keys();
    let (mut session, _) = LoadSession::start(request(10)).unwrap();

    let outcome = session
        .advance(&[vec![vec![0x90, 0x00]], vec![]], &keys)
        .unwrap();

    assert!(matches!(
        outcome,
        LoadNext::Done(LoadOutcome::Refused(Refusal::Malformed(_)))
    ));
    assert!(balance_from(&[vec![vec![0x90]]]).is_err());
    assert!(balance_from(&[vec![vec![0x90, 0x00], vec![0x6A, 0x82], vec![0x90, 0x00]]]).is_err());
}

/// Run the inquiry batch on `card` and read its result; also the INS bytes the card received.
fn inquire_on(
    card: &mut dyn SimCard,
    key_index: u8,
    keys: &dyn PurseKeys,
) -> (Result<Inquiry, InquiryError>, Vec<u8>) {
    let mut seen = Vec::new();
    let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, Infallible> {
        seen.push(apdu[1]);
        Ok(card.transmit(apdu))
    };
    let responses = batch::execute(&inquiry_batch(key_index, &TERMINAL), &mut transmit).unwrap();
    let result = inquiry_from(&responses, key_index, &TERMINAL, keys);
    (result, seen)
}

fn inquire(card: &mut dyn SimCard) -> Result<Inquiry, InquiryError> {
    inquire_on(card, TEST_PURSE_KEY_INDEX, &test_purse_keys()).0
}

/// The inquiry's answers from a fresh `purse-card` with this balance.
fn inquiry_responses(balance: u32) -> Vec<Vec<Vec<u8>>> {
    let mut card = card_with(balance);
    let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, Infallible> { Ok(card.transmit(apdu)) };
    let batch = inquiry_batch(TEST_PURSE_KEY_INDEX, &TERMINAL);
    batch::execute(&batch, &mut transmit).unwrap()
}

fn inquiry_of(responses: &[Vec<Vec<u8>>]) -> Result<Inquiry, InquiryError> {
    inquiry_from(
        responses,
        TEST_PURSE_KEY_INDEX,
        &TERMINAL,
        &test_purse_keys(),
    )
}

#[test]
fn an_inquiry_authenticates_balance_and_online_serial_in_one_batch_and_credits_nothing() {
    let state = PurseState {
        online_serial: 3,
        ..PurseState::with_balance(1_234)
    };
    let mut card = purse_card().with_state(std::sync::Arc::new(std::sync::Mutex::new(state)));
    let batch = inquiry_batch(TEST_PURSE_KEY_INDEX, &TERMINAL);

    let (inquiry, seen) = inquire_on(&mut card, TEST_PURSE_KEY_INDEX, &test_purse_keys());

    let inquiry = inquiry.unwrap();
    assert_eq!((inquiry.balance, inquiry.online_serial), (1_234, 3));
    assert_eq!(
        inquiry.info.card_serial(),
        CardSerial::new(PURSE_CARD_SERIAL)
    );
    assert_eq!(inquiry.info.issuer_id, TEST_PURSE_ISSUER_ID);
    assert_eq!(batch.groups.len(), 1);
    assert_eq!(seen, [0xA4, 0xB0, 0x5C, 0x50]);
    assert_eq!(
        batch.groups[0].apdus[3],
        initialize_for_load(TEST_PURSE_KEY_INDEX, 0, &TERMINAL).to_bytes()
    );
    // Nothing moved, and the next load runs under the serial the inquiry reported.
    let (outcome, _) = load(&mut card, &test_purse_keys(), request(100));
    assert!(
        matches!(
            outcome,
            LoadOutcome::Completed {
                new_balance: 1_334,
                online_serial: 3,
                ..
            }
        ),
        "{outcome:?}"
    );
}

#[test]
fn the_second_demo_purse_answers_an_inquiry_with_its_own_serial() {
    let mut card = crate::sim::load(PURSE_CARD_2).unwrap();

    let inquiry = inquire(card.as_mut()).unwrap();

    assert_eq!(
        inquiry.info.card_serial(),
        CardSerial::new(PURSE_CARD_2_SERIAL)
    );
    assert_eq!((inquiry.balance, inquiry.online_serial), (0, 0));
}

#[test]
fn a_clone_without_the_issuers_keys_fails_mac1() {
    let mut clone = crate::sim::load(PURSE_CLONE).unwrap();

    let result = inquire(clone.as_mut());

    assert_eq!(result, Err(InquiryError::BadMac1));
    // It shows the genuine card's public data: only MAC1 tells them apart.
    let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, Infallible> { Ok(clone.transmit(apdu)) };
    let snapshot = read_balance(&mut transmit).unwrap();
    assert_eq!(
        snapshot.info.card_serial(),
        CardSerial::new(PURSE_CARD_SERIAL)
    );
    assert_eq!(snapshot.info.issuer_id, TEST_PURSE_ISSUER_ID);
}

#[test]
fn a_foreign_purse_fails_mac1_with_our_keys_and_verifies_with_its_issuers() {
    let mut foreign = crate::sim::load(PURSE_FOREIGN).unwrap();
    let its_issuer = MasterKeys::new(
        TEST_PURSE_KEY_INDEX,
        FOREIGN_PURSE_LOAD_MASTER_KEY,
        FOREIGN_PURSE_TAC_MASTER_KEY,
    );

    let ours = inquire(foreign.as_mut());
    let (theirs, _) = inquire_on(foreign.as_mut(), TEST_PURSE_KEY_INDEX, &its_issuer);

    assert_eq!(ours, Err(InquiryError::BadMac1));
    let theirs = theirs.unwrap();
    assert_eq!(theirs.info.issuer_id, FOREIGN_ISSUER_ID);
    assert_eq!(
        theirs.info.card_serial(),
        CardSerial::new(PURSE_FOREIGN_SERIAL)
    );
}

#[test]
fn a_card_that_is_not_a_purse_is_not_a_purse_and_never_sees_initialize_for_load() {
    let mut emv = crate::sim::load("unionpay-debit").unwrap();

    let (result, seen) = inquire_on(emv.as_mut(), TEST_PURSE_KEY_INDEX, &test_purse_keys());

    assert_eq!(
        result,
        Err(InquiryError::NotAPurse {
            select: StatusWord(0x6A82)
        })
    );
    assert_eq!(seen, [0xA4]);
}

#[test]
fn a_card_that_selects_another_application_is_not_a_purse() {
    // Answers SELECT with an FCI naming another DF, as a partial-name match would.
    let other = crate::tlv::encode(
        0x6F,
        &crate::tlv::encode(
            0x84,
            &[0xA0, 0x00, 0x00, 0x00, 0x03, 0x86, 0x98, 0x07, 0x02],
        ),
    );
    let mut responses = inquiry_responses(0);
    responses[0][0] = [other.as_slice(), &[0x90, 0x00]].concat();

    assert_eq!(
        inquiry_of(&responses),
        Err(InquiryError::NotAPurse {
            select: StatusWord(0x9000)
        })
    );
}

#[test]
fn a_key_index_the_store_does_not_hold_is_no_key_and_one_the_card_lacks_is_its_status_word() {
    let mut card = card_with(500);
    let other_index = MasterKeys::new(7, TEST_PURSE_LOAD_MASTER_KEY, TEST_PURSE_TAC_MASTER_KEY);

    let (no_key, _) = inquire_on(&mut card, TEST_PURSE_KEY_INDEX, &other_index);
    let (unsupported, _) = inquire_on(&mut card, 7, &other_index);

    assert_eq!(no_key, Err(InquiryError::NoKey));
    assert_eq!(
        unsupported,
        Err(InquiryError::Card {
            command: "INITIALIZE FOR LOAD",
            sw: StatusWord(0x9403)
        })
    );
}

#[test]
fn a_tampered_balance_or_mac1_is_refused() {
    let good = inquiry_responses(700);
    assert_eq!(inquiry_of(&good).map(|i| i.balance), Ok(700));

    let mut balance = good.clone();
    balance[0][2] = vec![0x00, 0x00, 0x27, 0x10, 0x90, 0x00];
    let mut old_balance = good.clone();
    old_balance[0][3][3] ^= 0x01;
    let mut mac1 = good.clone();
    mac1[0][3][15] ^= 0x01;

    assert_eq!(inquiry_of(&balance), Err(InquiryError::BalanceMismatch));
    assert_eq!(inquiry_of(&old_balance), Err(InquiryError::BadMac1));
    assert_eq!(inquiry_of(&mac1), Err(InquiryError::BadMac1));
}

#[test]
fn garbage_and_short_inquiry_answers_are_errors_never_panics() {
    let good = inquiry_responses(700);
    let malformed =
        |result: Result<Inquiry, InquiryError>| matches!(result, Err(InquiryError::Malformed(_)));
    assert!(malformed(inquiry_of(&[])));
    assert!(malformed(inquiry_of(&[vec![]])));
    assert!(malformed(inquiry_of(&[good[0].clone(), good[0].clone()])));
    assert!(malformed(inquiry_of(&[good[0][..3].to_vec()])));

    // Every answer cut short at every length, and with a byte added. SELECT's FCI is not needed
    // and the public information may be longer: those two may still pass, the rest may not.
    for (at, answer) in good[0].iter().enumerate() {
        let (data, sw) = answer.split_at(answer.len() - 2);
        let cut = (0..answer.len()).map(|n| (answer[..n].to_vec(), at > 0 || n < 2));
        let longer = [([data, &[0xFF], sw].concat(), at > 1)];
        for (variant, must_fail) in cut.chain(longer) {
            let mut responses = good.clone();
            responses[0][at] = variant;
            let result = inquiry_of(&responses);
            assert!(
                result.is_err() || !must_fail,
                "answer {at} changed, still {result:?}"
            );
        }
    }
    let mut status = good.clone();
    status[0][2] = vec![0x6A, 0x81];
    status[0].truncate(3);
    assert_eq!(
        inquiry_of(&status),
        Err(InquiryError::Card {
            command: "GET BALANCE",
            sw: StatusWord(0x6A81)
        })
    );
}
