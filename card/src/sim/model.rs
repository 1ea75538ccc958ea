//! A small EMV card model: payment directories, applications with PDOL, GPO and records, and the T=0 habits (`61xx` chains, `6Cxx` on a wrong Le)
//!
//! Not a replay: the model decodes each command and answers from its file system and state, so
//! it answers any correct reader, not only one that sends the recorded commands.

use std::collections::BTreeMap;

use crate::crypto::DoubleKey;
use crate::emv::cryptogram;
use crate::tlv::{self, encode as t};

use super::SimCard;

pub(crate) const PPSE: &[u8] = b"2PAY.SYS.DDF01";
pub(crate) const PSE: &[u8] = b"1PAY.SYS.DDF01";

const SW_OK: u16 = 0x9000;

/// How GET PROCESSING OPTIONS answers.
#[derive(Clone)]
pub(crate) enum GpoFormat {
    /// `80`: AIP ‖ AFL.
    One,
    /// `77`: 82 AIP, 94 AFL, and these further encoded objects.
    Two { extra: Vec<u8> },
}

/// One payment application on the card (no Debug: it holds card numbers).
#[derive(Clone)]
pub(crate) struct AppSpec {
    pub aid: Vec<u8>,
    pub label: &'static str,
    pub priority: Option<u8>,
    /// Raw PDOL (tag, length pairs); empty for none.
    pub pdol: Vec<u8>,
    /// Decline GPO (6985) unless the TTQ the terminal sends says "contactless EMV mode supported".
    pub needs_contactless_ttq: bool,
    pub gpo: GpoFormat,
    pub aip: [u8; 2],
    /// AFL entries, 4 bytes each.
    pub afl: Vec<u8>,
    /// (SFI, record) → the whole record (a `70` template).
    pub records: BTreeMap<(u8, u8), Vec<u8>>,
    /// The ICC master key for application cryptograms, for cards an issuer personalised with
    /// keys (see [`super::issuer`]); `None`: GENERATE AC is not supported (`6D00`).
    pub icc_key: Option<DoubleKey>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Selected {
    Nothing,
    Ppse,
    Pse,
    App(usize),
}

/// A card made of applications, optionally with a PPSE and a PSE.
pub(crate) struct ModelCard {
    pub name: &'static str,
    pub atr: Vec<u8>,
    pub uid: Option<Vec<u8>>,
    pub ppse: bool,
    /// SFI of the PSE directory file, when the card has a PSE.
    pub pse_sfi: Option<u8>,
    pub apps: Vec<AppSpec>,
    /// `Some(n)`: answer like a T=0 card, data through GET RESPONSE in chunks of at most `n` bytes
    /// and `6Cxx` when a case 2 command's Le is not the exact length.
    pub t0_chunk: Option<u8>,
    selected: Selected,
    pending: Vec<u8>,
    /// GET PROCESSING OPTIONS ran on the selected application and no GENERATE AC since.
    transaction_open: bool,
    /// Application Transaction Counter; non-volatile, one step per GENERATE AC.
    atc: u16,
}

/// A parsed short command APDU.
pub(crate) struct Command<'a> {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    pub data: &'a [u8],
    pub le: Option<u8>,
}

impl<'a> Command<'a> {
    pub fn parse(raw: &'a [u8]) -> Option<Command<'a>> {
        let &[cla, ins, p1, p2] = raw.first_chunk::<4>()?;
        let rest = &raw[4..];
        let (data, le) = match rest {
            [] => (&rest[..0], None),
            [le] => (&rest[..0], Some(*le)),
            [lc, body @ ..] if *lc != 0 && body.len() == usize::from(*lc) => (body, None),
            [lc, body @ .., le] if *lc != 0 && body.len() == usize::from(*lc) => (body, Some(*le)),
            _ => return None,
        };
        Some(Command {
            cla,
            ins,
            p1,
            p2,
            data,
            le,
        })
    }
}

impl ModelCard {
    pub fn new(name: &'static str, atr: Vec<u8>, apps: Vec<AppSpec>) -> Self {
        ModelCard {
            name,
            atr,
            uid: None,
            ppse: false,
            pse_sfi: None,
            apps,
            t0_chunk: None,
            selected: Selected::Nothing,
            pending: Vec::new(),
            transaction_open: false,
            atc: 0x0010,
        }
    }

    /// The logical answer to a command: data and status word.
    fn process(&mut self, c: &Command) -> (Vec<u8>, u16) {
        match (c.cla, c.ins) {
            (0xFF, 0xCA) if c.p1 == 0 && c.p2 == 0 => match &self.uid {
                Some(uid) => (uid.clone(), SW_OK),
                None => (Vec::new(), 0x6A81),
            },
            (0x00, 0xA4) if c.p1 == 0x04 => self.select(c.data),
            (0x00, 0xA4) => (Vec::new(), 0x6A86),
            (0x00, 0xB2) => self.read_record(c.p1, c.p2),
            (0x80, 0xA8) if c.p1 == 0 && c.p2 == 0 => self.gpo(c.data),
            (0x80, 0xAE) if c.p2 == 0 => self.generate_ac(c.p1, c.data),
            (0x80, 0xCA) => (Vec::new(), 0x6A88),
            (0x00 | 0x80, _) => (Vec::new(), 0x6D00),
            _ => (Vec::new(), 0x6E00),
        }
    }

    fn select(&mut self, name: &[u8]) -> (Vec<u8>, u16) {
        if name == PPSE && self.ppse {
            let entries: Vec<u8> = self.apps.iter().flat_map(directory_entry).collect();
            self.selected = Selected::Ppse;
            let fci = t(
                0x6F,
                &[t(0x84, PPSE), t(0xA5, &t(0xBF0C, &entries))].concat(),
            );
            return (fci, SW_OK);
        }
        if let (true, Some(sfi)) = (name == PSE, self.pse_sfi) {
            self.selected = Selected::Pse;
            let fci = t(
                0x6F,
                &[
                    t(0x84, PSE),
                    t(0xA5, &[t(0x88, &[sfi]), t(0x5F2D, b"zhen")].concat()),
                ]
                .concat(),
            );
            return (fci, SW_OK);
        }
        let Some(index) = self
            .apps
            .iter()
            .position(|a| name.len() >= 5 && a.aid.starts_with(name))
        else {
            return (Vec::new(), 0x6A82);
        };
        self.selected = Selected::App(index);
        self.transaction_open = false;
        let app = &self.apps[index];
        let mut proprietary = t(0x50, app.label.as_bytes());
        if let Some(p) = app.priority {
            proprietary.extend(t(0x87, &[p]));
        }
        if !app.pdol.is_empty() {
            proprietary.extend(t(0x9F38, &app.pdol));
        }
        proprietary.extend(
            [
                t(0x5F2D, b"zhen"),
                t(0x9F11, &[0x01]),
                t(0x9F12, app.label.as_bytes()),
                t(0xBF0C, &t(0x9F4D, &[0x0B, 0x0A])),
            ]
            .concat(),
        );
        (
            t(0x6F, &[t(0x84, &app.aid), t(0xA5, &proprietary)].concat()),
            SW_OK,
        )
    }

    fn read_record(&self, record: u8, p2: u8) -> (Vec<u8>, u16) {
        let sfi = p2 >> 3;
        if p2 & 0x07 != 0x04 || record == 0 {
            return (Vec::new(), 0x6A86);
        }
        match self.selected {
            Selected::Pse if Some(sfi) == self.pse_sfi => {
                match self.apps.get(usize::from(record) - 1) {
                    Some(app) => (t(0x70, &directory_entry(app)), SW_OK),
                    None => (Vec::new(), 0x6A83),
                }
            }
            Selected::App(i) => {
                let records = &self.apps[i].records;
                match records.get(&(sfi, record)) {
                    Some(r) => (r.clone(), SW_OK),
                    None if records.keys().any(|&(s, _)| s == sfi) => (Vec::new(), 0x6A83),
                    None => (Vec::new(), 0x6A82),
                }
            }
            _ => (Vec::new(), 0x6A82),
        }
    }

    fn gpo(&mut self, data: &[u8]) -> (Vec<u8>, u16) {
        let Selected::App(i) = self.selected else {
            return (Vec::new(), 0x6985);
        };
        let app = &self.apps[i];
        let Ok(dol) = tlv::parse_dol(&app.pdol) else {
            return (Vec::new(), 0x6F00);
        };
        let expected: usize = dol.iter().map(|&(_, len)| len).sum();
        let values = match tlv::parse(data).as_deref() {
            Ok([cmd]) if cmd.tag == 0x83 && cmd.value.len() == expected => cmd.value.clone(),
            _ => return (Vec::new(), 0x6700),
        };
        if app.needs_contactless_ttq {
            let mut offset = 0;
            for &(tag, len) in &dol {
                if tag == 0x9F66 && values.get(offset).is_none_or(|ttq| ttq & 0x20 == 0) {
                    return (Vec::new(), 0x6985);
                }
                offset += len;
            }
        }
        let response = match &app.gpo {
            GpoFormat::One => t(0x80, &[&app.aip[..], &app.afl].concat()),
            GpoFormat::Two { extra } => t(
                0x77,
                &[t(0x82, &app.aip), t(0x94, &app.afl), extra.clone()].concat(),
            ),
        };
        self.transaction_open = true;
        (response, SW_OK)
    }

    /// First GENERATE AC of a transaction: the card always asks to go online (ARQC) unless the
    /// terminal asks for an AAC. The cryptogram covers the minimum data set from the CDOL1 values,
    /// the AIP and the incremented ATC, under the ATC's session key. Format 2 response.
    fn generate_ac(&mut self, reference: u8, data: &[u8]) -> (Vec<u8>, u16) {
        let Selected::App(i) = self.selected else {
            return (Vec::new(), 0x6985);
        };
        let app = &self.apps[i];
        let Some(icc_key) = app.icc_key else {
            return (Vec::new(), 0x6D00);
        };
        if !self.transaction_open {
            return (Vec::new(), 0x6985);
        }
        let Some(cdol1) = app.records.values().find_map(|r| {
            let tlvs = tlv::parse(r).ok()?;
            tlv::find(&tlvs, 0x8C).map(|c| c.value.clone())
        }) else {
            return (Vec::new(), 0x6985);
        };
        let Ok(terminal_data) = cryptogram::minimum_set_values(&cdol1, data) else {
            return (Vec::new(), 0x6700);
        };
        let aip = app.aip;
        self.transaction_open = false;
        self.atc = self.atc.wrapping_add(1);
        let atc = self.atc.to_be_bytes();
        let cid = if reference & 0xC0 == cryptogram::AAC { cryptogram::AAC } else { cryptogram::ARQC };
        let ac = cryptogram::compute_arqc(&icc_key, atc, &cryptogram::arqc_input(&terminal_data, aip, atc));
        let response = t(
            0x77,
            &[
                t(0x9F27, &[cid]),
                t(0x9F36, &atc),
                t(0x9F26, &ac),
                t(0x9F10, &[0x07, 0x01, 0x01, 0x03, 0xA0, 0x00, 0x00]),
            ]
            .concat(),
        );
        (response, SW_OK)
    }

    /// T=0 transport: data of case 1/3/4 commands waits for GET RESPONSE, case 2 needs the exact Le.
    fn transmit_t0(&mut self, raw: &[u8], chunk: u8, c: &Command) -> Vec<u8> {
        if (c.cla & 0xFC, c.ins) == (0x00, 0xC0) {
            return self.get_response(c.le.unwrap_or(0), chunk);
        }
        self.pending.clear();
        let (data, sw) = self.process(c);
        if sw != SW_OK || data.is_empty() {
            return sw.to_be_bytes().to_vec();
        }
        let case2 = raw.len() == 5;
        if case2 {
            let wanted =
                c.le.map_or(256, |le| if le == 0 { 256 } else { usize::from(le) });
            if wanted != data.len() {
                return vec![0x6C, data.len().min(255) as u8];
            }
            return [data, vec![0x90, 0x00]].concat();
        }
        self.pending = data;
        vec![0x61, self.pending.len().min(usize::from(chunk)) as u8]
    }

    fn get_response(&mut self, le: u8, chunk: u8) -> Vec<u8> {
        if self.pending.is_empty() {
            return vec![0x69, 0x85];
        }
        let wanted = if le == 0 { 256 } else { usize::from(le) };
        if wanted > self.pending.len() {
            return vec![0x6C, self.pending.len().min(255) as u8];
        }
        let mut out: Vec<u8> = self.pending.drain(..wanted).collect();
        if self.pending.is_empty() {
            out.extend([0x90, 0x00]);
        } else {
            out.extend([0x61, self.pending.len().min(usize::from(chunk)) as u8]);
        }
        out
    }
}

/// A directory entry (`61` template) for `app`.
fn directory_entry(app: &AppSpec) -> Vec<u8> {
    let mut entry = [t(0x4F, &app.aid), t(0x50, app.label.as_bytes())].concat();
    if let Some(p) = app.priority {
        entry.extend(t(0x87, &[p]));
    }
    t(0x61, &entry)
}

impl SimCard for ModelCard {
    fn name(&self) -> &str {
        self.name
    }

    fn atr(&self) -> Vec<u8> {
        self.atr.clone()
    }

    fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        let Some(command) = Command::parse(apdu) else {
            self.pending.clear();
            return vec![0x67, 0x00];
        };
        match self.t0_chunk {
            Some(chunk) => self.transmit_t0(apdu, chunk, &command),
            None => {
                let (mut data, sw) = self.process(&command);
                data.extend(sw.to_be_bytes());
                data
            }
        }
    }

    fn reset(&mut self) {
        self.selected = Selected::Nothing;
        self.pending.clear();
        self.transaction_open = false;
    }
}

/// A contactless card with no payment application: it answers the reader's UID command only.
pub(crate) struct UidCard {
    pub name: &'static str,
    pub atr: Vec<u8>,
    pub uid: Vec<u8>,
}

impl SimCard for UidCard {
    fn name(&self) -> &str {
        self.name
    }

    fn atr(&self) -> Vec<u8> {
        self.atr.clone()
    }

    fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        match apdu {
            [0xFF, 0xCA, 0x00, 0x00] | [0xFF, 0xCA, 0x00, 0x00, 0x00] => {
                [self.uid.as_slice(), &[0x90, 0x00]].concat()
            }
            [0xFF, 0xCA, 0x00, 0x00, le] if usize::from(*le) == self.uid.len() => {
                [self.uid.as_slice(), &[0x90, 0x00]].concat()
            }
            [0xFF, 0xCA, 0x00, 0x00, _] => vec![0x6C, self.uid.len() as u8],
            _ => vec![0x6A, 0x82],
        }
    }

    fn reset(&mut self) {}
}

/// BCD of a digit string, `F`-padded to whole bytes (tag 5A).
pub(crate) fn bcd_pan(pan: &str) -> Vec<u8> {
    let mut digits = pan.to_string();
    if digits.len() % 2 == 1 {
        digits.push('F');
    }
    hex::decode(digits).unwrap_or_default()
}

/// Track 2 equivalent data (tag 57): PAN `D` YYMM service code discretionary data, `F`-padded.
pub(crate) fn track2(pan: &str, yymm: &str, service_code: &str, discretionary: &str) -> Vec<u8> {
    bcd_pan(&format!("{pan}D{yymm}{service_code}{discretionary}"))
}

/// Deterministic bytes standing in for certificates and cryptograms.
pub(crate) fn filler(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn card(t0_chunk: Option<u8>) -> ModelCard {
        let app = AppSpec {
            aid: h("A0000000031010"),
            label: "VISA TEST APPLICATION",
            priority: Some(1),
            pdol: h("9F6604"),
            needs_contactless_ttq: true,
            gpo: GpoFormat::One,
            aip: [0x19, 0x80],
            afl: h("08010100"),
            records: BTreeMap::from([((1, 1), t(0x70, &t(0x5A, &bcd_pan("4761340000000050"))))]),
            icc_key: None,
        };
        let mut card = ModelCard::new("test", h("3B600000"), vec![app]);
        card.t0_chunk = t0_chunk;
        card.pse_sfi = Some(1);
        card
    }

    #[test]
    fn parses_the_four_command_cases() {
        assert!(Command::parse(&h("00A40400")).is_some_and(|c| c.data.is_empty() && c.le.is_none()));
        assert!(Command::parse(&h("00B2010C00")).is_some_and(|c| c.le == Some(0)));
        assert!(Command::parse(&h("00A4040002AABB"))
            .is_some_and(|c| c.data == [0xAA, 0xBB] && c.le.is_none()));
        assert!(Command::parse(&h("00A4040002AABB00"))
            .is_some_and(|c| c.data == [0xAA, 0xBB] && c.le == Some(0)));
        assert!(Command::parse(&h("00A4040003AABB")).is_none());
        assert!(Command::parse(&h("00A4")).is_none());
    }

    #[test]
    fn answers_directly_without_t0() {
        let mut card = card(None);
        assert_eq!(
            card.transmit(&h("00B2010C00")),
            h("6A82"),
            "nothing selected"
        );
        let fci = card.transmit(&h("00A4040007A000000003101000"));
        assert_eq!(&fci[fci.len() - 2..], [0x90, 0x00]);
        assert_eq!(
            card.transmit(&h("80A8000002830000")),
            h("6700"),
            "PDOL asks for 4 bytes"
        );
        assert_eq!(
            card.transmit(&h("80A800000683040000000000")),
            h("6985"),
            "TTQ without contactless EMV"
        );
        assert_eq!(
            card.transmit(&h("80A800000683043600000000")),
            h("80061980080101009000")
        );
        assert_eq!(card.transmit(&h("00B2020C00")), h("6A83"));
        assert_eq!(card.transmit(&h("00B2011400")), h("6A82"));
        assert_eq!(card.transmit(&h("FFCA000000")), h("6A81"));
        assert_eq!(card.transmit(&h("00")), h("6700"));
    }

    #[test]
    fn t0_chains_with_61xx_and_corrects_le_with_6cxx() {
        let direct = card(None).transmit(&h("00A4040007A000000003101000"));
        let mut card = card(Some(16));

        let first = card.transmit(&h("00A4040007A000000003101000"));
        assert_eq!(first, h("6110"));
        let mut data = Vec::new();
        let mut next = card.transmit(&h("00C0000010"));
        loop {
            let (body, sw) = next.split_at(next.len() - 2);
            data.extend(body);
            match sw {
                [0x61, n] => next = card.transmit(&[0x00, 0xC0, 0x00, 0x00, *n]),
                [0x90, 0x00] => break,
                other => panic!("unexpected {other:02X?}"),
            }
        }
        assert_eq!([data, h("9000")].concat(), direct);

        assert_eq!(
            card.transmit(&h("00C0000010")),
            h("6985"),
            "nothing pending"
        );
        card.transmit(&h("80A800000683043600000000"));
        assert_eq!(
            card.transmit(&h("00C0000020")),
            h("6C08"),
            "only 8 bytes wait"
        );
        assert_eq!(card.transmit(&h("00B2010C00")), h("6C0C"));
        assert_eq!(
            card.transmit(&h("00B2010C0C")),
            h("700A5A0847613400000000509000")
        );
    }

    #[test]
    fn lists_applications_in_the_pse() {
        let mut card = card(None);
        assert_eq!(
            &card.transmit(&h("00A404000E315041592E5359532E444446303100"))[..2],
            [0x6F, 0x1C]
        );
        let record = card.transmit(&h("00B2010C00"));
        assert_eq!(&record[..4], [0x70, 0x25, 0x61, 0x23]);
        assert_eq!(card.transmit(&h("00B2020C00")), h("6A83"));
        assert_eq!(
            card.transmit(&h("00A404000E325041592E5359532E444446303100")),
            h("6A82"),
            "no PPSE"
        );
    }

    #[test]
    fn track_2_and_bcd_helpers() {
        assert_eq!(bcd_pan("374245001741007"), h("374245001741007F"));
        assert_eq!(
            track2("4761340000000050", "1712", "201", "1"),
            h("4761340000000050D17122011F")
        );
        assert_eq!(filler(7, 4), filler(7, 4));
        assert_ne!(filler(7, 4), filler(8, 4));
    }
}
