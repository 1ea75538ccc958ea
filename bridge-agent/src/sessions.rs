//! The connection sessions this terminal has joined, kept in `sessions` in the state directory, so
//! that no agent process ever joins a session twice — and so no command runs twice across a restart.
//!
//! Every command is bound to the session of one connection ([`protocol::envelope::session_id`] of
//! the server's challenge nonce). Within a process the [`protocol::envelope::CommandVerifier`]
//! remembers nonces; a restarted process does not, so it must never accept commands of a session
//! an earlier process accepted commands on. The agent therefore records a session here (file
//! `0600`, written atomically and synced) *before* it answers the challenge, and refuses to answer
//! a challenge whose session is recorded.
//!
//! An entry is needed only while a command accepted on that session could still verify: a
//! command is accepted at most while its session is live, so it expires at the latest
//! [`REMEMBER_MS`] after the session ended. A session is `open` while this process uses it; when
//! the connection ends it gets `until = end + REMEMBER_MS`. An `open` entry found at start-up was
//! left by a process that stopped before now, so it gets `until = now + REMEMBER_MS`.
//!
//! Format, one entry a line: `<session hex> open` or `<session hex> <until, ms since epoch>`;
//! lines starting with `#` are comments. A garbled file is an error, never silently emptied.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use protocol::envelope::{CLOCK_SKEW_MS, MAX_COMMAND_LIFETIME_MS};

use crate::state;

pub const SESSIONS_FILE: &str = "sessions";

/// How long after a session ended a command accepted on it could still verify: issued at most
/// [`CLOCK_SKEW_MS`] "in the future", valid at most [`MAX_COMMAND_LIFETIME_MS`], accepted up to
/// [`CLOCK_SKEW_MS`] after its expiry.
pub const REMEMBER_MS: i64 = MAX_COMMAND_LIFETIME_MS + 2 * CLOCK_SKEW_MS;

/// Why a session cannot be joined.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("this terminal already joined the session of this challenge; a replayed challenge is not answered")]
    AlreadyJoined,
    #[error(transparent)]
    Io(#[from] anyhow::Error),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    session: Vec<u8>,
    /// `None` while the session is live in this process.
    until_ms: Option<i64>,
}

/// The persisted set of joined sessions.
#[derive(Debug)]
pub struct SessionLog {
    dir: PathBuf,
    entries: Vec<Entry>,
}

impl SessionLog {
    /// Load `sessions` from `dir` (missing: none yet). Entries left `open` by an earlier process
    /// are kept for [`REMEMBER_MS`] from `now_ms`.
    pub fn load(dir: &Path, now_ms: i64) -> anyhow::Result<SessionLog> {
        let path = dir.join(SESSIONS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
        };
        let mut entries = parse(&text).with_context(|| {
            format!(
                "{} is garbled; the agent cannot tell which sessions it joined. Stop every agent, wait {} \
                 minutes, then delete the file",
                path.display(),
                (REMEMBER_MS + 59_999) / 60_000
            )
        })?;
        for entry in &mut entries {
            if entry.until_ms.is_none() {
                entry.until_ms = Some(now_ms + REMEMBER_MS);
            }
        }
        let mut log = SessionLog { dir: dir.to_path_buf(), entries };
        log.prune(now_ms);
        Ok(log)
    }

    /// Record `session` as joined (durably) before the challenge is answered; refused if it was
    /// joined before.
    pub fn join(&mut self, session: &[u8], now_ms: i64) -> Result<(), JoinError> {
        self.prune(now_ms);
        if self.entries.iter().any(|e| e.session == session) {
            return Err(JoinError::AlreadyJoined);
        }
        self.entries.push(Entry { session: session.to_vec(), until_ms: None });
        if let Err(error) = self.save() {
            // Not recorded, so not joined: the caller does not answer the challenge.
            self.entries.pop();
            return Err(JoinError::Io(error));
        }
        Ok(())
    }

    /// This process's connection ended at `now_ms`: its sessions (the `open` ones; entries of
    /// earlier processes were closed at load) are kept for [`REMEMBER_MS`] more.
    pub fn end_open_sessions(&mut self, now_ms: i64) -> anyhow::Result<()> {
        if !self.entries.iter().any(|e| e.until_ms.is_none()) {
            return Ok(());
        }
        for entry in self.entries.iter_mut().filter(|e| e.until_ms.is_none()) {
            entry.until_ms = Some(now_ms + REMEMBER_MS);
        }
        self.prune(now_ms);
        self.save()
    }

    fn prune(&mut self, now_ms: i64) {
        self.entries.retain(|e| e.until_ms.is_none_or(|until| until >= now_ms));
    }

    fn save(&self) -> anyhow::Result<()> {
        let mut text = String::from(
            "# Written by cardbridge-agent: connection sessions this terminal joined (see docs/protocol.md).\n\
             # Do not edit: a restarted agent must never join these again.\n",
        );
        for entry in &self.entries {
            let until = entry.until_ms.map_or_else(|| "open".to_string(), |ms| ms.to_string());
            text.push_str(&format!("{} {until}\n", hex::encode(&entry.session)));
        }
        state::write_atomically(&self.dir, SESSIONS_FILE, text.as_bytes(), 0o600)
    }
}

fn parse(text: &str) -> anyhow::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(session), Some(until), None) = (fields.next(), fields.next(), fields.next()) else {
            bail!("line {} is not `<session> <until>`", number + 1);
        };
        let session = hex::decode(session).with_context(|| format!("line {}: the session is not hex", number + 1))?;
        if session.is_empty() {
            bail!("line {}: empty session", number + 1);
        }
        let until_ms = match until {
            "open" => None,
            ms => Some(ms.parse::<i64>().with_context(|| format!("line {}: `{ms}` is not a time", number + 1))?),
        };
        entries.push(Entry { session, until_ms });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::TempDir;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn a_session_is_joined_once_also_after_a_restart() {
        let dir = TempDir::new();
        let mut first = SessionLog::load(&dir.0, NOW).unwrap();
        first.join(b"session-a", NOW).unwrap();

        let again = first.join(b"session-a", NOW + 1);
        // The process stops without leaving (a crash); a new one starts a minute later.
        let mut restarted = SessionLog::load(&dir.0, NOW + 60_000).unwrap();
        let after_restart = restarted.join(b"session-a", NOW + 60_000);

        assert!(matches!(again, Err(JoinError::AlreadyJoined)));
        assert!(matches!(after_restart, Err(JoinError::AlreadyJoined)));
        assert!(restarted.join(b"session-b", NOW + 60_000).is_ok());
    }

    #[test]
    fn a_session_is_forgotten_only_once_its_commands_cannot_verify() {
        let dir = TempDir::new();
        let mut log = SessionLog::load(&dir.0, NOW).unwrap();
        log.join(b"session-a", NOW).unwrap();
        log.end_open_sessions(NOW + 1_000).unwrap();

        let just_before = SessionLog::load(&dir.0, NOW + 1_000 + REMEMBER_MS).unwrap().join(b"session-a", NOW + 1_000 + REMEMBER_MS);
        let after = SessionLog::load(&dir.0, NOW + 1_001 + REMEMBER_MS).unwrap().join(b"session-a", NOW + 1_001 + REMEMBER_MS);

        assert!(matches!(just_before, Err(JoinError::AlreadyJoined)));
        assert!(after.is_ok());
    }

    #[test]
    fn an_open_session_left_by_a_crash_is_kept_from_the_restart_on() {
        let dir = TempDir::new();
        SessionLog::load(&dir.0, NOW).unwrap().join(b"session-a", NOW).unwrap();
        // Restarted long after the session was joined: the session may have been live until then.
        let restart = NOW + 10 * REMEMBER_MS;
        let mut log = SessionLog::load(&dir.0, restart).unwrap();

        assert!(matches!(log.join(b"session-a", restart + REMEMBER_MS - 1), Err(JoinError::AlreadyJoined)));
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private_and_a_garbled_file_is_an_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new();
        SessionLog::load(&dir.0, NOW).unwrap().join(b"session-a", NOW).unwrap();
        let path = dir.0.join(SESSIONS_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;

        std::fs::write(&path, "zz open\n").unwrap();
        let garbled = SessionLog::load(&dir.0, NOW).unwrap_err();

        assert_eq!(mode, 0o600);
        assert!(format!("{garbled:#}").contains("garbled"), "{garbled:#}");
    }
}
