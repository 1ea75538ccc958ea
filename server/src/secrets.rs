//! The server's long-lived secrets: its Ed25519 command-signing key and the key of the PAN hash.
//!
//! Both live as hex files with mode 0600 in the data directory and are created on first start.
//! Every instance behind a load balancer must share them.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use ed25519_dalek::{SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

pub struct Secrets {
    pub server_key: SigningKey,
    pan_key: [u8; 32],
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets { .. }")
    }
}

impl Secrets {
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Secrets> {
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let server_key = SigningKey::from_bytes(&load_or_create_key(&data_dir.join("server.key"))?);
        let pan_key = load_or_create_key(&data_dir.join("pan.key"))?;
        Ok(Secrets { server_key, pan_key })
    }

    /// The server's public key from `server.key` in `data_dir`, creating nothing (for checks such
    /// as `audit-verify`, where a fresh key would be wrong).
    pub fn load_server_public_key(data_dir: &Path) -> anyhow::Result<VerifyingKey> {
        let path = data_dir.join("server.key");
        anyhow::ensure!(path.exists(), "no server key at {}", path.display());
        let key = SigningKey::from_bytes(&load_or_create_key(&path)?);
        Ok(key.verifying_key())
    }

    /// The key that seals messages between instances (`cluster_message`): derived from the PAN
    /// key, which every instance shares.
    pub fn cluster_key(&self) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.pan_key).expect("HMAC takes any key length");
        mac.update(b"cardbridge cluster message key v1");
        mac.finalize().into_bytes().into()
    }

    /// Keyed hash of a card number: the only form in which a number is stored or looked up.
    pub fn pan_hash(&self, number: &str) -> String {
        // HMAC accepts keys of any length; 32 bytes cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.pan_key).expect("HMAC takes any key length");
        mac.update(number.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

fn load_or_create_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    if path.exists() {
        check_mode(path)?;
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let bytes = hex::decode(text.trim()).with_context(|| format!("{} is not hex", path.display()))?;
        return bytes.try_into().map_err(|_| anyhow::anyhow!("{} must hold 32 bytes", path.display()));
    }
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(hex::encode(key).as_bytes())?;
    file.sync_all()?;
    Ok(key)
}

fn check_mode(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        anyhow::ensure!(mode & 0o077 == 0, "{} is readable by others (mode {mode:o}); chmod 600 it", path.display());
    }
    Ok(())
}
