//! Issuer keys: the key-store trait behind every card cryptogram check (and later the purse loads), and the file-backed store
//!
//! A bank keeps its issuer master keys in an HSM and never hands them out. The trait is shaped
//! like one: "did the bank issue this card, under which key" and "is this the cryptogram that card
//! computes" — key bytes never leave the store. [`SoftKeyStore`] holds the keys in process memory,
//! loaded from a TOML file (mode 0600) or, in demo mode only, the simulator's public test key.
//!
//! ```toml
//! [[issuer]]
//! prefix = "622202"            # card numbers the key covers (longest prefix wins)
//! key_id = "imk-ac-2026-1"     # a name for logs and the audit; never the key
//! imk_ac = "0123…"             # 16-byte issuer master key for application cryptograms, hex
//!
//! [[purse]]                    # the electronic purse's load and TAC master keys (top-up)
//! key_index = 1
//! key_id = "purse-2026-1"
//! load_master = "…"            # 16 bytes, hex: each card's load key is diversified from it
//! tac_master = "…"             # 16 bytes, hex
//! ```
//!
//! In production the same trait sits in front of an HSM (PKCS#11): the card keys are derived and
//! used inside it, and the server sees cryptograms and MACs only.

use std::path::Path;

use anyhow::{bail, Context};
use card::crypto::{derive_icc_master_key, DoubleKey};
use card::emv::cryptogram::{check_arqc, AcResponse};
use card::pan::Pan;
use card::purse::keys::PurseKeys;
use card::purse::{CardSerial, MasterKeys};
use serde::Deserialize;

/// Which key the bank issued a card under (a name, not the key), and how many leading digits of
/// a card number its range names: every card whose number starts with those digits is under it
/// (or under a narrower key of the bank).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    pub id: String,
    pub prefix_digits: usize,
}

pub trait KeyStore: Send + Sync + std::fmt::Debug {
    /// The issuer key that covers this card, if the bank issued it.
    fn issuer_key(&self, pan: &Pan) -> Option<KeyRef>;

    /// Whether `response` is an ARQC the card computed over `terminal_data` and `aip` with its
    /// key: EMV option A card key from the issuer master key, common session key for the ATC.
    fn verify_arqc(&self, key: &KeyRef, pan: &Pan, pan_sequence: u8, terminal_data: &[u8], aip: [u8; 2], response: &AcResponse) -> bool;

    /// The electronic purse's keys, for the host side of a load (MAC1, MAC2, TAC).
    fn purse(&self) -> &dyn PurseKeys;
}

struct IssuerKey {
    prefix: String,
    key_id: String,
    imk_ac: DoubleKey,
}

/// Keys in process memory (a file, or the demo's test key).
pub struct SoftKeyStore {
    keys: Vec<IssuerKey>,
    purse: PurseMasterKeys,
}

/// The purse master keys per key index.
#[derive(Default)]
struct PurseMasterKeys(Vec<(String, MasterKeys)>);

impl PurseKeys for PurseMasterKeys {
    fn load_key(&self, serial: &CardSerial, key_index: u8, key_version: u8) -> Option<DoubleKey> {
        self.0.iter().find(|(_, k)| k.key_index == key_index).and_then(|(_, k)| k.load_key(serial, key_index, key_version))
    }

    fn tac_key(&self, serial: &CardSerial) -> Option<DoubleKey> {
        // One TAC master key per issuer: the first entry's (all entries share it in practice).
        self.0.first().and_then(|(_, k)| k.tac_key(serial))
    }
}

impl std::fmt::Debug for SoftKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.key_id.as_str()).collect();
        let purse: Vec<&str> = self.purse.0.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("SoftKeyStore").field("key_ids", &ids).field("purse_key_ids", &purse).finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(default)]
    issuer: Vec<KeyFileEntry>,
    #[serde(default)]
    purse: Vec<PurseFileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurseFileEntry {
    key_index: u8,
    key_id: String,
    load_master: String,
    tac_master: String,
}

fn double_key(key_id: &str, field: &str, hex_text: &str) -> anyhow::Result<DoubleKey> {
    let bytes = hex::decode(hex_text.trim()).with_context(|| format!("key {key_id}: {field} is not hex"))?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("key {key_id}: {field} must be 16 bytes"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileEntry {
    prefix: String,
    key_id: String,
    imk_ac: String,
}

impl SoftKeyStore {
    /// No keys: no card can be authenticated, every read gets the masked summary.
    pub fn empty() -> SoftKeyStore {
        SoftKeyStore { keys: Vec::new(), purse: PurseMasterKeys::default() }
    }

    /// The simulator's test issuer (public test key). Demo mode only.
    pub fn test_issuer() -> SoftKeyStore {
        SoftKeyStore {
            keys: card::sim::issuer::TEST_ISSUER_RANGES
                .iter()
                .map(|prefix| IssuerKey {
                    prefix: prefix.to_string(),
                    key_id: "sim-test-imk-ac".into(),
                    imk_ac: card::sim::issuer::TEST_ISSUER_MASTER_KEY,
                })
                .collect(),
            purse: PurseMasterKeys(vec![("sim-test-purse".into(), card::sim::issuer::test_purse_keys())]),
        }
    }

    /// Load a key file; it must not be readable by group or others.
    pub fn load(path: &Path) -> anyhow::Result<SoftKeyStore> {
        check_private(path)?;
        let text = std::fs::read_to_string(path).with_context(|| format!("reading the issuer key file {}", path.display()))?;
        SoftKeyStore::parse(&text).with_context(|| format!("in the issuer key file {}", path.display()))
    }

    fn parse(text: &str) -> anyhow::Result<SoftKeyStore> {
        let file: KeyFile = toml::from_str(text).context("parsing")?;
        let mut keys = Vec::new();
        for entry in file.issuer {
            if entry.prefix.is_empty() || entry.prefix.len() > 12 || !entry.prefix.bytes().all(|b| b.is_ascii_digit()) {
                bail!("key {}: the prefix must be 1 to 12 digits", entry.key_id);
            }
            let imk_ac = double_key(&entry.key_id, "imk_ac", &entry.imk_ac)?;
            if keys.iter().any(|k: &IssuerKey| k.prefix == entry.prefix) {
                bail!("prefix {} is listed twice", entry.prefix);
            }
            keys.push(IssuerKey { prefix: entry.prefix, key_id: entry.key_id, imk_ac });
        }
        let mut purse = PurseMasterKeys::default();
        for entry in file.purse {
            if purse.0.iter().any(|(_, k)| k.key_index == entry.key_index) {
                bail!("purse key index {} is listed twice", entry.key_index);
            }
            let load = double_key(&entry.key_id, "load_master", &entry.load_master)?;
            let tac = double_key(&entry.key_id, "tac_master", &entry.tac_master)?;
            purse.0.push((entry.key_id, MasterKeys::new(entry.key_index, load, tac)));
        }
        Ok(SoftKeyStore { keys, purse })
    }

    fn key_for(&self, pan: &Pan) -> Option<&IssuerKey> {
        self.keys.iter().filter(|k| pan.as_str().starts_with(&k.prefix)).max_by_key(|k| k.prefix.len())
    }
}

impl KeyStore for SoftKeyStore {
    fn issuer_key(&self, pan: &Pan) -> Option<KeyRef> {
        self.key_for(pan).map(|k| KeyRef { id: k.key_id.clone(), prefix_digits: k.prefix.len() })
    }

    fn verify_arqc(&self, key: &KeyRef, pan: &Pan, pan_sequence: u8, terminal_data: &[u8], aip: [u8; 2], response: &AcResponse) -> bool {
        let Some(issuer) = self.key_for(pan).filter(|k| k.key_id == key.id) else { return false };
        match derive_icc_master_key(&issuer.imk_ac, pan.as_str(), pan_sequence) {
            Ok(icc_key) => check_arqc(&icc_key, terminal_data, aip, response),
            Err(_) => false,
        }
    }

    fn purse(&self) -> &dyn PurseKeys {
        &self.purse
    }
}

#[cfg(unix)]
fn check_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!("the issuer key file {} is readable by others (mode {:o}); chmod 600 it", path.display(), mode & 0o777);
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_wins_and_unknown_cards_have_no_key() {
        let store = SoftKeyStore::parse(
            "[[issuer]]\nprefix = \"62\"\nkey_id = \"wide\"\nimk_ac = \"00112233445566778899AABBCCDDEEFF\"\n\
             [[issuer]]\nprefix = \"620000\"\nkey_id = \"narrow\"\nimk_ac = \"0123456789ABCDEFFEDCBA9876543210\"\n",
        )
        .unwrap();
        assert_eq!(store.issuer_key(&Pan::parse("6200000000000005").unwrap()), Some(KeyRef { id: "narrow".into(), prefix_digits: 6 }));
        assert_eq!(store.issuer_key(&Pan::parse("6250947000000014").unwrap()), Some(KeyRef { id: "wide".into(), prefix_digits: 2 }));
        assert_eq!(store.issuer_key(&Pan::parse("4761735025003981").unwrap()), None);
        assert!(format!("{store:?}").contains("narrow") && !format!("{store:?}").contains("0123"));
    }

    #[test]
    fn purse_keys_load_from_the_file_and_the_demo_store_loads_the_simulated_purse() {
        let store = SoftKeyStore::parse(
            "[[purse]]\nkey_index = 1\nkey_id = \"p1\"\nload_master = \"11223344556677888877665544332211\"\n\
             tac_master = \"A1A2A3A4A5A6A7A8B1B2B3B4B5B6B7B8\"\n",
        )
        .unwrap();
        let mut card = card::sim::purse::purse_card();
        let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, std::convert::Infallible> { Ok(card::sim::SimCard::transmit(&mut card, apdu)) };
        let request = card::purse::LoadRequest {
            key_index: 1,
            amount: 500,
            terminal_id: [0, 0, 0, 0, 0, 1],
            date: [0x20, 0x26, 0x12, 0x03],
            time: [0x12, 0x00, 0x00],
            card: None,
        };
        let outcome = card::purse::run_load(&mut transmit, store.purse(), request).unwrap();
        assert!(matches!(outcome, card::purse::LoadOutcome::Completed { .. }), "{outcome:?}");
        assert!(SoftKeyStore::empty().purse().tac_key(&CardSerial::new([0; 8])).is_none());
        assert!(SoftKeyStore::parse("[[purse]]\nkey_index = 1\nkey_id = \"p\"\nload_master = \"00\"\ntac_master = \"00\"\n").is_err());
    }

    #[test]
    fn bad_key_files_are_refused() {
        for bad in [
            "[[issuer]]\nprefix = \"62x\"\nkey_id = \"a\"\nimk_ac = \"0123456789ABCDEFFEDCBA9876543210\"\n",
            "[[issuer]]\nprefix = \"62\"\nkey_id = \"a\"\nimk_ac = \"0123\"\n",
            "[[issuer]]\nprefix = \"62\"\nkey_id = \"a\"\nimk_ac = \"zz\"\n",
            "[[issuer]]\nprefix = \"62\"\nkey_id = \"a\"\nimk_ac = \"0123456789ABCDEFFEDCBA9876543210\"\nextra = 1\n",
        ] {
            assert!(SoftKeyStore::parse(bad).is_err(), "{bad}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("cb-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("issuer-keys.toml");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(SoftKeyStore::load(&path).is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(SoftKeyStore::load(&path).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
