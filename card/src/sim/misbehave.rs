//! A wrapper that makes any simulated card misbehave: slow answers, vanishing mid-command, malformed TLV

use std::time::Duration;

use crate::tlv;

use super::SimCard;

/// When a [`Misbehave`] card vanishes. A vanished card answers every command with an empty
/// response (what vpcd reports when the card closed its socket) until it is reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vanish {
    /// Answer this many commands normally, vanish on the next one.
    AfterCommands(usize),
    /// Vanish on the first command with this INS. With `executed`, the card runs the command
    /// before vanishing (a torn write whose effect happened); without, it never sees it.
    OnIns { ins: u8, executed: bool },
}

/// Wraps a card and misbehaves as configured; with nothing configured it is transparent.
pub struct Misbehave {
    inner: Box<dyn SimCard>,
    delay: Duration,
    vanish: Option<Vanish>,
    malformed_tlv: bool,
    commands: usize,
    vanished: bool,
}

impl Misbehave {
    pub fn new(inner: Box<dyn SimCard>) -> Self {
        Misbehave {
            inner,
            delay: Duration::ZERO,
            vanish: None,
            malformed_tlv: false,
            commands: 0,
            vanished: false,
        }
    }

    /// Wait this long before every answer (blocks the calling thread).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn vanish(mut self, when: Vanish) -> Self {
        self.vanish = Some(when);
        self
    }

    /// Cut every successful response whose data is BER-TLV to half its length, keeping `9000`:
    /// the outer template then claims more bytes than there are.
    pub fn malformed_tlv(mut self, on: bool) -> Self {
        self.malformed_tlv = on;
        self
    }

    /// Whether the card has vanished (a vpcd bridge closes its socket then).
    pub fn vanished(&self) -> bool {
        self.vanished
    }

    pub fn inner(&self) -> &dyn SimCard {
        self.inner.as_ref()
    }

    pub fn inner_mut(&mut self) -> &mut dyn SimCard {
        self.inner.as_mut()
    }
}

impl SimCard for Misbehave {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn atr(&self) -> Vec<u8> {
        self.inner.atr()
    }

    fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        if self.vanished {
            return Vec::new();
        }
        self.commands += 1;
        match self.vanish {
            Some(Vanish::AfterCommands(n)) if self.commands > n => {
                self.vanished = true;
                return Vec::new();
            }
            Some(Vanish::OnIns { ins, executed }) if apdu.get(1) == Some(&ins) => {
                if executed {
                    self.inner.transmit(apdu);
                }
                self.vanished = true;
                return Vec::new();
            }
            _ => {}
        }
        let mut response = self.inner.transmit(apdu);
        if self.malformed_tlv {
            if let [data @ .., 0x90, 0x00] = response.as_slice() {
                if !data.is_empty() && tlv::parse(data).is_ok() {
                    let keep = data.len() / 2;
                    response = [&data[..keep], &[0x90, 0x00]].concat();
                }
            }
        }
        response
    }

    /// A reset brings a vanished card back and restarts the command count.
    fn reset(&mut self) {
        self.inner.reset();
        self.vanished = false;
        self.commands = 0;
    }
}
