//! The simulator's test issuer: the issuer master key the simulated issued cards derive their cryptogram keys from, the card-number ranges it issues, and the e-purse master keys
//!
//! TEST KEYS ONLY. The key is the public EMV test issuer master key
//! (`0123456789ABCDEF FEDCBA9876543210`, check value `08D7`); a server uses it only in demo mode
//! or when a key file names it. The recorded real cards of the catalogue have no keys here: a
//! server cannot authenticate them, so it never discloses their data in full.

use crate::crypto::{self, DoubleKey};

/// The test issuer master key for application cryptograms (IMK-AC).
pub const TEST_ISSUER_MASTER_KEY: DoubleKey = [
    0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF, 0xFE, 0xDC, 0xBA, 0x98, 0x76, 0x54, 0x32, 0x10,
];

/// Card-number prefixes of the cards the test issuer personalised with keys: the synthetic
/// UnionPay debit, credit and PPSE-less cards, the T=0 Visa card, and the UnionPay cards with a
/// PSE of three applications, a 19-digit number, two priorities and a number failing Luhn.
pub const TEST_ISSUER_RANGES: &[&str] = &[
    "620000", "620550", "625094", "401288", "621234", "622848", "623456", "621799",
];

/// The ICC master key the test issuer put on the card with this number and sequence number.
pub(crate) fn icc_key(pan: &str, pan_sequence: u8) -> Option<DoubleKey> {
    crypto::derive_icc_master_key(&TEST_ISSUER_MASTER_KEY, pan, pan_sequence).ok()
}

/// TEST ONLY: the e-purse load master key; each simulated purse's load key (DLK, key index
/// [`TEST_PURSE_KEY_INDEX`]) is diversified from it with the card serial.
pub const TEST_PURSE_LOAD_MASTER_KEY: DoubleKey = [
    0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
];

/// TEST ONLY: the e-purse TAC master key; each simulated purse's TAC key derives from it.
pub const TEST_PURSE_TAC_MASTER_KEY: DoubleKey = [
    0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xB1, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8,
];

/// The issuer id (public information, bytes 0..8) of the test issuer's purses: `CBRIDGE1`.
pub const TEST_PURSE_ISSUER_ID: [u8; 8] = *b"CBRIDGE1";

/// The key index of the simulated purses' one load key.
pub const TEST_PURSE_KEY_INDEX: u8 = 0x01;

/// TEST ONLY: the host side's view of the test purse master keys (what a demo key store holds).
pub fn test_purse_keys() -> crate::purse::MasterKeys {
    crate::purse::MasterKeys::new(TEST_PURSE_KEY_INDEX, TEST_PURSE_LOAD_MASTER_KEY, TEST_PURSE_TAC_MASTER_KEY)
}
