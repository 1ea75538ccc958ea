//! Terminal administration shared by the admin API and the command line: terminal names that
//! parse, creation with a one-time enrolment code, and the per-terminal permission switch. Both
//! are audited.

use rand::Rng;

use crate::store::{Store, StoreError, StoreResult};

/// Enrolment codes are single use and live 15 minutes at most.
pub const ENROLMENT_CODE_TTL_MS: i64 = 15 * 60 * 1000;

/// Terminal names are at most this many characters (after trimming).
pub const MAX_TERMINAL_NAME_CHARS: usize = 64;

/// A terminal name people see in the admin page and the audit log: trimmed, 1 to 64 characters,
/// no control characters and no bidirectional overrides (which make a name display as another).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TerminalNameError {
    #[error("the terminal name is empty")]
    Empty,
    #[error("the terminal name is longer than {MAX_TERMINAL_NAME_CHARS} characters")]
    TooLong,
    #[error("the terminal name contains a control character")]
    ControlCharacter,
}

impl TerminalName {
    pub fn parse(name: &str) -> Result<TerminalName, TerminalNameError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(TerminalNameError::Empty);
        }
        if name.chars().count() > MAX_TERMINAL_NAME_CHARS {
            return Err(TerminalNameError::TooLong);
        }
        if name.chars().any(is_forbidden) {
            return Err(TerminalNameError::ControlCharacter);
        }
        Ok(TerminalName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TerminalName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Control characters, and the Unicode format characters that reorder or hide text.
fn is_forbidden(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    InvalidName(#[from] TerminalNameError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug)]
pub struct Created {
    pub terminal_id: String,
    pub enrolment_code: String,
    pub expires_at: i64,
}

/// A code people can read aloud: 16 characters from an alphabet without look-alikes (~80 bits).
pub fn new_enrolment_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    let chars: Vec<char> = (0..16).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect();
    chars.chunks(4).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join("-")
}

/// Parse `name` as a [`TerminalName`] and create the terminal.
pub async fn create(store: &Store, name: &str, actor: &str) -> Result<Created, CreateError> {
    let name = TerminalName::parse(name)?;
    Ok(create_named(store, &name, actor).await?)
}

pub async fn create_named(store: &Store, name: &TerminalName, actor: &str) -> StoreResult<Created> {
    let mut tx = store.begin().await?;
    let terminal_id = tx.create_terminal(name.as_str()).await?;
    let enrolment_code = new_enrolment_code();
    let expires_at = tx.create_enrolment_code(&terminal_id, &enrolment_code, ENROLMENT_CODE_TTL_MS).await?;
    tx.audit(actor, "terminal.create", &terminal_id, name.as_str()).await?;
    tx.commit().await?;
    Ok(Created { terminal_id, enrolment_code, expires_at })
}

pub async fn set_permitted(store: &Store, terminal_id: &str, permitted: bool, actor: &str) -> StoreResult<()> {
    let action = if permitted { "terminal.permit" } else { "terminal.forbid" };
    let mut tx = store.begin().await?;
    tx.set_terminal_permitted(terminal_id, permitted).await?;
    tx.audit(actor, action, terminal_id, "").await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(TerminalName::parse("  Desk 1  ").unwrap().as_str(), "Desk 1");
        assert_eq!(TerminalName::parse("Schalter Zürich 3").unwrap().as_str(), "Schalter Zürich 3");
        assert_eq!(TerminalName::parse(&"é".repeat(64)).unwrap().as_str().chars().count(), 64);
        assert_eq!(TerminalName::parse("   "), Err(TerminalNameError::Empty));
        assert_eq!(TerminalName::parse(&"x".repeat(65)), Err(TerminalNameError::TooLong));
    }

    #[test]
    fn control_and_reordering_characters_are_refused() {
        for name in ["Desk\n2025-01-01 INFO forged", "Desk\u{1b}[31m", "Desk\u{7f}", "Desk\u{202e}1", "Desk\u{200b}"] {
            assert_eq!(TerminalName::parse(name), Err(TerminalNameError::ControlCharacter), "{name:?}");
        }
    }
}
