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
//! ```

use std::path::Path;

use anyhow::{bail, Context};
use card::crypto::{derive_icc_master_key, DoubleKey};
use card::emv::cryptogram::{check_arqc, AcResponse};
use card::pan::Pan;
use serde::Deserialize;

/// Which key the bank issued a card under (a name, not the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef(pub String);

pub trait KeyStore: Send + Sync + std::fmt::Debug {
    /// The issuer key that covers this card, if the bank issued it.
    fn issuer_key(&self, pan: &Pan) -> Option<KeyRef>;

    /// Whether `response` is an ARQC the card computed over `terminal_data` and `aip` with its
    /// key: EMV option A card key from the issuer master key, common session key for the ATC.
    fn verify_arqc(&self, key: &KeyRef, pan: &Pan, pan_sequence: u8, terminal_data: &[u8], aip: [u8; 2], response: &AcResponse) -> bool;
}

struct IssuerKey {
    prefix: String,
    key_id: String,
    imk_ac: DoubleKey,
}

/// Keys in process memory (a file, or the demo's test key).
pub struct SoftKeyStore {
    keys: Vec<IssuerKey>,
}

impl std::fmt::Debug for SoftKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.key_id.as_str()).collect();
        f.debug_struct("SoftKeyStore").field("key_ids", &ids).finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(default)]
    issuer: Vec<KeyFileEntry>,
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
        SoftKeyStore { keys: Vec::new() }
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
            let bytes = hex::decode(entry.imk_ac.trim()).with_context(|| format!("key {}: imk_ac is not hex", entry.key_id))?;
            let imk_ac: DoubleKey = bytes
                .try_into()
                .map_err(|_| anyhow::anyhow!("key {}: imk_ac must be 16 bytes", entry.key_id))?;
            if keys.iter().any(|k: &IssuerKey| k.prefix == entry.prefix) {
                bail!("prefix {} is listed twice", entry.prefix);
            }
            keys.push(IssuerKey { prefix: entry.prefix, key_id: entry.key_id, imk_ac });
        }
        Ok(SoftKeyStore { keys })
    }

    fn key_for(&self, pan: &Pan) -> Option<&IssuerKey> {
        self.keys.iter().filter(|k| pan.as_str().starts_with(&k.prefix)).max_by_key(|k| k.prefix.len())
    }
}

impl KeyStore for SoftKeyStore {
    fn issuer_key(&self, pan: &Pan) -> Option<KeyRef> {
        self.key_for(pan).map(|k| KeyRef(k.key_id.clone()))
    }

    fn verify_arqc(&self, key: &KeyRef, pan: &Pan, pan_sequence: u8, terminal_data: &[u8], aip: [u8; 2], response: &AcResponse) -> bool {
        let Some(issuer) = self.key_for(pan).filter(|k| k.key_id == key.0) else { return false };
        match derive_icc_master_key(&issuer.imk_ac, pan.as_str(), pan_sequence) {
            Ok(icc_key) => check_arqc(&icc_key, terminal_data, aip, response),
            Err(_) => false,
        }
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
        assert_eq!(store.issuer_key(&Pan::parse("6200000000000005").unwrap()), Some(KeyRef("narrow".into())));
        assert_eq!(store.issuer_key(&Pan::parse("6250947000000014").unwrap()), Some(KeyRef("wide".into())));
        assert_eq!(store.issuer_key(&Pan::parse("4761735025003981").unwrap()), None);
        assert!(format!("{store:?}").contains("narrow") && !format!("{store:?}").contains("0123"));
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
