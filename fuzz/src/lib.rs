//! Helpers shared by the fuzz targets: a card whose answers the fuzzer chooses, and the fixed keys and times the targets sign and verify with
//!
//! [`FuzzedCard`] starts from a simulated card of `card::sim` (a recorded or modelled real card,
//! or a demo purse) and, for every command APDU, lets the fuzzer's input decide whether the card's
//! true answer goes back as it is or changed: other data, another status word, flipped or cut
//! bytes, or bytes of the input's own. An exhausted input passes every answer through, so an
//! empty input is a complete, valid read of the chosen card and each input byte is a deviation
//! from it: the fuzzer starts at the end of the happy path and works outwards.

use card::batch::{self, Batch};
use card::sim::SimCard;
use libfuzzer_sys::arbitrary::{self, Unstructured};

/// The cards the EMV read target can start from: the catalogue (recorded and modelled cards) and
/// the broken ones.
pub fn payment_card_names() -> Vec<&'static str> {
    card::sim::catalogue()
        .iter()
        .map(|entry| entry.name)
        .chain(card::sim::BROKEN_CARDS.iter().copied())
        .collect()
}

/// A simulated card whose answers the fuzzer perturbs.
pub struct FuzzedCard<'a, 'u> {
    pub card: Box<dyn SimCard>,
    pub input: &'a mut Unstructured<'u>,
}

impl FuzzedCard<'_, '_> {
    /// The answer to one command APDU, as `card::apdu::Transmit` wants it.
    pub fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, arbitrary::Error> {
        let honest = self.card.transmit(apdu);
        // An exhausted input reads as zeros: the honest answer.
        let choice: u8 = self.input.arbitrary()?;
        let u = &mut *self.input;
        Ok(match choice {
            // Most choices keep the honest answer, so the fuzzer can reach deep stages.
            0..=127 => honest,
            // Other data, the card's status word.
            128..=159 => {
                let mut data: Vec<u8> = u.arbitrary()?;
                data.extend_from_slice(sw_of(&honest));
                data
            }
            // The card's data, another status word.
            160..=191 => {
                let mut raw = honest.get(..honest.len().saturating_sub(2)).unwrap_or_default().to_vec();
                raw.extend_from_slice(&u.arbitrary::<[u8; 2]>()?);
                raw
            }
            // One byte of the answer changed.
            192..=223 => {
                let mut raw = honest;
                if !raw.is_empty() {
                    let at = u.choose_index(raw.len())?;
                    raw[at] ^= u.arbitrary::<u8>()?.max(1);
                }
                raw
            }
            // The answer cut short (less than two bytes is a card gone mid-command).
            224..=239 => {
                let keep = u.choose_index(honest.len() + 1)?;
                honest[..keep].to_vec()
            }
            // Whatever the input says.
            _ => u.arbitrary()?,
        })
    }

    /// Run `batch` on the card as the agent does (`batch::execute`: GET RESPONSE on `61xx`,
    /// resend on `6Cxx`), then maybe bend the shape of the answer, which the sessions must check.
    /// `None` when the exchange failed (a card gone mid-command): the session is over.
    pub fn run(&mut self, batch: &Batch) -> Option<Vec<Vec<Vec<u8>>>> {
        let mut responses = {
            let mut transmit = |apdu: &[u8]| self.transmit(apdu);
            batch::execute(batch, &mut transmit).ok()?
        };
        let bend: u8 = self.input.arbitrary().unwrap_or(0);
        match bend {
            250 => {
                responses.pop();
            }
            251 => responses.push(Vec::new()),
            252 => {
                if let Some(group) = responses.last_mut() {
                    group.push(vec![0x90, 0x00]);
                }
            }
            253 => {
                if let Some(group) = responses.first_mut() {
                    group.pop();
                }
            }
            254 => {
                if let Some(answer) = responses.first_mut().and_then(|g| g.first_mut()) {
                    answer.truncate(1);
                }
            }
            _ => {}
        }
        Some(responses)
    }
}

/// The status word of a raw answer (the last two bytes), or nothing.
fn sw_of(raw: &[u8]) -> &[u8] {
    raw.get(raw.len().saturating_sub(2)..).filter(|sw| sw.len() == 2).unwrap_or_default()
}

/// The fixed "now" of the envelope target, in unix milliseconds.
pub const NOW_MS: i64 = 1_800_000_000_000;
/// The terminal the envelope target's verifier belongs to.
pub const TERMINAL_ID: &str = "t_fuzz";
/// The challenge nonce of the envelope target's connection.
pub const CHALLENGE_NONCE: &[u8] = b"fuzz-challenge-nonce-0001";
/// The command id the envelope target's replies must answer.
pub const COMMAND_ID: &str = "c_fuzz";

/// The server's signing key of the envelope target (a fixed test key).
pub fn server_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[0x5E; 32])
}

/// The terminal's signing key of the envelope target (a fixed test key).
pub fn terminal_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[0x7E; 32])
}
