//! The agent's state directory: the terminal key, the enrolment record and the local policy.
//!
//! | file | content | written by |
//! |---|---|---|
//! | `terminal.key` | hex Ed25519 seed, mode `0600` | `enrol` |
//! | `terminal.toml` | server URL, terminal id and name, pinned server public key | `enrol` |
//! | `policy.toml` | the terminal owner's local policy (optional) | the terminal owner |
//! | `sessions` | connection sessions joined recently, mode `0600` (see [`crate::sessions`]) | `run` |
//!
//! Files are written atomically (temporary file in the same directory, `fsync`, rename), so a crash
//! never leaves a half-written key. The key file is created with mode `0600` from the start (never
//! chmod-ed after the secret is in it), and a key file readable by anyone but its owner is refused.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Environment variable that overrides the default state directory.
pub const STATE_DIR_ENV: &str = "CARDBRIDGE_AGENT_STATE_DIR";
pub const KEY_FILE: &str = "terminal.key";
pub const TERMINAL_FILE: &str = "terminal.toml";
pub const POLICY_FILE: &str = "policy.toml";

/// `$CARDBRIDGE_AGENT_STATE_DIR`, else `$HOME/.cardbridge-agent`.
pub fn default_state_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(STATE_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither CARDBRIDGE_AGENT_STATE_DIR nor HOME is set; pass --state-dir")?;
    Ok(PathBuf::from(home).join(".cardbridge-agent"))
}

/// What `terminal.toml` holds: the enrolment, as the server confirmed it.
// tidy: on-disk format (terminal.toml), not a wire type
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalRecord {
    pub server_url: String,
    pub terminal_id: String,
    pub terminal_name: String,
    /// The server's Ed25519 public key (hex), pinned at enrolment.
    pub server_public_key: String,
}

impl TerminalRecord {
    pub fn pinned_server_key(&self) -> anyhow::Result<VerifyingKey> {
        let bytes =
            hex::decode(self.server_public_key.trim()).context("server_public_key in terminal.toml is not hex")?;
        protocol::envelope::verifying_key(&bytes)
            .context("server_public_key in terminal.toml is not an Ed25519 public key")
    }
}

/// Create the state directory (mode `0700` when it is new).
pub fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).with_context(|| format!("cannot create the state directory {}", dir.display()))
}

/// True when the directory already holds an enrolment (key or record).
pub fn is_enrolled(dir: &Path) -> bool {
    dir.join(KEY_FILE).exists() || dir.join(TERMINAL_FILE).exists()
}

/// Write `contents` to `dir/name` atomically with the given mode.
pub(crate) fn write_atomically(dir: &Path, name: &str, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let target = dir.join(name);
    let temporary = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let result = (|| -> anyhow::Result<()> {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut file = options.open(&temporary).with_context(|| format!("cannot create {}", temporary.display()))?;
        file.write_all(contents).with_context(|| format!("cannot write {}", temporary.display()))?;
        file.sync_all().with_context(|| format!("cannot sync {}", temporary.display()))?;
        fs::rename(&temporary, &target).with_context(|| format!("cannot move {} into place", target.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result?;
    // Make the rename itself durable.
    if let Ok(directory) = fs::File::open(dir) {
        let _ = directory.sync_all();
    }
    Ok(())
}

/// Save the terminal key as a hex seed in `terminal.key`, mode `0600`.
pub fn save_key(dir: &Path, key: &SigningKey) -> anyhow::Result<()> {
    let mut text = hex::encode(key.to_bytes());
    text.push('\n');
    write_atomically(dir, KEY_FILE, text.as_bytes(), 0o600)
}

/// Load the terminal key, refusing a key file that group or others may read or write.
pub fn load_key(dir: &Path) -> anyhow::Result<SigningKey> {
    let path = dir.join(KEY_FILE);
    let metadata = fs::metadata(&path).with_context(|| {
        format!("cannot read {}; is this terminal enrolled? (cardbridge-agent enrol)", path.display())
    })?;
    check_private(&path, &metadata)?;
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let seed: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .with_context(|| format!("{} does not hold a 32-byte hex key", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

#[cfg(unix)]
fn check_private(path: &Path, metadata: &fs::Metadata) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{} has mode {mode:04o}; the terminal key must be private to its owner \
             (chmod 600 {})",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _metadata: &fs::Metadata) -> anyhow::Result<()> {
    Ok(())
}

/// Save `terminal.toml`.
pub fn save_record(dir: &Path, record: &TerminalRecord) -> anyhow::Result<()> {
    let text = toml::to_string(record).context("cannot serialise terminal.toml")?;
    let text = format!("# Written by `cardbridge-agent enrol`. server_public_key is the pinned server key.\n{text}");
    write_atomically(dir, TERMINAL_FILE, text.as_bytes(), 0o644)
}

/// Load `terminal.toml`.
pub fn load_record(dir: &Path) -> anyhow::Result<TerminalRecord> {
    let path = dir.join(TERMINAL_FILE);
    let text = fs::read_to_string(&path).with_context(|| {
        format!("cannot read {}; is this terminal enrolled? (cardbridge-agent enrol)", path.display())
    })?;
    toml::from_str(&text).with_context(|| format!("{} is not a valid enrolment record", path.display()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh directory under the system temporary directory, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new() -> TempDir {
            let path = std::env::temp_dir().join(format!("cardbridge-agent-test-{:016x}", rand::random::<u64>()));
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[cfg(unix)]
    #[test]
    fn the_key_is_written_with_mode_0600_and_reads_back() {
        let dir = TempDir::new();
        let key = protocol::envelope::generate_key();

        save_key(&dir.0, &key).unwrap();

        assert_eq!(mode_of(&dir.0.join(KEY_FILE)), 0o600);
        assert_eq!(load_key(&dir.0).unwrap().to_bytes(), key.to_bytes());
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(&dir.0).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(KEY_FILE)]);
    }

    #[cfg(unix)]
    #[test]
    fn a_key_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new();
        save_key(&dir.0, &protocol::envelope::generate_key()).unwrap();
        let path = dir.0.join(KEY_FILE);

        for loose in [0o644, 0o640, 0o604, 0o660, 0o700 | 0o002] {
            fs::set_permissions(&path, fs::Permissions::from_mode(loose)).unwrap();
            let error = load_key(&dir.0).unwrap_err().to_string();
            assert!(error.contains("private to its owner"), "{loose:o}: {error}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(load_key(&dir.0).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn a_new_state_dir_is_private() {
        let dir = TempDir::new();
        let state = dir.0.join("state");

        ensure_dir(&state).unwrap();

        assert_eq!(mode_of(&state), 0o700);
    }

    #[test]
    fn a_garbled_key_file_is_an_error_not_a_panic() {
        let dir = TempDir::new();
        write_atomically(&dir.0, KEY_FILE, b"not hex\n", 0o600).unwrap();

        let error = load_key(&dir.0).unwrap_err().to_string();

        assert!(error.contains("32-byte hex key"), "{error}");
    }

    #[test]
    fn the_record_round_trips_and_pins_the_server_key() {
        let dir = TempDir::new();
        let server = protocol::envelope::generate_key();
        let record = TerminalRecord {
            server_url: "https://bank.example/".into(),
            terminal_id: "t-1".into(),
            terminal_name: "Branch 7 desk 2".into(),
            server_public_key: hex::encode(server.verifying_key().to_bytes()),
        };

        save_record(&dir.0, &record).unwrap();
        let loaded = load_record(&dir.0).unwrap();

        assert_eq!(loaded, record);
        assert_eq!(loaded.pinned_server_key().unwrap(), server.verifying_key());
    }

    #[test]
    fn a_missing_enrolment_says_how_to_enrol() {
        let dir = TempDir::new();

        let error = format!("{:#}", load_record(&dir.0).unwrap_err());

        assert!(error.contains("cardbridge-agent enrol"), "{error}");
        assert!(!is_enrolled(&dir.0));
    }
}
