//! The server's card-number read, `card::emv::ReadSession` (`start_with`, then `advance` per batch), fed with the answers of a simulated card that the fuzzer bends (see `FuzzedCard`), then what the read learned (`learned`) and a predicted read from it (`start_predicted`)
#![no_main]

use card::batch::Batch;
use card::emv::{Next, ReadSession, Terminal, MAX_ROUND_TRIPS};
use cardbridge_fuzz::{payment_card_names, FuzzedCard};
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

/// Run a read to its end on `card`; the session when it gave an identity.
fn read(mut session: ReadSession, mut batch: Batch, card: &mut FuzzedCard<'_, '_>) -> Option<ReadSession> {
    // The session must end on its own within its round-trip limit.
    for _ in 0..=MAX_ROUND_TRIPS {
        let responses = card.run(&batch)?;
        match session.advance(responses) {
            Ok(Next::Send(next)) => batch = next,
            Ok(Next::Done(identity)) => {
                assert!(session.round_trips() <= MAX_ROUND_TRIPS);
                let _ = format!("{identity:?}");
                return Some(session);
            }
            Err(error) => {
                let _ = error.to_string();
                // Over means over.
                assert!(session.advance(Vec::new()).is_err());
                return None;
            }
        }
    }
    panic!("the read did not end within {MAX_ROUND_TRIPS} round trips");
}

fuzz_target!(|data: &[u8]| {
    let mut input = Unstructured::new(data);
    let names = payment_card_names();
    let Ok(pick) = input.choose_index(names.len()) else { return };
    let Some(card) = card::sim::load(names[pick]) else { return };
    // Sometimes the ATR too is the input's (contactless or not decides nothing but a flag).
    let atr = match input.arbitrary::<u8>().unwrap_or(0) {
        0xF0.. => input.arbitrary::<Vec<u8>>().unwrap_or_default(),
        _ => card.atr(),
    };
    let terminal = Terminal::at(1_780_000_000, [0x12, 0x34, 0x56, 0x78]);
    let (session, batch) = ReadSession::start_with(&atr, terminal);
    let mut first = FuzzedCard { card, input: &mut input };
    let Some(session) = read(session, batch, &mut first) else { return };
    // What the read learned from the bent answers, and the next read of the same card predicted
    // from it (bent again).
    let Some(profile) = session.learned(Some(card::emv::IIN_DIGITS)) else { return };
    let _ = format!("{profile:?}");
    let Some(card) = card::sim::load(names[pick]) else { return };
    let terminal = Terminal::at(1_780_000_100, [0x9A, 0xBC, 0xDE, 0xF0]);
    let (session, batch) = ReadSession::start_predicted(&atr, terminal, Some(&profile));
    let mut second = FuzzedCard { card, input: &mut input };
    let _ = read(session, batch, &mut second);
});
