//! The PBOC e-purse keys and MACs of a load: per-card key diversification, the load session key, MAC1, MAC2 and the TAC, and the key trait a key store implements
//!
//! All MACs are ISO/IEC 9797-1 algorithm 1 (single-DES CBC-MAC, ICV zero) with padding method 2
//! (`80 00…`, always added), first 4 bytes: [`crypto::des_mac`].
//!
//! The TAC of a load follows PBOC/JR/T 0025 as the public Java Card purse applet
//! `cave-g-f/java_card` (`rfid/src/purse/EPFile.java`, `load`) computes it: the TAC key's left and
//! right halves XORed into one single-DES key (DTK), the MAC over new balance(4) ‖ online serial
//! before the increment(2) ‖ amount(4) ‖ transaction type `02`(1) ‖ terminal id(6) ‖ host date(4)
//! ‖ host time(3).

use std::fmt;

use crate::crypto::{self, DoubleKey};

use super::CardSerial;

/// Transaction type identifier of an e-purse load (圈存).
pub const TYPE_LOAD: u8 = 0x02;

/// A per-card key from an issuer master key: 3DES_MK(serial) ‖ 3DES_MK(¬serial). The load key
/// (DLK) and the TAC key are both derived this way, each from its own master key.
pub fn diversify(master: &DoubleKey, serial: &CardSerial) -> DoubleKey {
    let s = serial.bytes();
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&crypto::tdes_encrypt(master, s));
    key[8..].copy_from_slice(&crypto::tdes_encrypt(master, s.map(|b| !b)));
    key
}

/// The load session key: SESLK = 3DES_DLK(random ‖ online serial ‖ `80 00`).
pub fn load_session_key(dlk: &DoubleKey, random: [u8; 4], online_serial: u16) -> [u8; 8] {
    let [s1, s2] = online_serial.to_be_bytes();
    let [r1, r2, r3, r4] = random;
    crypto::tdes_encrypt(dlk, [r1, r2, r3, r4, s1, s2, 0x80, 0x00])
}

/// The first 4 bytes of the single-DES CBC-MAC with padding method 2.
pub fn mac4(key: &[u8; 8], data: &[u8]) -> [u8; 4] {
    let m = crypto::des_mac(key, data);
    [m[0], m[1], m[2], m[3]]
}

/// MAC1, the card's proof in INITIALIZE FOR LOAD: over old balance ‖ amount ‖ `02` ‖ terminal id.
pub fn mac1(seslk: &[u8; 8], old_balance: u32, amount: u32, terminal_id: &[u8; 6]) -> [u8; 4] {
    let mut data = Vec::with_capacity(15);
    data.extend(old_balance.to_be_bytes());
    data.extend(amount.to_be_bytes());
    data.push(TYPE_LOAD);
    data.extend(terminal_id);
    mac4(seslk, &data)
}

/// MAC2, the host's authorisation in CREDIT FOR LOAD: over amount ‖ `02` ‖ terminal id ‖ date ‖ time.
pub fn mac2(
    seslk: &[u8; 8],
    amount: u32,
    terminal_id: &[u8; 6],
    date: &[u8; 4],
    time: &[u8; 3],
) -> [u8; 4] {
    let mut data = Vec::with_capacity(18);
    data.extend(amount.to_be_bytes());
    data.push(TYPE_LOAD);
    data.extend(terminal_id);
    data.extend(date);
    data.extend(time);
    mac4(seslk, &data)
}

/// The single-DES TAC key (DTK): the two halves of the card's TAC key XORed.
pub fn dtk(tac_key: &DoubleKey) -> [u8; 8] {
    let mut k = [0u8; 8];
    for (i, b) in k.iter_mut().enumerate() {
        *b = tac_key[i] ^ tac_key[i + 8];
    }
    k
}

/// What a TAC of a load covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TacInput {
    pub new_balance: u32,
    /// The online serial the load ran under (before the card's increment).
    pub online_serial: u16,
    pub amount: u32,
    pub terminal_id: [u8; 6],
    pub date: [u8; 4],
    pub time: [u8; 3],
}

/// The TAC of a load: MAC_DTK(new balance ‖ online serial ‖ amount ‖ `02` ‖ terminal ‖ date ‖ time).
pub fn load_tac(tac_key: &DoubleKey, input: &TacInput) -> [u8; 4] {
    let mut data = Vec::with_capacity(24);
    data.extend(input.new_balance.to_be_bytes());
    data.extend(input.online_serial.to_be_bytes());
    data.extend(input.amount.to_be_bytes());
    data.push(TYPE_LOAD);
    data.extend(input.terminal_id);
    data.extend(input.date);
    data.extend(input.time);
    mac4(&dtk(tac_key), &data)
}

/// Where the host side of a load gets a card's keys (the server's key store implements it).
/// `None`: the store does not hold the key, and the load is refused before CREDIT FOR LOAD.
pub trait PurseKeys {
    /// The card's load key (DLK) for the key index the host asked for and the key version the
    /// card answered.
    fn load_key(&self, serial: &CardSerial, key_index: u8, key_version: u8) -> Option<DoubleKey>;
    /// The card's TAC key (double length; the TAC uses its halves XORed).
    fn tac_key(&self, serial: &CardSerial) -> Option<DoubleKey>;
}

/// Keys derived from two issuer master keys for one key index (any key version).
#[derive(Clone)]
pub struct MasterKeys {
    pub key_index: u8,
    load_master: DoubleKey,
    tac_master: DoubleKey,
}

impl MasterKeys {
    pub fn new(key_index: u8, load_master: DoubleKey, tac_master: DoubleKey) -> Self {
        MasterKeys {
            key_index,
            load_master,
            tac_master,
        }
    }
}

/// Key check values only, never the keys.
impl fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKeys")
            .field("key_index", &self.key_index)
            .field(
                "load_kcv",
                &hex::encode_upper(crypto::key_check_value(&self.load_master)),
            )
            .field(
                "tac_kcv",
                &hex::encode_upper(crypto::key_check_value(&self.tac_master)),
            )
            .finish()
    }
}

impl PurseKeys for MasterKeys {
    fn load_key(&self, serial: &CardSerial, key_index: u8, _key_version: u8) -> Option<DoubleKey> {
        (key_index == self.key_index).then(|| diversify(&self.load_master, serial))
    }

    fn tac_key(&self, serial: &CardSerial) -> Option<DoubleKey> {
        Some(diversify(&self.tac_master, serial))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    #[test]
    fn session_key_and_mac1_match_the_published_vector() {
        let dlk: DoubleKey = h("3F013F013F013F013F013F013F013F01");

        let seslk = load_session_key(&dlk, h("F9CABA91"), 0x0000);
        let mac = mac1(&seslk, 0, 0x1234, &h("000000000001"));

        assert_eq!(hex::encode_upper(seslk), "03015BEA347EA231");
        assert_eq!(hex::encode_upper(mac), "6C394D64");
    }

    #[test]
    fn diversification_is_the_serial_and_its_complement_under_the_master_key() {
        let master: DoubleKey = h("0123456789ABCDEFFEDCBA9876543210");
        let serial = CardSerial::new(h("1122334455667788"));

        let key = diversify(&master, &serial);

        assert_eq!(
            key[..8],
            crypto::tdes_encrypt(&master, h("1122334455667788"))
        );
        assert_eq!(
            key[8..],
            crypto::tdes_encrypt(&master, h("EEDDCCBBAA998877"))
        );
        assert_ne!(
            diversify(&master, &CardSerial::new(h("1122334455667789"))),
            key
        );
    }

    #[test]
    fn mac2_and_tac_cover_their_fields() {
        let seslk: [u8; 8] = h("03015BEA347EA231");
        let date = h("20261203");
        let time = h("143000");
        let terminal = h("000000000001");

        let m = mac2(&seslk, 0x1234, &terminal, &date, &time);

        let expected = mac4(
            &seslk,
            &hex::decode("000012340200000000000120261203143000").unwrap(),
        );
        assert_eq!(m, expected);
        assert_ne!(mac2(&seslk, 0x1235, &terminal, &date, &time), m);

        let tac_key: DoubleKey = h("00112233445566778899AABBCCDDEEFF");
        let input = TacInput {
            new_balance: 0x1234,
            online_serial: 7,
            amount: 0x1234,
            terminal_id: terminal,
            date,
            time,
        };
        let tac = load_tac(&tac_key, &input);
        let full = hex::decode("000012340007000012340200000000000120261203143000").unwrap();
        assert_eq!(tac, mac4(&h("8888888888888888"), &full));
        assert_ne!(
            load_tac(
                &tac_key,
                &TacInput {
                    online_serial: 8,
                    ..input
                }
            ),
            tac
        );
    }

    #[test]
    fn master_keys_answer_only_their_key_index_and_debug_shows_no_key() {
        let keys = MasterKeys::new(1, [0x11; 16], [0x22; 16]);
        let serial = CardSerial::new([1; 8]);

        assert_eq!(
            keys.load_key(&serial, 1, 0x02),
            Some(diversify(&[0x11; 16], &serial))
        );
        assert_eq!(keys.load_key(&serial, 2, 0x02), None);
        assert!(!format!("{keys:?}").contains("1111"));
    }
}
