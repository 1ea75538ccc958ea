//! Card cryptography: DES and two-key triple DES blocks, the ISO/IEC 9797-1 MACs, and the EMV key derivations (ICC master key option A, common session key)
//!
//! These are the primitives both sides of a card check use: the simulator's cards compute
//! cryptograms with them, and the server's key store verifies them. Keys are plain byte arrays
//! here; who may hold them is the key store's business (`cardbridge::keys`).

use des::cipher::generic_array::GenericArray;
use des::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use des::{Des, TdesEde2};

/// A two-key triple-DES key (K1 ‖ K2), as EMV and PBOC use them.
pub type DoubleKey = [u8; 16];

/// Triple-DES (EDE, two keys) encryption of one block.
pub fn tdes_encrypt(key: &DoubleKey, block: [u8; 8]) -> [u8; 8] {
    let cipher = TdesEde2::new(GenericArray::from_slice(key));
    let mut b = GenericArray::from(block);
    cipher.encrypt_block(&mut b);
    b.into()
}

/// Single-DES encryption of one block.
pub fn des_encrypt(key: &[u8; 8], block: [u8; 8]) -> [u8; 8] {
    let cipher = Des::new(GenericArray::from_slice(key));
    let mut b = GenericArray::from(block);
    cipher.encrypt_block(&mut b);
    b.into()
}

/// Single-DES decryption of one block.
pub fn des_decrypt(key: &[u8; 8], block: [u8; 8]) -> [u8; 8] {
    let cipher = Des::new(GenericArray::from_slice(key));
    let mut b = GenericArray::from(block);
    cipher.decrypt_block(&mut b);
    b.into()
}

/// ISO/IEC 9797-1 padding method 2: `80`, then zeros up to a multiple of 8 (always at least one byte).
pub fn pad_method_2(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 8);
    out.extend_from_slice(data);
    out.push(0x80);
    while out.len() % 8 != 0 {
        out.push(0);
    }
    out
}

fn xor8(a: [u8; 8], b: &[u8]) -> [u8; 8] {
    let mut out = a;
    for (o, x) in out.iter_mut().zip(b) {
        *o ^= x;
    }
    out
}

/// Single-DES CBC-MAC (ISO/IEC 9797-1 algorithm 1), ICV zero, over data already padded to blocks.
fn des_cbc(key: &[u8; 8], padded: &[u8]) -> [u8; 8] {
    padded.chunks_exact(8).fold([0u8; 8], |h, block| des_encrypt(key, xor8(h, block)))
}

/// ISO/IEC 9797-1 MAC algorithm 1 with padding method 2 and single DES (the PBOC purse MACs).
pub fn des_mac(key: &[u8; 8], data: &[u8]) -> [u8; 8] {
    des_cbc(key, &pad_method_2(data))
}

/// ISO/IEC 9797-1 MAC algorithm 3 ("retail MAC") with padding method 2: single-DES CBC under K1,
/// the last block decrypted under K2 and encrypted under K1 again. EMV application cryptograms.
pub fn retail_mac(key: &DoubleKey, data: &[u8]) -> [u8; 8] {
    let (k1, k2) = split(key);
    let h = des_cbc(&k1, &pad_method_2(data));
    des_encrypt(&k1, des_decrypt(&k2, h))
}

fn split(key: &DoubleKey) -> ([u8; 8], [u8; 8]) {
    let mut k1 = [0u8; 8];
    let mut k2 = [0u8; 8];
    k1.copy_from_slice(&key[..8]);
    k2.copy_from_slice(&key[8..]);
    (k1, k2)
}

/// Odd parity in every byte (DES ignores the low bit; keys are conventionally stored this way).
fn with_odd_parity(mut key: DoubleKey) -> DoubleKey {
    for b in &mut key {
        if b.count_ones() % 2 == 0 {
            *b ^= 1;
        }
    }
    key
}

/// Why a key could not be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeriveError {
    #[error("the card number must be digits only")]
    NotDigits,
}

/// EMV Book 2 A1.4.1, option A: the ICC master key for a card from the issuer master key. The
/// rightmost 16 digits of PAN ‖ PAN sequence number (two digits, `00` when the card has none),
/// left-padded with zeros, form Y; the key is 3DES(Y) ‖ 3DES(Y ⊕ FF…FF), odd parity.
pub fn derive_icc_master_key(issuer_master_key: &DoubleKey, pan: &str, pan_sequence: u8) -> Result<DoubleKey, DeriveError> {
    if pan.is_empty() || !pan.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DeriveError::NotDigits);
    }
    let x = format!("{pan}{:02}", pan_sequence % 100);
    let tail = &x[x.len().saturating_sub(16)..];
    let digits = format!("{tail:0>16}");
    let mut y = [0u8; 8];
    for (i, pair) in digits.as_bytes().chunks_exact(2).enumerate() {
        y[i] = ((pair[0] - b'0') << 4) | (pair[1] - b'0');
    }
    let left = tdes_encrypt(issuer_master_key, y);
    let right = tdes_encrypt(issuer_master_key, xor8(y, &[0xFF; 8]));
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&left);
    key[8..].copy_from_slice(&right);
    Ok(with_odd_parity(key))
}

/// EMV Book 2 A1.3, the common session key derivation from an 8-byte diversification value R
/// (for application cryptograms: ATC ‖ six zero bytes). F1 and F2 are R with byte 3 set to `F0`
/// and `0F`.
pub fn common_session_key(master_key: &DoubleKey, r: [u8; 8]) -> DoubleKey {
    let mut f1 = r;
    f1[2] = 0xF0;
    let mut f2 = r;
    f2[2] = 0x0F;
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&tdes_encrypt(master_key, f1));
    key[8..].copy_from_slice(&tdes_encrypt(master_key, f2));
    key
}

/// The application cryptogram session key for one transaction counter value.
pub fn ac_session_key(icc_master_key: &DoubleKey, atc: [u8; 2]) -> DoubleKey {
    common_session_key(icc_master_key, [atc[0], atc[1], 0, 0, 0, 0, 0, 0])
}

/// Key check value: the first `n` bytes of the key's encryption of a zero block.
pub fn key_check_value(key: &DoubleKey) -> [u8; 3] {
    let block = tdes_encrypt(key, [0; 8]);
    [block[0], block[1], block[2]]
}

/// Compare two MACs without an early exit on the first difference.
pub fn mac_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    const IMK: &str = "0123456789ABCDEFFEDCBA9876543210";

    #[test]
    fn the_test_issuer_key_has_its_published_check_value() {
        assert_eq!(hex::encode_upper(&key_check_value(&h(IMK))[..2]), "08D7");
    }

    #[test]
    fn icc_master_key_option_a_matches_published_vectors() {
        // PAN 99012345678901234, PSN 45 (pyemv's documented example).
        let key = derive_icc_master_key(&h(IMK), "99012345678901234", 45).unwrap();
        assert_eq!(hex::encode_upper(key), "67F8292358083E5EA7AB7FDA58D53B6B");
        // PAN 12345678901234567, PSN 45: check value FF08.
        let key = derive_icc_master_key(&h(IMK), "12345678901234567", 45).unwrap();
        assert_eq!(hex::encode_upper(&key_check_value(&key)[..2]), "FF08");
        assert_eq!(derive_icc_master_key(&h(IMK), "1234x", 0), Err(DeriveError::NotDigits));
    }

    #[test]
    fn session_key_and_cryptogram_match_published_vectors() {
        let mk = derive_icc_master_key(&h(IMK), "12345678901234567", 45).unwrap();
        let sk = common_session_key(&mk, h("1234567890123456"));
        assert_eq!(hex::encode_upper(&key_check_value(&sk)[..2]), "DF82");
        let ac = retail_mac(&sk, &hex::decode("0123456789ABCDEF0123456789ABCDEF").unwrap());
        assert_eq!(hex::encode_upper(ac), "19C1FBC83EBDC0D5");

        let mk = derive_icc_master_key(&h(IMK), "12345678901234567", 0).unwrap();
        let sk = common_session_key(&mk, h("1234567890123456"));
        assert_eq!(hex::encode_upper(&key_check_value(&sk)[..2]), "3F4F");
        let ac = retail_mac(&sk, &hex::decode("0123456789ABCDEF0123456789ABCDEF").unwrap());
        assert_eq!(hex::encode_upper(ac), "8698A7319324FD93");
    }

    #[test]
    fn pboc_load_session_key_and_mac1_match_the_published_check() {
        // DLK = 3F01 × 8, random F9CABA91, online serial 0000: SESLK = 3DES_DLK(random ‖ serial ‖ 8000).
        let dlk: DoubleKey = h("3F013F013F013F013F013F013F013F01");
        let seslk = tdes_encrypt(&dlk, h("F9CABA9100008000"));
        assert_eq!(hex::encode_upper(seslk), "03015BEA347EA231");
        let mac1 = des_mac(&seslk, &hex::decode("000000000000123402000000000001").unwrap());
        assert_eq!(hex::encode_upper(&mac1[..4]), "6C394D64");
    }

    #[test]
    fn padding_always_adds_a_byte() {
        assert_eq!(pad_method_2(&[1; 8]).len(), 16);
        assert_eq!(pad_method_2(&[1; 7]), [1, 1, 1, 1, 1, 1, 1, 0x80]);
        assert!(mac_eq(&[1, 2], &[1, 2]) && !mac_eq(&[1, 2], &[1, 3]) && !mac_eq(&[1], &[1, 2]));
    }
}
