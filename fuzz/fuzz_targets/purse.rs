//! The PBOC purse host side on card answers the fuzzer bends: the kiosk inquiry (`card::purse::inquiry_from`), the balance read (`balance_from`), a load (`LoadSession::advance`), the resolution of a torn load (`RecoverySession::finish`), and the answer parsers (`PurseInfo`, `InitForLoad`, `LoadLogRecord`)
#![no_main]

use card::purse::{self, LoadNext, LoadRequest, PendingLoad, RecoverySession};
use card::sim::issuer::{test_purse_keys, TEST_PURSE_KEY_INDEX};
use card::sim::purse::{demo_purse, DEMO_PURSES};
use cardbridge_fuzz::FuzzedCard;
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

const TERMINAL_ID: [u8; 6] = [0x00, 0x00, 0x12, 0x34, 0x56, 0x78];

fuzz_target!(|data: &[u8]| {
    let mut input = Unstructured::new(data);
    let mode: u8 = input.arbitrary().unwrap_or(0);
    if mode >= 0xF0 {
        return raw_parsers(input.take_rest());
    }
    let Ok(pick) = input.choose_index(DEMO_PURSES.len()) else { return };
    let Some(sim) = demo_purse(DEMO_PURSES[pick]) else { return };
    let serial = sim.serial();
    // Zero (an exhausted input) keeps the test issuer's key index.
    let key_index = TEST_PURSE_KEY_INDEX ^ input.arbitrary::<u8>().unwrap_or(0);
    let keys = test_purse_keys();
    let mut card = FuzzedCard { card: Box::new(sim), input: &mut input };
    match mode % 4 {
        0 => {
            let Some(responses) = card.run(&purse::inquiry_batch(key_index, &TERMINAL_ID)) else { return };
            let _ = purse::inquiry_from(&responses, key_index, &TERMINAL_ID, &keys).map_err(|e| e.to_string());
        }
        1 => {
            let Some(responses) = card.run(&purse::balance_batch()) else { return };
            let _ = purse::balance_from(&responses).map_err(|e| e.to_string());
        }
        2 => {
            let amount = match card.input.arbitrary::<u32>().unwrap_or(0) {
                0 => 1_000,
                n => n,
            };
            let request = LoadRequest {
                key_index,
                amount,
                terminal_id: TERMINAL_ID,
                date: [0x20, 0x27, 0x01, 0x15],
                time: [0x10, 0x20, 0x30],
                card: card.input.arbitrary::<bool>().unwrap_or(false).then_some(serial),
            };
            let Ok((mut session, mut batch)) = purse::LoadSession::start(request) else { return };
            // Snapshot, INITIALIZE FOR LOAD, CREDIT FOR LOAD: three batches at most.
            for _ in 0..3 {
                let Some(responses) = card.run(&batch) else {
                    let _ = session.interrupted();
                    return;
                };
                match session.advance(&responses, &keys) {
                    Ok(LoadNext::Send(next)) => batch = next,
                    Ok(LoadNext::Done(outcome)) => {
                        let _ = format!("{outcome:?}");
                        assert!(session.advance(&responses, &keys).is_err(), "a finished load takes no more answers");
                        return;
                    }
                    Err(e) => {
                        let _ = e.to_string();
                        return;
                    }
                }
            }
            panic!("a load did not end after three batches");
        }
        _ => {
            let u = &mut *card.input;
            let pending = PendingLoad {
                card_serial: serial,
                online_serial: u.arbitrary().unwrap_or(0),
                old_balance: u.arbitrary().unwrap_or(0),
                amount: u.arbitrary::<u32>().unwrap_or(0).max(1),
                terminal_id: TERMINAL_ID,
                date: [0x20, 0x27, 0x01, 0x15],
                time: [0x10, 0x20, 0x30],
                mac2: u.arbitrary().unwrap_or_default(),
            };
            let (session, batch) = RecoverySession::start(pending, key_index);
            let Some(responses) = card.run(&batch) else { return };
            let _ = session.finish(&responses, &keys).map(|r| format!("{r:?}"));
        }
    }
});

/// The fixed-layout answer parsers on raw bytes.
fn raw_parsers(data: &[u8]) {
    let _ = purse::PurseInfo::parse(data).map(|info| (info.card_serial().masked(), info.to_bytes()));
    let _ = purse::InitForLoad::parse(data).map(|init| assert_eq!(init.to_bytes(), data));
    let _ = purse::LoadLogRecord::parse(data);
}
