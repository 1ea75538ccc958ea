//! The EMV read against every simulator catalogue card, through the public API only

use std::convert::Infallible;
use std::time::Duration;

use card::apdu::ExchangeError;
use card::emv::{read_card, CardIdentity, ReadCardError, ReadError, TARGET_ROUND_TRIPS};
use card::sim::{self, Misbehave, SimCard, Vanish};

type ReadResult = Result<(CardIdentity, usize), ReadCardError<Infallible>>;

/// Read a card, recording every command it received.
fn read(card: &mut dyn SimCard) -> (ReadResult, Vec<Vec<u8>>) {
    let atr = card.atr();
    let mut seen = Vec::new();
    let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, Infallible> {
        seen.push(apdu.to_vec());
        Ok(card.transmit(apdu))
    };
    let result = read_card(&atr, &mut transmit);
    (result, seen)
}

#[test]
fn reads_every_catalogue_card_within_three_round_trips() {
    let catalogue = sim::catalogue();
    assert_eq!(catalogue.len(), 18);
    for entry in catalogue {
        let mut card = sim::load(entry.name).unwrap();

        let (result, _) = read(card.as_mut());

        let (identity, round_trips) = result.unwrap_or_else(|e| panic!("{}: {e}", entry.name));
        assert!(
            round_trips <= TARGET_ROUND_TRIPS,
            "{} took {round_trips} round trips",
            entry.name
        );
        match identity {
            CardIdentity::Bank {
                pan, expiry, aid, ..
            } => {
                assert!(entry.bank, "{}", entry.name);
                assert!(
                    pan.as_str() == entry.expected_number,
                    "{}: read {pan}",
                    entry.name
                );
                assert_eq!(expiry.as_deref(), entry.expiry, "{}", entry.name);
                assert_eq!(
                    Some(hex::encode_upper(aid).as_str()),
                    entry.aid,
                    "{}",
                    entry.name
                );
            }
            CardIdentity::Uid { uid } => {
                assert!(!entry.bank, "{}", entry.name);
                assert_eq!(
                    hex::encode_upper(uid),
                    entry.expected_number,
                    "{}",
                    entry.name
                );
            }
        }
    }
}

#[test]
fn round_trips_per_card_are_as_designed() {
    // 2 when round 1's speculative SELECT of the known AIDs lands on the application a SELECT
    // round would pick; 3 when the directory's first choice is another one (unionpay-credit:
    // credit has priority 1, debit is tried first) or not a known AID as such (Amex lists
    // A000000025010403, the known list has A00000002501); 1 when no candidate selects at all.
    // unionpay-pse-multi: the PSE's priority 1 is debit, the first known AID; unionpay-19-digits:
    // no directory, the known list's credit is the first AID it selects; unionpay-two-priorities:
    // debit's 87 = 81 is priority 1.
    let expected = [
        ("visa_debit_de_comdirect", 2),
        ("visa_credit_de_dkb", 2),
        ("visa_credit_de_comdirect", 2),
        ("mc_debit_de_aab", 2),
        ("mc_credit_de_db", 2),
        ("unionpay_uicc_contact_pse", 2),
        ("amex_epay_test_cda", 3),
        ("mc_mchip_test_contact", 2),
        ("visa_test_contact_fmt1", 2),
        ("unionpay-debit", 2),
        ("unionpay-credit", 3),
        ("chained-t0", 2),
        ("ppse-missing", 2),
        ("campus-card", 1),
        ("unionpay-pse-multi", 2),
        ("unionpay-19-digits", 2),
        ("unionpay-two-priorities", 2),
        ("unionpay-no-luhn", 2),
    ];
    assert_eq!(expected.len(), sim::catalogue().len(), "every card listed");
    for (name, trips) in expected {
        let mut card = sim::load(name).unwrap();
        let (result, _) = read(card.as_mut());
        let took = result.unwrap().1;
        assert_eq!(took, trips, "{name}");
        assert!(took <= TARGET_ROUND_TRIPS, "{name}");
    }
}

#[test]
fn picks_the_application_with_the_highest_priority() {
    // Listed debit (priority 2) first, credit (priority 1) second: credit wins.
    let mut card = sim::load("unionpay-credit").unwrap();
    let (result, seen) = read(card.as_mut());

    let Ok((
        CardIdentity::Bank {
            aid, label, pan, ..
        },
        _,
    )) = result
    else {
        panic!("not a bank read")
    };
    assert_eq!(hex::encode_upper(aid), "A000000333010102");
    assert_eq!(label.as_deref(), Some("UnionPay Credit"));
    assert_eq!(pan.last4(), "0004");
    // Round 1 selects debit speculatively (the first known AID); its FCI is not used: credit is
    // selected again before GPO, which debit never sees.
    let selects_and_gpo: Vec<String> = seen
        .iter()
        .filter_map(|c| match c.as_slice() {
            [0x00, 0xA4, 0x04, 0x00, 0x08, aid @ ..] => {
                Some(format!("SELECT {}", hex::encode_upper(&aid[..8])))
            }
            [0x80, 0xA8, ..] => Some("GPO".to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        selects_and_gpo,
        ["SELECT A000000333010101", "SELECT A000000333010102", "GPO"],
        "debit selected only speculatively, GPO after credit"
    );

    // The recorded UnionPay card lists three applications in its PSE, priority 1 first.
    let mut card = sim::load("unionpay_uicc_contact_pse").unwrap();
    let (result, _) = read(card.as_mut());
    let Ok((CardIdentity::Bank { label, .. }, _)) = result else {
        panic!("not a bank read")
    };
    assert_eq!(label.as_deref(), Some("UICC CREDIT"));
}

#[test]
fn follows_t0_chains_and_corrects_le() {
    let mut card = sim::load("chained-t0").unwrap();
    let (result, seen) = read(card.as_mut());

    assert!(result.is_ok());
    let get_responses = seen
        .iter()
        .filter(|c| c[..4] == [0x00, 0xC0, 0x00, 0x00])
        .count();
    assert!(get_responses >= 4, "only {get_responses} GET RESPONSE");
    let corrected = seen
        .iter()
        .filter(|c| c[1] == 0xB2 && c.len() == 5 && c[4] != 0)
        .count();
    assert!(
        corrected >= 3,
        "only {corrected} READ RECORD resent with a corrected Le"
    );
}

#[test]
fn falls_back_to_known_aids_when_directories_are_missing() {
    let mut card = sim::load("ppse-missing").unwrap();
    let (result, seen) = read(card.as_mut());

    let Ok((CardIdentity::Bank { aid, .. }, trips)) = result else {
        panic!("not a bank read")
    };
    assert_eq!(hex::encode_upper(aid), "A000000333010101");
    assert_eq!(
        trips, 2,
        "round 1's speculative SELECT is the one a SELECT round would make"
    );
    assert!(seen
        .iter()
        .any(|c| hex::encode_upper(c) == "00A404000E325041592E5359532E444446303100"));
}

#[test]
fn a_card_vanishing_mid_read_is_outcome_unknown() {
    for after in [0, 3, 12] {
        let mut card = Misbehave::new(sim::load("visa_credit_de_dkb").unwrap())
            .vanish(Vanish::AfterCommands(after));
        let (result, _) = read(&mut card);
        assert!(
            matches!(
                result,
                Err(ReadCardError::Exchange(ExchangeError::ShortResponse))
            ),
            "after {after}"
        );
        assert!(card.vanished());
        card.reset();
        assert!(!card.vanished());
    }
    let mut card = Misbehave::new(sim::load("unionpay-debit").unwrap()).vanish(Vanish::OnIns {
        ins: 0xA8,
        executed: true,
    });
    assert!(matches!(
        read(&mut card).0,
        Err(ReadCardError::Exchange(ExchangeError::ShortResponse))
    ));
}

#[test]
fn malformed_tlv_is_an_error_not_a_number() {
    for name in [
        "visa_debit_de_comdirect",
        "unionpay-debit",
        "chained-t0",
        "mc_mchip_test_contact",
    ] {
        let mut card = Misbehave::new(sim::load(name).unwrap()).malformed_tlv(true);
        let (result, _) = read(&mut card);
        assert!(
            matches!(result, Err(ReadCardError::Read(ReadError::Malformed(_)))),
            "{name}: {result:?}"
        );
    }
}

#[test]
fn slow_cards_still_read() {
    let mut card =
        Misbehave::new(sim::load("campus-card").unwrap()).delay(Duration::from_millis(1));
    let (result, seen) = read(&mut card);
    assert!(matches!(result, Ok((CardIdentity::Uid { .. }, 1))));
    assert!(seen.len() > 4);
}

#[test]
fn identities_debug_masked() {
    for name in ["visa_credit_de_dkb", "campus-card"] {
        let mut card = sim::load(name).unwrap();
        let (identity, _) = read(card.as_mut()).0.unwrap();
        let shown = format!("{identity:?}");
        assert!(
            !shown.contains("4761735025003981") && !shown.contains("045A7C22E16B80"),
            "{shown}"
        );
    }
}

/// Selected application (AID, label) and number of a bank read; panics on anything else.
fn bank_read(name: &str) -> (String, Option<String>, card::pan::Pan, Vec<Vec<u8>>) {
    let mut card = sim::load(name).unwrap();
    let (result, seen) = read(card.as_mut());
    match result {
        Ok((
            CardIdentity::Bank {
                aid, label, pan, ..
            },
            _,
        )) => (hex::encode_upper(aid), label, pan, seen),
        other => panic!("{name}: {other:?}"),
    }
}

/// The SELECTs by AID and the GPOs a read sent, in order.
fn selects_and_gpo(seen: &[Vec<u8>]) -> Vec<String> {
    seen.iter()
        .filter_map(|c| match c.as_slice() {
            [0x00, 0xA4, 0x04, 0x00, len, rest @ ..]
                if rest.len() > usize::from(*len) && *len <= 16 && rest[0] == 0xA0 =>
            {
                Some(format!(
                    "SELECT {}",
                    hex::encode_upper(&rest[..usize::from(*len)])
                ))
            }
            [0x80, 0xA8, ..] => Some("GPO".to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_contact_pse_with_three_unionpay_applications_reads_the_first_by_priority() {
    let (aid, label, pan, seen) = bank_read("unionpay-pse-multi");

    assert_eq!(aid, "A000000333010101");
    assert_eq!(label.as_deref(), Some("PBOC DEBIT"));
    assert_eq!(pan.scheme(), card::pan::Brand::UnionPay);
    // The PSE directory was read before any GPO (SFI 1: READ RECORD P2 = 0C).
    let before_gpo = seen.iter().take_while(|c| c[..2] != [0x80, 0xA8]);
    let directory_reads = before_gpo
        .filter(|c| c[..2] == [0x00, 0xB2] && c[3] == 0x0C)
        .count();
    assert!(directory_reads >= 4, "{directory_reads} directory reads");
    // Round 1's speculative debit SELECT is the application used: GPO right after it.
    assert_eq!(
        selects_and_gpo(&seen).last().map(String::as_str),
        Some("GPO")
    );
    assert_eq!(
        selects_and_gpo(&seen)
            .iter()
            .filter(|s| *s == "GPO")
            .count(),
        1
    );
}

#[test]
fn without_ppse_or_pse_the_known_aid_list_finds_a_19_digit_unionpay_number() {
    let (aid, label, pan, seen) = bank_read("unionpay-19-digits");

    assert_eq!(aid, "A000000333010102");
    assert_eq!(label.as_deref(), Some("UnionPay Credit"));
    assert_eq!(pan.as_str().len(), 19);
    assert!(
        pan.as_str().starts_with("622848"),
        "in the block Discover lists as co-branded"
    );
    assert_eq!(pan.brand(), "UnionPay");
    assert_eq!(
        selects_and_gpo(&seen)[..2],
        ["SELECT A000000333010101", "SELECT A000000333010102"],
        "debit fails, credit selects"
    );
}

#[test]
fn the_priority_ignores_the_cardholder_confirmation_bit() {
    // e-cash: 87 = 02, listed first; debit: 87 = 81 (priority 1, confirmation required).
    let (aid, label, _, seen) = bank_read("unionpay-two-priorities");

    assert_eq!(aid, "A000000333010101");
    assert_eq!(label.as_deref(), Some("UnionPay Debit"));
    assert!(
        !selects_and_gpo(&seen).contains(&"SELECT A000000333010106".to_string()),
        "e-cash never selected"
    );
}

#[test]
fn a_unionpay_number_that_fails_luhn_is_read() {
    let (_, _, pan, _) = bank_read("unionpay-no-luhn");

    assert!(!card::pan::luhn_valid(pan.as_str()));
    assert_eq!(pan.brand(), "UnionPay");
    let entry = sim::catalogue()
        .into_iter()
        .find(|e| e.name == "unionpay-no-luhn")
        .unwrap();
    assert!(pan.as_str() == entry.expected_number);
}

#[test]
fn a_card_whose_number_fails_its_check_digit_gives_no_number() {
    for name in sim::BROKEN_CARDS {
        let mut card = sim::load(name).unwrap();

        let (result, _) = read(card.as_mut());

        match result {
            Err(ReadCardError::Read(e @ ReadError::InvalidNumber(card::pan::PanError::Luhn))) => {
                let reason = e.to_string();
                assert!(
                    reason.contains("Luhn") && !reason.contains("4761"),
                    "{reason}"
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}
