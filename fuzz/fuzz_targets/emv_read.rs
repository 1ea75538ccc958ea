//! The server's card-number read, `card::emv::ReadSession` (`start_with`, then `advance` per batch), fed with the answers of a simulated card that the fuzzer bends (see `FuzzedCard`)
#![no_main]

use card::emv::{Next, ReadSession, Terminal, MAX_ROUND_TRIPS};
use cardbridge_fuzz::{payment_card_names, FuzzedCard};
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

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
    let (mut session, mut batch) = ReadSession::start_with(&atr, terminal);
    let mut card = FuzzedCard { card, input: &mut input };
    // The session must end on its own within its round-trip limit.
    for _ in 0..=MAX_ROUND_TRIPS {
        let Some(responses) = card.run(&batch) else { return };
        match session.advance(responses) {
            Ok(Next::Send(next)) => batch = next,
            Ok(Next::Done(identity)) => {
                assert!(session.round_trips() <= MAX_ROUND_TRIPS);
                let _ = format!("{identity:?}");
                return;
            }
            Err(error) => {
                let _ = error.to_string();
                // Over means over.
                assert!(session.advance(Vec::new()).is_err());
                return;
            }
        }
    }
    panic!("the read did not end within {MAX_ROUND_TRIPS} round trips");
});
