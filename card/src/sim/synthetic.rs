//! The synthetic catalogue cards, each a small card model with its own test number (Luhn-valid, but for the UnionPay number that is not and need not be), and the broken cards that load by name outside the catalogue

use std::collections::BTreeMap;

use crate::tlv::encode as t;

use super::issuer::icc_key;
use super::model::{bcd_pan, filler, track2, AppSpec, GpoFormat, ModelCard, UidCard};

/// ATR of a contactless card as PC/SC part 3 synthesizes it, no historical bytes.
const ATR_CONTACTLESS: &str = "3B8080010101";
/// PC/SC part 3 ATR of a MIFARE DESFire (one historical byte, `80`).
const ATR_DESFIRE: &str = "3B8180018080";
/// T=0 contact ATR: TB1 = TC1 = 0, eight historical bytes.
const ATR_CONTACT_T0: &str = "3B6800000073C84012009000";
/// Contact ATR with five historical bytes, T=0.
const ATR_CONTACT: &str = "3B6500009C11010103";

pub(crate) const UNIONPAY_DEBIT_PAN: &str = "6200000000000005";
pub(crate) const UNIONPAY_CREDIT_PAN: &str = "6205500000000000004";
/// The debit application on the `unionpay-credit` card: a reader that ignores priorities reads this.
pub(crate) const UNIONPAY_CREDIT_CARD_DEBIT_PAN: &str = "6200000000000047";
pub(crate) const CHAINED_T0_PAN: &str = "4012888888881881";
pub(crate) const PPSE_MISSING_PAN: &str = "6250947000000014";
pub(crate) const CAMPUS_UID: &str = "045A7C22E16B80";
/// Debit and e-cash of `unionpay-pse-multi` (one account, two applications).
pub(crate) const UNIONPAY_PSE_MULTI_PAN: &str = "6212340000000001";
/// The quasi-credit application of `unionpay-pse-multi`: another account.
pub(crate) const UNIONPAY_PSE_MULTI_QUASI_CREDIT_PAN: &str = "6212340000000019";
/// 19 digits, in the block Discover also lists (622126–622925): a UnionPay card all the same.
pub(crate) const UNIONPAY_19_DIGITS_PAN: &str = "6228480000000000018";
pub(crate) const UNIONPAY_TWO_PRIORITIES_PAN: &str = "6234560000000008";
/// Fails the Luhn check, as UnionPay numbers may.
pub(crate) const UNIONPAY_NO_LUHN_PAN: &str = "6217991234567890";
/// A Visa number whose check digit is wrong: what a broken or badly personalised card gives.
pub(crate) const BROKEN_CHECK_DIGIT_PAN: &str = "4761739001010011";

const AID_UNIONPAY_DEBIT: &str = "A000000333010101";
const AID_UNIONPAY_CREDIT: &str = "A000000333010102";
const AID_UNIONPAY_QUASI_CREDIT: &str = "A000000333010103";
const AID_UNIONPAY_ECASH: &str = "A000000333010106";
const AID_VISA: &str = "A0000000031010";
/// CDOL1 of the issued cards: the EMV minimum data set for a cryptogram, then terminal type and
/// CVM results.
const ISSUED_CDOL1: &str = "9F02069F03069F1A0295055F2A029A039C019F37049F35019F3403";

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_default()
}

fn record(objects: &[Vec<u8>]) -> Vec<u8> {
    t(0x70, &objects.concat())
}

/// Offline data authentication records: CA key index, issuer certificate and exponent, ICC key.
fn oda_records(sfi: u8, seed: u64) -> [((u8, u8), Vec<u8>); 2] {
    [
        (
            (sfi, 1),
            record(&[
                t(0x8F, &[0x0B]),
                t(0x9F32, &[0x03]),
                t(0x90, &filler(seed, 176)),
            ]),
        ),
        (
            (sfi, 2),
            record(&[
                t(0x9F46, &filler(seed + 1, 144)),
                t(0x9F47, &[0x03]),
                t(0x9F48, &filler(seed + 2, 42)),
            ]),
        ),
    ]
}

/// qUICS GPO extras: ATC, application cryptogram, CID, issuer application data.
fn quics_gpo_extra(seed: u64) -> Vec<u8> {
    [
        t(0x9F36, &[0x00, 0x11]),
        t(0x9F26, &filler(seed, 8)),
        t(0x9F27, &[0x80]),
        t(0x9F10, &h("07010103A00000010A0100000000007BE2F0AD")),
    ]
    .concat()
}

/// Contactless UnionPay debit: PPSE, PDOL with TTQ, amount, country and currency, GPO format 2,
/// the PAN in tag 5A of SFI 1 record 1.
pub(crate) fn unionpay_debit() -> ModelCard {
    let app = AppSpec {
        aid: h(AID_UNIONPAY_DEBIT),
        label: "UnionPay Debit",
        priority: Some(1),
        pdol: h("9F66049F02069F1A025F2A02"),
        needs_contactless_ttq: true,
        icc_key: icc_key(UNIONPAY_DEBIT_PAN, 1),
        gpo: GpoFormat::Two {
            extra: quics_gpo_extra(11),
        },
        aip: [0x7C, 0x00],
        afl: h("0801010010010200"),
        records: BTreeMap::from_iter(
            [(
                (1, 1),
                record(&[
                    t(0x5A, &bcd_pan(UNIONPAY_DEBIT_PAN)),
                    t(0x5F24, &h("291231")),
                    t(0x5F25, &h("240101")),
                    t(0x5F34, &[0x01]),
                    t(0x5F28, &h("0156")),
                    t(0x9F07, &h("FF00")),
                    t(0x8C, &h(ISSUED_CDOL1)),
                ]),
            )]
            .into_iter()
            .chain(oda_records(2, 12)),
        ),
    };
    let mut card = ModelCard::new("unionpay-debit", h(ATR_CONTACTLESS), vec![app]);
    card.ppse = true;
    card.uid = Some(h("085A31C2"));
    card
}

/// Contactless UnionPay with two applications: debit (priority 2) listed first, credit
/// (priority 1) second. The credit application is the one to read.
pub(crate) fn unionpay_credit() -> ModelCard {
    let pdol = h("9F66049F02069F03069F1A0295055F2A029A039C019F3704DF6001");
    let debit = AppSpec {
        aid: h(AID_UNIONPAY_DEBIT),
        label: "UnionPay Debit",
        priority: Some(2),
        pdol: pdol.clone(),
        needs_contactless_ttq: true,
        icc_key: None,
        gpo: GpoFormat::Two {
            extra: quics_gpo_extra(21),
        },
        aip: [0x7C, 0x00],
        afl: h("08010100"),
        records: BTreeMap::from([(
            (1, 1),
            record(&[
                t(0x5A, &bcd_pan(UNIONPAY_CREDIT_CARD_DEBIT_PAN)),
                t(0x5F24, &h("270531")),
            ]),
        )]),
    };
    let credit = AppSpec {
        aid: h(AID_UNIONPAY_CREDIT),
        label: "UnionPay Credit",
        priority: Some(1),
        pdol,
        needs_contactless_ttq: true,
        icc_key: icc_key(UNIONPAY_CREDIT_PAN, 0),
        gpo: GpoFormat::Two {
            extra: [
                t(
                    0x57,
                    &track2(UNIONPAY_CREDIT_PAN, "2806", "220", "00000000"),
                ),
                quics_gpo_extra(22),
            ]
            .concat(),
        },
        aip: [0x7C, 0x00],
        afl: h("0801010010010200"),
        records: BTreeMap::from_iter(
            [(
                (1, 1),
                record(&[
                    t(0x5A, &bcd_pan(UNIONPAY_CREDIT_PAN)),
                    t(0x5F24, &h("280630")),
                    t(0x5F34, &[0x00]),
                    t(0x8C, &h(ISSUED_CDOL1)),
                ]),
            )]
            .into_iter()
            .chain(oda_records(2, 23)),
        ),
    };
    let mut card = ModelCard::new("unionpay-credit", h(ATR_CONTACTLESS), vec![debit, credit]);
    card.ppse = true;
    card.uid = Some(h("08C3D41E"));
    card
}

/// Contact Visa on T=0: PSE in SFI 1, data through `61xx` GET RESPONSE chains of 32 bytes, and
/// `6Cxx` to every READ RECORD sent with Le = 00.
pub(crate) fn chained_t0() -> ModelCard {
    let app = AppSpec {
        aid: h(AID_VISA),
        label: "VISA CREDIT",
        priority: Some(1),
        pdol: h("9F1A025F2A029A03"),
        needs_contactless_ttq: false,
        icc_key: icc_key(CHAINED_T0_PAN, 1),
        gpo: GpoFormat::One,
        aip: [0x5C, 0x00],
        afl: h("0801010010010201"),
        records: BTreeMap::from([
            (
                (1, 1),
                record(&[
                    t(
                        0x57,
                        &track2(CHAINED_T0_PAN, "2711", "201", "1000012300000"),
                    ),
                    t(0x5F20, b"CARDBRIDGE/TEST"),
                    t(0x9F1F, b"1123400000000000"),
                ]),
            ),
            (
                (2, 1),
                record(&[
                    t(0x5A, &bcd_pan(CHAINED_T0_PAN)),
                    t(0x5F24, &h("271130")),
                    t(0x5F25, &h("221101")),
                    t(0x5F28, &h("0840")),
                    t(0x5F34, &[0x01]),
                    t(0x8C, &h("9F02069F03069F1A0295055F2A029A039C019F3704")),
                    t(0x8D, &h("8A029F02069F03069F1A0295055F2A029A039C019F3704")),
                    t(0x8E, &h("000000000000000042031E031F03")),
                    t(0x9F07, &h("FF00")),
                ]),
            ),
            (
                (2, 2),
                record(&[
                    t(0x8F, &[0x09]),
                    t(0x9F32, &[0x03]),
                    t(0x92, &filler(31, 36)),
                    t(0x90, &filler(32, 128)),
                ]),
            ),
        ]),
    };
    let mut card = ModelCard::new("chained-t0", h(ATR_CONTACT_T0), vec![app]);
    card.pse_sfi = Some(1);
    card.t0_chunk = Some(32);
    card
}

/// Contact UnionPay without PPSE or PSE: only the known-AID list finds it. GPO format 1, the PAN
/// in track 2 equivalent data only, the expiry also in 5F24.
pub(crate) fn ppse_missing() -> ModelCard {
    let app = AppSpec {
        aid: h(AID_UNIONPAY_DEBIT),
        label: "UnionPay",
        priority: None,
        pdol: Vec::new(),
        needs_contactless_ttq: false,
        icc_key: icc_key(PPSE_MISSING_PAN, 0),
        gpo: GpoFormat::One,
        aip: [0x7C, 0x00],
        afl: h("0801010010010100"),
        records: BTreeMap::from([
            (
                (1, 1),
                record(&[
                    t(0x57, &track2(PPSE_MISSING_PAN, "3003", "220", "10000")),
                    t(0x5F20, b"TEST/CARDBRIDGE"),
                ]),
            ),
            (
                (2, 1),
                record(&[
                    t(0x5F24, &h("300331")),
                    t(0x5F25, &h("200401")),
                    t(0x5F28, &h("0156")),
                    t(0x8C, &h("9F02069F03069F1A0295055F2A029A039C019F3704")),
                    t(0x9F07, &h("FF00")),
                ]),
            ),
        ]),
    };
    ModelCard::new("ppse-missing", h(ATR_CONTACT), vec![app])
}

/// A MIFARE DESFire campus card: no payment application, answers `FF CA 00 00 00` only.
pub(crate) fn campus_card() -> UidCard {
    UidCard {
        name: "campus-card",
        atr: h(ATR_DESFIRE),
        uid: h(CAMPUS_UID),
    }
}

/// A PBOC debit application of the issued cards: PDOL-less contact or qUICS contactless, the
/// number in 5A (and a track 2), keyed by the test issuer when `keyed`.
fn unionpay_app(
    aid: &str,
    label: &'static str,
    priority: Option<u8>,
    pan: &str,
    yymm: &str,
    contactless: bool,
    keyed: bool,
) -> AppSpec {
    let seed = pan.bytes().map(u64::from).sum::<u64>() + u64::from(priority.unwrap_or(0));
    AppSpec {
        aid: h(aid),
        label,
        priority,
        pdol: if contactless {
            h("9F66049F02069F1A025F2A02")
        } else {
            Vec::new()
        },
        needs_contactless_ttq: contactless,
        icc_key: if keyed { icc_key(pan, 1) } else { None },
        gpo: if contactless {
            GpoFormat::Two {
                extra: quics_gpo_extra(seed),
            }
        } else {
            GpoFormat::One
        },
        aip: [0x7C, 0x00],
        afl: h("0801010010010200"),
        records: BTreeMap::from_iter(
            [(
                (1, 1),
                record(&[
                    t(0x57, &track2(pan, yymm, "220", "10000000")),
                    t(0x5A, &bcd_pan(pan)),
                    t(0x5F24, &h(&format!("{yymm}31"))),
                    t(0x5F34, &[0x01]),
                    t(0x5F28, &h("0156")),
                    t(0x9F07, &h("FF00")),
                    t(0x8C, &h(ISSUED_CDOL1)),
                ]),
            )]
            .into_iter()
            .chain(oda_records(2, seed)),
        ),
    }
}

/// Contact PBOC card with a PSE (directory in SFI 1) listing three UnionPay applications in an
/// order that is not their priority: e-cash (priority 2), debit (priority 1), quasi-credit
/// (priority 3, another account). The debit application is the one to read.
pub(crate) fn unionpay_pse_multi() -> ModelCard {
    let ecash = unionpay_app(
        AID_UNIONPAY_ECASH,
        "PBOC ECASH",
        Some(2),
        UNIONPAY_PSE_MULTI_PAN,
        "3107",
        false,
        false,
    );
    let debit = unionpay_app(
        AID_UNIONPAY_DEBIT,
        "PBOC DEBIT",
        Some(1),
        UNIONPAY_PSE_MULTI_PAN,
        "3107",
        false,
        true,
    );
    let quasi_credit = unionpay_app(
        AID_UNIONPAY_QUASI_CREDIT,
        "PBOC QUASI CREDIT",
        Some(3),
        UNIONPAY_PSE_MULTI_QUASI_CREDIT_PAN,
        "2904",
        false,
        false,
    );
    let mut card = ModelCard::new(
        "unionpay-pse-multi",
        h(ATR_CONTACT),
        vec![ecash, debit, quasi_credit],
    );
    card.pse_sfi = Some(1);
    card
}

/// Contactless UnionPay credit card with a 19-digit number and neither PPSE nor PSE: only the
/// known-AID list finds its one application (after the debit AID fails).
pub(crate) fn unionpay_19_digits() -> ModelCard {
    let mut credit = unionpay_app(
        AID_UNIONPAY_CREDIT,
        "UnionPay Credit",
        None,
        UNIONPAY_19_DIGITS_PAN,
        "3205",
        true,
        true,
    );
    if let GpoFormat::Two { extra } = &mut credit.gpo {
        // qUICS: the track 2 in the GPO response too; it must agree with 5A in the record.
        extra.extend(t(
            0x57,
            &track2(UNIONPAY_19_DIGITS_PAN, "3205", "220", "10000000"),
        ));
    }
    let mut card = ModelCard::new("unionpay-19-digits", h(ATR_CONTACTLESS), vec![credit]);
    card.uid = Some(h("08D2E4A1"));
    card
}

/// Contactless UnionPay card whose PPSE lists e-cash first with priority 2, then debit with
/// `87 = 81`: priority 1 with "cardholder confirmation required" (bit 8) set. Debit is the one
/// to read: the flag is not part of the priority.
pub(crate) fn unionpay_two_priorities() -> ModelCard {
    let ecash = unionpay_app(
        AID_UNIONPAY_ECASH,
        "UnionPay eCash",
        Some(0x02),
        UNIONPAY_TWO_PRIORITIES_PAN,
        "3011",
        true,
        false,
    );
    let debit = unionpay_app(
        AID_UNIONPAY_DEBIT,
        "UnionPay Debit",
        Some(0x81),
        UNIONPAY_TWO_PRIORITIES_PAN,
        "3011",
        true,
        true,
    );
    let mut card = ModelCard::new(
        "unionpay-two-priorities",
        h(ATR_CONTACTLESS),
        vec![ecash, debit],
    );
    card.ppse = true;
    card.uid = Some(h("08A17F3C"));
    card
}

/// Contactless UnionPay debit card whose valid number fails the Luhn check.
pub(crate) fn unionpay_no_luhn() -> ModelCard {
    let debit = unionpay_app(
        AID_UNIONPAY_DEBIT,
        "UnionPay Debit",
        Some(1),
        UNIONPAY_NO_LUHN_PAN,
        "3102",
        true,
        true,
    );
    let mut card = ModelCard::new("unionpay-no-luhn", h(ATR_CONTACTLESS), vec![debit]);
    card.ppse = true;
    card.uid = Some(h("0866B2D9"));
    card
}

/// Not in the catalogue: a contactless Visa card whose number fails the check digit. It answers
/// every command correctly; the read finds no usable number.
pub(crate) fn broken_check_digit() -> ModelCard {
    let app = AppSpec {
        aid: h(AID_VISA),
        label: "VISA DEBIT",
        priority: Some(1),
        pdol: h("9F66049F02069F1A025F2A02"),
        needs_contactless_ttq: true,
        icc_key: None,
        gpo: GpoFormat::Two {
            extra: quics_gpo_extra(41),
        },
        aip: [0x20, 0x00],
        afl: h("08010100"),
        records: BTreeMap::from([(
            (1, 1),
            record(&[
                t(0x5A, &bcd_pan(BROKEN_CHECK_DIGIT_PAN)),
                t(0x5F24, &h("291031")),
            ]),
        )]),
    };
    let mut card = ModelCard::new("broken-check-digit", h(ATR_CONTACTLESS), vec![app]);
    card.ppse = true;
    card.uid = Some(h("08F00D11"));
    card
}
