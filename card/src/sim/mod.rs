//! The card simulator: cards that speak real APDUs, and the catalogue of them
//!
//! - Replay cards ([`ReplayCard`]) answer from recorded sessions of real and scheme test cards
//!   (`card/catalogue/*.json`, embedded at build time).
//! - Synthetic cards are small card models (`model`): they decode commands and answer from a file
//!   system and state, each with its own test number (Luhn-valid, except `unionpay-no-luhn`'s:
//!   UnionPay numbers need not be).
//! - Broken cards ([`BROKEN_CARDS`]: `broken-check-digit`, a Visa card whose number fails its
//!   check digit) load by name for the tests of failed reads, and are not in the catalogue of
//!   cards that read.
//! - [`Misbehave`] wraps any card to answer slowly, vanish mid-command or send malformed TLV.
//! - [`purse::PurseCard`] is a PBOC e-purse with persistent state and torn writes; the demo purses
//!   ([`purse::DEMO_PURSES`]: `purse-card`, `purse-card-2`, `purse-foreign`, `purse-clone`) load
//!   by name but are not in the payment-card catalogue.
//! - [`vpcd`] puts any of them into a real PC/SC reader (vsmartcard's virtual reader).

pub mod issuer;
mod misbehave;
pub(crate) mod model;
pub mod purse;
mod replay;
mod synthetic;
pub mod vpcd;

use std::fmt;

pub use misbehave::{Misbehave, Vanish};
pub use replay::{Expected, ReplayCard};

/// A simulated card. `transmit` takes a command APDU and returns data ‖ SW1 SW2; an empty
/// response means the card vanished mid-command.
pub trait SimCard: Send {
    fn name(&self) -> &str;
    fn atr(&self) -> Vec<u8>;
    fn transmit(&mut self, apdu: &[u8]) -> Vec<u8>;
    /// Power cycle: volatile state (selection, pending data) is lost.
    fn reset(&mut self);
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("recording is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("recording has a field that is not hex: {0}")]
    Hex(String),
    #[error("recording is inconsistent: {0}")]
    Recording(String),
}

/// One card of the catalogue and what a correct read finds on it.
#[derive(Clone, PartialEq, Eq)]
pub struct CatalogueEntry {
    pub name: &'static str,
    pub label: &'static str,
    /// PAN digits for bank cards, UID hex (upper case) otherwise.
    pub expected_number: &'static str,
    pub bank: bool,
    /// Expected expiry, YYMM (bank cards).
    pub expiry: Option<&'static str>,
    /// Expected application identifier, hex (bank cards).
    pub aid: Option<&'static str>,
}

/// Test numbers, but numbers all the same: Debug masks them.
impl fmt::Debug for CatalogueEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatalogueEntry")
            .field("name", &self.name)
            .field("label", &self.label)
            .field("expected_number", &crate::pan::mask(self.expected_number))
            .field("bank", &self.bank)
            .field("expiry", &self.expiry)
            .field("aid", &self.aid)
            .finish()
    }
}

const fn bank(
    name: &'static str,
    label: &'static str,
    number: &'static str,
    expiry: &'static str,
    aid: &'static str,
) -> CatalogueEntry {
    CatalogueEntry {
        name,
        label,
        expected_number: number,
        bank: true,
        expiry: Some(expiry),
        aid: Some(aid),
    }
}

/// The recorded sessions, embedded. Their `expected` block must agree with [`CATALOGUE`] (tested).
const RECORDINGS: &[(&str, &str)] = &[
    (
        "visa_debit_de_comdirect",
        include_str!("../../catalogue/visa_debit_de_comdirect.json"),
    ),
    (
        "visa_credit_de_dkb",
        include_str!("../../catalogue/visa_credit_de_dkb.json"),
    ),
    (
        "visa_credit_de_comdirect",
        include_str!("../../catalogue/visa_credit_de_comdirect.json"),
    ),
    (
        "mc_debit_de_aab",
        include_str!("../../catalogue/mc_debit_de_aab.json"),
    ),
    (
        "mc_credit_de_db",
        include_str!("../../catalogue/mc_credit_de_db.json"),
    ),
    (
        "unionpay_uicc_contact_pse",
        include_str!("../../catalogue/unionpay_uicc_contact_pse.json"),
    ),
    (
        "amex_epay_test_cda",
        include_str!("../../catalogue/amex_epay_test_cda.json"),
    ),
    (
        "mc_mchip_test_contact",
        include_str!("../../catalogue/mc_mchip_test_contact.json"),
    ),
    (
        "visa_test_contact_fmt1",
        include_str!("../../catalogue/visa_test_contact_fmt1.json"),
    ),
];

const CATALOGUE: &[CatalogueEntry] = &[
    bank(
        "visa_debit_de_comdirect",
        "Visa debit (DE), contactless, recorded",
        "4761730082770572",
        "2507",
        "A0000000031010",
    ),
    bank(
        "visa_credit_de_dkb",
        "Visa credit (DE), contactless, recorded",
        "4761735025003981",
        "2609",
        "A0000000031010",
    ),
    bank(
        "visa_credit_de_comdirect",
        "Visa credit (DE), contactless, recorded",
        "4761730122270054",
        "2506",
        "A0000000031010",
    ),
    bank(
        "mc_debit_de_aab",
        "Debit Mastercard (DE), contactless, recorded",
        "5413330000160110",
        "2403",
        "A0000000041010",
    ),
    bank(
        "mc_credit_de_db",
        "Mastercard credit (DE), contactless, recorded",
        "5413336534958036",
        "2002",
        "A0000000041010",
    ),
    bank(
        "unionpay_uicc_contact_pse",
        "UnionPay test card, contact with PSE, recorded",
        "6210948000000011",
        "3010",
        "A000000333010102",
    ),
    bank(
        "amex_epay_test_cda",
        "American Express test card, contactless, recorded",
        "374245001741007",
        "1812",
        "A000000025010403",
    ),
    bank(
        "mc_mchip_test_contact",
        "Mastercard M/Chip test card, contact, recorded",
        "5413330089600044",
        "1412",
        "A0000000041010",
    ),
    bank(
        "visa_test_contact_fmt1",
        "Visa test card, contact, recorded",
        "4761340000000050",
        "1712",
        "A0000000031010",
    ),
    bank(
        "unionpay-debit",
        "UnionPay debit, contactless",
        synthetic::UNIONPAY_DEBIT_PAN,
        "2912",
        "A000000333010101",
    ),
    bank(
        "unionpay-credit",
        "UnionPay credit and debit, contactless",
        synthetic::UNIONPAY_CREDIT_PAN,
        "2806",
        "A000000333010102",
    ),
    bank(
        "chained-t0",
        "Visa credit, contact T=0 (61xx chains, 6Cxx)",
        synthetic::CHAINED_T0_PAN,
        "2711",
        "A0000000031010",
    ),
    bank(
        "ppse-missing",
        "UnionPay debit without PPSE or PSE, contact",
        synthetic::PPSE_MISSING_PAN,
        "3003",
        "A000000333010101",
    ),
    CatalogueEntry {
        name: "campus-card",
        label: "Campus card (no payment application), contactless",
        expected_number: synthetic::CAMPUS_UID,
        bank: false,
        expiry: None,
        aid: None,
    },
    bank(
        "unionpay-pse-multi",
        "UnionPay debit, e-cash and quasi-credit, contact with PSE",
        synthetic::UNIONPAY_PSE_MULTI_PAN,
        "3107",
        "A000000333010101",
    ),
    bank(
        "unionpay-19-digits",
        "UnionPay credit, 19 digits, contactless without PPSE",
        synthetic::UNIONPAY_19_DIGITS_PAN,
        "3205",
        "A000000333010102",
    ),
    bank(
        "unionpay-two-priorities",
        "UnionPay e-cash and debit of different priority, contactless",
        synthetic::UNIONPAY_TWO_PRIORITIES_PAN,
        "3011",
        "A000000333010101",
    ),
    bank(
        "unionpay-no-luhn",
        "UnionPay debit whose number fails Luhn (valid for UnionPay), contactless",
        synthetic::UNIONPAY_NO_LUHN_PAN,
        "3102",
        "A000000333010101",
    ),
];

/// Cards that load by name but give no usable number: not in the catalogue.
pub const BROKEN_CARDS: &[&str] = &["broken-check-digit"];

/// Every card [`load`] knows, recorded ones first.
pub fn catalogue() -> Vec<CatalogueEntry> {
    CATALOGUE.to_vec()
}

/// A fresh card by catalogue name, a broken card by one of [`BROKEN_CARDS`], or a demo purse by
/// one of [`purse::DEMO_PURSES`].
pub fn load(name: &str) -> Option<Box<dyn SimCard>> {
    if let Some((_, json)) = RECORDINGS.iter().find(|(n, _)| *n == name) {
        return ReplayCard::from_json(json)
            .ok()
            .map(|c| Box::new(c) as Box<dyn SimCard>);
    }
    Some(match name {
        "unionpay-debit" => Box::new(synthetic::unionpay_debit()),
        "unionpay-credit" => Box::new(synthetic::unionpay_credit()),
        "chained-t0" => Box::new(synthetic::chained_t0()),
        "ppse-missing" => Box::new(synthetic::ppse_missing()),
        "campus-card" => Box::new(synthetic::campus_card()),
        "unionpay-pse-multi" => Box::new(synthetic::unionpay_pse_multi()),
        "unionpay-19-digits" => Box::new(synthetic::unionpay_19_digits()),
        "unionpay-two-priorities" => Box::new(synthetic::unionpay_two_priorities()),
        "unionpay-no-luhn" => Box::new(synthetic::unionpay_no_luhn()),
        "broken-check-digit" => Box::new(synthetic::broken_check_digit()),
        _ => return purse::demo_purse(name).map(|c| Box::new(c) as Box<dyn SimCard>),
    })
}

/// A clone of an issued synthetic card, made from everything the card tells any reader (numbers,
/// records, AIP, CDOL1) but without its secret key — what a skimmed clone or a faked tap has. It
/// answers GENERATE AC like the real card, with cryptograms under a key of the cloner's own.
/// `None` for cards without keys (the recorded ones, the campus card).
pub fn cloned(name: &str) -> Option<Box<dyn SimCard>> {
    let mut card = match name {
        "unionpay-debit" => synthetic::unionpay_debit(),
        "unionpay-credit" => synthetic::unionpay_credit(),
        "chained-t0" => synthetic::chained_t0(),
        "ppse-missing" => synthetic::ppse_missing(),
        "unionpay-pse-multi" => synthetic::unionpay_pse_multi(),
        "unionpay-19-digits" => synthetic::unionpay_19_digits(),
        "unionpay-two-priorities" => synthetic::unionpay_two_priorities(),
        "unionpay-no-luhn" => synthetic::unionpay_no_luhn(),
        _ => return None,
    };
    for app in &mut card.apps {
        if let Some(key) = &mut app.icc_key {
            // Any key but the issuer's: the cloner does not have it.
            key.iter_mut().for_each(|b| *b ^= 0x5A);
        }
    }
    Some(Box::new(card))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pan::Pan;

    #[test]
    fn every_catalogue_card_loads_under_its_name() {
        for entry in catalogue() {
            let card = load(entry.name).unwrap_or_else(|| panic!("{} does not load", entry.name));
            assert_eq!(card.name(), entry.name);
            assert!(!card.atr().is_empty());
        }
        assert!(load("no-such-card").is_none());
        for name in BROKEN_CARDS {
            assert_eq!(
                load(name).map(|c| c.name().to_string()).as_deref(),
                Some(*name)
            );
            assert!(catalogue().iter().all(|e| e.name != *name), "{name}");
        }
    }

    #[test]
    fn recorded_expectations_match_the_catalogue() {
        for (name, json) in RECORDINGS {
            let card = ReplayCard::from_json(json).unwrap();
            let entry = catalogue().into_iter().find(|e| e.name == *name).unwrap();
            let expected = card.expected();
            assert_eq!(entry.expected_number, expected.pan, "{name}");
            assert_eq!(entry.expiry, Some(expected.expiry.as_str()), "{name}");
            assert_eq!(entry.aid, Some(expected.aid.as_str()), "{name}");
        }
        assert_eq!(RECORDINGS.len(), 9);
    }

    #[test]
    fn synthetic_numbers_are_distinct_valid_test_numbers() {
        let mut numbers: Vec<&str> = catalogue()
            .iter()
            .filter(|e| e.bank)
            .map(|e| e.expected_number)
            .collect();
        numbers.push(synthetic::UNIONPAY_CREDIT_CARD_DEBIT_PAN);
        numbers.push(synthetic::UNIONPAY_PSE_MULTI_QUASI_CREDIT_PAN);
        for n in &numbers {
            assert!(Pan::parse(n).is_ok(), "{}", crate::pan::mask(n));
        }
        // The one UnionPay number that does not pass Luhn, and the broken card's that must.
        let failing: Vec<&&str> = numbers
            .iter()
            .filter(|n| !crate::pan::luhn_valid(n))
            .collect();
        assert_eq!(failing, [&synthetic::UNIONPAY_NO_LUHN_PAN]);
        assert!(Pan::parse(synthetic::BROKEN_CHECK_DIGIT_PAN).is_err());
        let count = numbers.len();
        numbers.sort();
        numbers.dedup();
        assert_eq!(numbers.len(), count);
    }

    #[test]
    fn catalogue_debug_is_masked() {
        let shown = format!("{:?}", catalogue());
        assert!(!shown.contains("4761735025003981"));
        assert!(shown.contains("476173******3981"));
    }
}
