//! Terminal administration shared by the admin API and the command line: creation with a
//! one-time enrolment code, and the per-terminal permission switch. Both are audited.

use rand::Rng;

use crate::store::{Store, StoreResult};

/// Enrolment codes are single use and live 15 minutes at most.
pub const ENROLMENT_CODE_TTL_MS: i64 = 15 * 60 * 1000;

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

pub async fn create(store: &Store, name: &str, actor: &str) -> StoreResult<Created> {
    let name = name.trim();
    let terminal = store.create_terminal(name).await?;
    let enrolment_code = new_enrolment_code();
    let expires_at = store.create_enrolment_code(&terminal.terminal_id, &enrolment_code, ENROLMENT_CODE_TTL_MS).await?;
    store.audit(actor, "terminal.create", &terminal.terminal_id, name).await?;
    Ok(Created { terminal_id: terminal.terminal_id, enrolment_code, expires_at })
}

pub async fn set_permitted(store: &Store, terminal_id: &str, permitted: bool, actor: &str) -> StoreResult<()> {
    store.set_terminal_permitted(terminal_id, permitted).await?;
    let action = if permitted { "terminal.permit" } else { "terminal.forbid" };
    store.audit(actor, action, terminal_id, "").await
}
