//! The terminal owner's local policy (`policy.toml`), enforced on top of the server's signature.
//!
//! ```toml
//! # Refuse instructions that write to the card or move value, even when the server signed them.
//! read_only = true
//! # Readers this agent may use (exact PC/SC names); empty or absent = all.
//! allowed_readers = ["Cardbridge Virtual Reader 0"]
//! ```
//!
//! The server cannot change this file: it lives on the terminal, must not be writable by group or
//! others, and must belong to the state directory's owner or to root (so an administrator can lock
//! a terminal read-only). A policy file that does not parse stops the agent: failing open would
//! silently lift a restriction the owner asked for.

use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::state::POLICY_FILE;

/// The parsed local policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalPolicy {
    /// Refuse write and value-moving instructions (see [`write_instruction`]).
    #[serde(default)]
    pub read_only: bool,
    /// Readers this agent may use; empty means all.
    #[serde(default)]
    pub allowed_readers: Vec<String>,
}

/// Why the local policy refused a command. The message goes back to the server as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyRefusal {
    #[error("this terminal is read-only: APDU {index} ({instruction}) is refused by the local policy")]
    WriteInstruction { index: usize, instruction: &'static str },
    #[error("reader \"{0}\" is not allowed by the local policy")]
    ReaderNotAllowed(String),
}

impl LocalPolicy {
    /// Parse the text of a `policy.toml`.
    pub fn parse(text: &str) -> anyhow::Result<LocalPolicy> {
        let policy: LocalPolicy = toml::from_str(text).context("policy.toml is not a valid policy")?;
        if policy.allowed_readers.iter().any(|r| r.trim().is_empty()) {
            bail!("policy.toml: allowed_readers contains an empty reader name");
        }
        Ok(policy)
    }

    /// Load `policy.toml` from the state directory; no file means the default (everything allowed).
    pub fn load(state_dir: &Path) -> anyhow::Result<LocalPolicy> {
        let path = state_dir.join(POLICY_FILE);
        let metadata = match std::fs::metadata(&path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LocalPolicy::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        check_owned_by_owner(state_dir, &path, &metadata)?;
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        LocalPolicy::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// What the server is told in `Hello.policy`.
    pub fn report(&self) -> protocol::agent::LocalPolicyReport {
        protocol::agent::LocalPolicyReport { read_only: self.read_only, allowed_readers: self.allowed_readers.clone() }
    }

    /// May this agent use the reader called `name`?
    pub fn reader_allowed(&self, name: &str) -> bool {
        self.allowed_readers.is_empty() || self.allowed_readers.iter().any(|r| r == name)
    }

    /// Check every APDU of a batch before any of it reaches the card.
    pub fn check_apdus<'a>(&self, apdus: impl IntoIterator<Item = &'a [u8]>) -> Result<(), PolicyRefusal> {
        if !self.read_only {
            return Ok(());
        }
        for (index, apdu) in apdus.into_iter().enumerate() {
            if let Some(instruction) = write_instruction(apdu) {
                return Err(PolicyRefusal::WriteInstruction { index, instruction });
            }
        }
        Ok(())
    }
}

#[cfg(unix)]
fn check_owned_by_owner(state_dir: &Path, path: &Path, metadata: &std::fs::Metadata) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mode = metadata.mode() & 0o777;
    if mode & 0o022 != 0 {
        bail!(
            "{} has mode {mode:04o}; the local policy must not be writable by group or others \
             (chmod go-w {})",
            path.display(),
            path.display()
        );
    }
    let dir_owner = std::fs::metadata(state_dir).with_context(|| format!("cannot read {}", state_dir.display()))?.uid();
    if metadata.uid() != dir_owner && metadata.uid() != 0 {
        bail!(
            "{} belongs to uid {}; it must belong to the terminal owner (uid {dir_owner}) or root",
            path.display(),
            metadata.uid()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owned_by_owner(_: &Path, _: &Path, _: &std::fs::Metadata) -> anyhow::Result<()> {
    Ok(())
}

/// Instructions a read-only terminal refuses, in any class: the ISO 7816-4 write and
/// file-management instructions (both INS parities), plus `C2`/`C3` ENVELOPE, which can carry any
/// other command. PC/SC reader pseudo-APDUs (`FF D6` = UPDATE BINARY on a memory card) are covered
/// because the class does not matter here.
const INTERINDUSTRY_WRITES: &[(u8, &str)] = &[
    (0x0C, "ERASE RECORD"),
    (0x0E, "ERASE BINARY"),
    (0x0F, "ERASE BINARY"),
    (0x04, "DEACTIVATE FILE"),
    (0x24, "CHANGE REFERENCE DATA"),
    (0x26, "DISABLE VERIFICATION REQUIREMENT"),
    (0x28, "ENABLE VERIFICATION REQUIREMENT"),
    (0x2C, "RESET RETRY COUNTER / UNBLOCK"),
    (0x44, "ACTIVATE FILE"),
    (0x46, "GENERATE ASYMMETRIC KEY PAIR"),
    (0xC2, "ENVELOPE"),
    (0xC3, "ENVELOPE"),
    (0xD0, "WRITE BINARY"),
    (0xD1, "WRITE BINARY"),
    (0xD2, "WRITE RECORD"),
    (0xD6, "UPDATE BINARY"),
    (0xD7, "UPDATE BINARY"),
    (0xDA, "PUT DATA"),
    (0xDB, "PUT DATA"),
    (0xDC, "UPDATE RECORD"),
    (0xDD, "UPDATE RECORD"),
    (0xE0, "CREATE FILE"),
    (0xE2, "APPEND RECORD"),
    (0xE4, "DELETE FILE"),
    (0xE6, "TERMINATE DF"),
    (0xE8, "TERMINATE CARD USAGE"),
];

/// Instructions refused in the proprietary classes (`CLA` `80`–`FE`: PBOC/EMV/GlobalPlatform), where
/// the INS codes mean value transactions, PIN and application management, or card content changes.
const PROPRIETARY_WRITES: &[(u8, &str)] = &[
    (0x16, "CARD BLOCK"),
    (0x18, "APPLICATION UNBLOCK"),
    (0x1E, "APPLICATION BLOCK"),
    (0x50, "INITIALIZE FOR LOAD / PURCHASE"),
    (0x52, "CREDIT FOR LOAD"),
    (0x54, "PURCHASE / DEBIT"),
    (0x58, "UPDATE OVERDRAW LIMIT"),
    (0x5E, "RELOAD / CHANGE PIN"),
    (0xAE, "GENERATE AC"),
    (0xD8, "PUT KEY"),
    (0xF0, "SET STATUS"),
];

/// The name of the write or value-moving instruction `apdu` carries, if it carries one.
pub fn write_instruction(apdu: &[u8]) -> Option<&'static str> {
    let (&cla, &ins) = (apdu.first()?, apdu.get(1)?);
    if let Some((_, name)) = INTERINDUSTRY_WRITES.iter().find(|(code, _)| *code == ins) {
        return Some(name);
    }
    let proprietary = cla & 0x80 != 0 && cla != 0xFF;
    if proprietary {
        if let Some((_, name)) = PROPRIETARY_WRITES.iter().find(|(code, _)| *code == ins) {
            return Some(name);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::TempDir;

    fn read_only() -> LocalPolicy {
        LocalPolicy { read_only: true, allowed_readers: vec![] }
    }

    #[test]
    fn a_read_only_policy_refuses_every_listed_write_instruction() {
        let writes: &[&[u8]] = &[
            &[0x00, 0xD6, 0x00, 0x00, 0x01, 0xAA],
            &[0x00, 0xDC, 0x01, 0x0C, 0x01, 0xAA],
            &[0x00, 0xE2, 0x00, 0x00, 0x01, 0xAA],
            &[0x00, 0xD0, 0x00, 0x00, 0x01, 0xAA],
            &[0x00, 0xDA, 0x9F, 0x4F, 0x01, 0xAA],
            &[0x04, 0xDA, 0x9F, 0x4F, 0x01, 0xAA],
            &[0x00, 0x0E, 0x00, 0x00],
            &[0x00, 0xE0, 0x00, 0x00, 0x01, 0xAA],
            &[0x00, 0xE4, 0x00, 0x00],
            &[0x00, 0x24, 0x00, 0x80, 0x01, 0xAA],
            &[0x84, 0x24, 0x00, 0x00, 0x01, 0xAA],
            &[0x00, 0x2C, 0x00, 0x80],
            &[0x80, 0x2C, 0x00, 0x00],
            &[0x80, 0x50, 0x00, 0x02, 0x0B, 1, 0, 0, 0, 100, 0, 0, 0, 0, 0, 1, 0x10],
            &[0x80, 0x52, 0x00, 0x00, 0x0B, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x04],
            &[0x80, 0x54, 0x01, 0x00, 0x0F],
            &[0x84, 0x54, 0x01, 0x00, 0x0F],
            &[0xFF, 0xD6, 0x00, 0x04, 0x04, 1, 2, 3, 4],
        ];

        for apdu in writes {
            let result = read_only().check_apdus([*apdu]);
            assert!(
                matches!(result, Err(PolicyRefusal::WriteInstruction { index: 0, .. })),
                "{} should be refused",
                hex::encode_upper(apdu)
            );
        }
    }

    #[test]
    fn a_read_only_policy_lets_the_reads_through() {
        let reads: &[&[u8]] = &[
            &hex_apdu("00A404000E325041592E5359532E444446303100"),
            &hex_apdu("00A4040008A00000033301010100"),
            &hex_apdu("80A8000002830000"),
            &hex_apdu("00B2010C00"),
            &hex_apdu("805C000204"),
            &hex_apdu("805A000002"),
            &hex_apdu("80CA9F3600"),
            &hex_apdu("00C0000010"),
            &hex_apdu("FFCA000000"),
            &hex_apdu("0020008008"),
            // INS 50 means nothing in the interindustry class.
            &hex_apdu("0050000000"),
        ];

        assert_eq!(read_only().check_apdus(reads.iter().copied()), Ok(()));
    }

    #[test]
    fn the_refusal_names_the_first_offending_apdu() {
        let batch = [hex_apdu("805C000204"), hex_apdu("80500002"), hex_apdu("00D60000")];

        let refusal = read_only().check_apdus(batch.iter().map(|a| a.as_slice())).unwrap_err();

        assert_eq!(
            refusal,
            PolicyRefusal::WriteInstruction { index: 1, instruction: "INITIALIZE FOR LOAD / PURCHASE" }
        );
    }

    #[test]
    fn a_writable_policy_allows_writes_and_short_apdus_never_panic() {
        let policy = LocalPolicy::default();

        assert_eq!(policy.check_apdus([&[0x00u8, 0xD6, 0, 0][..]]), Ok(()));
        assert_eq!(read_only().check_apdus([&[][..], &[0x00u8][..]]), Ok(()));
    }

    #[test]
    fn policy_files_parse_with_defaults() {
        assert_eq!(LocalPolicy::parse("").unwrap(), LocalPolicy::default());
        assert_eq!(
            LocalPolicy::parse("read_only = true\nallowed_readers = [\"A\", \"B\"]\n").unwrap(),
            LocalPolicy { read_only: true, allowed_readers: vec!["A".into(), "B".into()] }
        );
    }

    #[test]
    fn a_misspelt_or_mistyped_policy_is_an_error() {
        assert!(LocalPolicy::parse("readonly = true").is_err());
        assert!(LocalPolicy::parse("read_only = \"yes\"").is_err());
        assert!(LocalPolicy::parse("allowed_readers = \"A\"").is_err());
        assert!(LocalPolicy::parse("allowed_readers = [\"\"]").is_err());
    }

    #[test]
    fn an_empty_reader_list_allows_every_reader() {
        let open = LocalPolicy::default();
        let narrow = LocalPolicy { read_only: false, allowed_readers: vec!["A".into()] };

        assert!(open.reader_allowed("anything"));
        assert!(narrow.reader_allowed("A"));
        assert!(!narrow.reader_allowed("B"));
        assert_eq!(narrow.report().allowed_readers, vec!["A".to_string()]);
    }

    #[test]
    fn no_policy_file_means_the_default() {
        let dir = TempDir::new();

        assert_eq!(LocalPolicy::load(&dir.0).unwrap(), LocalPolicy::default());
    }

    #[cfg(unix)]
    #[test]
    fn a_policy_file_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new();
        let path = dir.0.join(POLICY_FILE);
        std::fs::write(&path, "read_only = true\n").unwrap();

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(LocalPolicy::load(&dir.0).unwrap().read_only);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let error = LocalPolicy::load(&dir.0).unwrap_err().to_string();
        assert!(error.contains("must not be writable"), "{error}");
    }

    fn hex_apdu(text: &str) -> Vec<u8> {
        hex::decode(text).unwrap()
    }
}
