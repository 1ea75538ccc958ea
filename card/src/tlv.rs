//! BER-TLV as card data uses it (EMV Book 3 Annex B): decoding of card responses, encoding for the simulator
//!
//! The decoder treats its input as hostile: every length is checked against what is left, tags are
//! at most four bytes, long-form lengths at most four length bytes, and constructed templates nest
//! at most [`MAX_DEPTH`] levels. Malformed input is an error, never a panic.

use std::fmt;

/// Deepest nesting of constructed templates the decoder follows (real card data uses about 4).
pub const MAX_DEPTH: usize = 16;

/// Longest tag accepted, in bytes (a tag is kept in a `u32`).
const MAX_TAG_BYTES: usize = 4;

/// One decoded data object. `tag` holds the tag bytes big-endian (`0x9F38`, `0xBF0C`, `0x5A`);
/// `value` is the raw value, also for constructed objects, whose decoded content is `children`.
#[derive(Clone, PartialEq, Eq)]
pub struct Tlv {
    pub tag: u32,
    pub value: Vec<u8>,
    pub children: Vec<Tlv>,
}

impl Tlv {
    /// Whether the tag says "constructed" (bit 6 of its first byte).
    pub fn is_constructed(&self) -> bool {
        is_constructed_tag(self.tag)
    }
}

/// Values can hold a card number (tag 5A, 57), so Debug shows tags and lengths only.
impl fmt::Debug for Tlv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Tlv");
        s.field("tag", &format_args!("{:X}", self.tag))
            .field("len", &self.value.len());
        if !self.children.is_empty() {
            s.field("children", &self.children);
        }
        s.finish()
    }
}

/// Why a byte string is not valid BER-TLV. Offsets count from the start of the parsed input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlvError {
    #[error("TLV data truncated at offset {offset}")]
    Truncated { offset: usize },
    #[error("tag longer than {MAX_TAG_BYTES} bytes at offset {offset}")]
    TagTooLong { offset: usize },
    #[error("unsupported length encoding {byte:#04x} at offset {offset}")]
    BadLength { offset: usize, byte: u8 },
    #[error("TLV templates nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Decode a sequence of data objects. `00` and `FF` bytes between objects are padding (ISO/IEC
/// 7816-4 5.2.2.1) and are skipped.
pub fn parse(data: &[u8]) -> Result<Vec<Tlv>, TlvError> {
    parse_level(data, 0, 0)
}

fn parse_level(data: &[u8], base: usize, depth: usize) -> Result<Vec<Tlv>, TlvError> {
    if depth > MAX_DEPTH {
        return Err(TlvError::TooDeep);
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let first = data[i];
        if first == 0x00 || first == 0xFF {
            i += 1;
            continue;
        }
        let (tag, value) = read_object(data, &mut i, base)?;
        let children = if is_constructed_tag(tag) {
            parse_level(&data[value.clone()], base + value.start, depth + 1)?
        } else {
            Vec::new()
        };
        out.push(Tlv {
            tag,
            value: data[value].to_vec(),
            children,
        });
    }
    Ok(out)
}

/// Read the data object starting at `data[*i]` (not a padding byte): its tag and where its value
/// lies in `data`; moves `*i` past the value. `base` is `data`'s offset in the whole input, for
/// errors. Every limit of the decoder (tag and length sizes, lengths within the input) is
/// checked here, so whoever walks card data object by object decodes exactly what [`parse`] does.
pub(crate) fn read_object(data: &[u8], i: &mut usize, base: usize) -> Result<(u32, std::ops::Range<usize>), TlvError> {
    let tag = read_tag(data, i, base)?;
    let Some(&len_byte) = data.get(*i) else {
        return Err(TlvError::Truncated { offset: base + *i });
    };
    let len_offset = *i;
    *i += 1;
    let len = if len_byte < 0x80 {
        usize::from(len_byte)
    } else {
        let n = usize::from(len_byte & 0x7F);
        if n == 0 || n > 4 {
            return Err(TlvError::BadLength {
                offset: base + len_offset,
                byte: len_byte,
            });
        }
        let Some(bytes) = data.get(*i..*i + n) else {
            return Err(TlvError::Truncated { offset: base + *i });
        };
        *i += n;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    let start = *i;
    let end = match start.checked_add(len) {
        Some(end) if end <= data.len() => end,
        _ => return Err(TlvError::Truncated { offset: base + start }),
    };
    *i = end;
    Ok((tag, start..end))
}

/// Read the tag starting at `data[*i]` (not a padding byte) and move `*i` past it.
fn read_tag(data: &[u8], i: &mut usize, base: usize) -> Result<u32, TlvError> {
    let start = *i;
    let Some(&first) = data.get(start) else {
        return Err(TlvError::Truncated {
            offset: base + start,
        });
    };
    let mut tag = u32::from(first);
    *i += 1;
    if first & 0x1F == 0x1F {
        loop {
            let Some(&b) = data.get(*i) else {
                return Err(TlvError::Truncated { offset: base + *i });
            };
            if *i - start >= MAX_TAG_BYTES {
                return Err(TlvError::TagTooLong {
                    offset: base + start,
                });
            }
            tag = (tag << 8) | u32::from(b);
            *i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    Ok(tag)
}

/// Decode a data object list: tag and one-byte length pairs, no values (EMV Book 3 5.4; PDOL,
/// CDOL). Returns `(tag, length)` in order.
pub fn parse_dol(dol: &[u8]) -> Result<Vec<(u32, usize)>, TlvError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < dol.len() {
        let tag = read_tag(dol, &mut i, 0)?;
        let Some(&len) = dol.get(i) else {
            return Err(TlvError::Truncated { offset: i });
        };
        i += 1;
        out.push((tag, usize::from(len)));
    }
    Ok(out)
}

/// First object with `tag`, depth-first (an object before its children, children before the
/// object's later siblings).
pub fn find(tlvs: &[Tlv], tag: u32) -> Option<&Tlv> {
    for t in tlvs {
        if t.tag == tag {
            return Some(t);
        }
        if let Some(found) = find(&t.children, tag) {
            return Some(found);
        }
    }
    None
}

/// Every object with `tag`, in depth-first order.
pub fn find_all(tlvs: &[Tlv], tag: u32) -> Vec<&Tlv> {
    fn walk<'a>(tlvs: &'a [Tlv], tag: u32, out: &mut Vec<&'a Tlv>) {
        for t in tlvs {
            if t.tag == tag {
                out.push(t);
            }
            walk(&t.children, tag, out);
        }
    }
    let mut out = Vec::new();
    walk(tlvs, tag, &mut out);
    out
}

/// Encode one data object (definite length, shortest form).
pub fn encode(tag: u32, value: &[u8]) -> Vec<u8> {
    let mut out = tag_bytes(tag);
    out.extend(encode_length(value.len()));
    out.extend_from_slice(value);
    out
}

/// The bytes of a tag as held in a `u32` (leading zero bytes dropped; tag 0 encodes as `00`).
pub fn tag_bytes(tag: u32) -> Vec<u8> {
    let bytes = tag.to_be_bytes();
    let skip = bytes.iter().take(3).take_while(|&&b| b == 0).count();
    bytes[skip..].to_vec()
}

fn encode_length(len: usize) -> Vec<u8> {
    if len < 0x80 {
        return vec![len as u8];
    }
    let bytes = (len as u64).to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    let mut out = vec![0x80 | (8 - skip) as u8];
    out.extend_from_slice(&bytes[skip..]);
    out
}

pub(crate) fn is_constructed_tag(tag: u32) -> bool {
    let mut first = tag;
    while first > 0xFF {
        first >>= 8;
    }
    first & 0x20 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn parses_nested_template_with_multi_byte_tags() {
        // PPSE FCI from a recorded Mastercard.
        let fci =
            h("6F23840E325041592E5359532E4444463031A511BF0C0E610C4F07A00000000410108701019000");
        let tlvs = parse(&fci[..fci.len() - 2]).unwrap();

        assert_eq!(tlvs.len(), 1);
        assert_eq!(tlvs[0].tag, 0x6F);
        assert_eq!(find(&tlvs, 0x84).unwrap().value, b"2PAY.SYS.DDF01");
        let bf0c = find(&tlvs, 0xBF0C).unwrap();
        assert!(bf0c.is_constructed());
        assert_eq!(find(&tlvs, 0x4F).unwrap().value, h("A0000000041010"));
        assert_eq!(find(&tlvs, 0x87).unwrap().value, [1]);
    }

    #[test]
    fn parses_long_form_lengths() {
        let value = vec![0xAB; 300];
        let mut data = vec![0x70, 0x82, 0x01, 0x31, 0x9F, 0x46, 0x82, 0x01, 0x2C];
        data.extend(&value);

        let tlvs = parse(&data).unwrap();

        assert_eq!(find(&tlvs, 0x9F46).unwrap().value, value);
        let one_byte = parse(&h("5F208103414243")).unwrap();
        assert_eq!(one_byte[0].value, b"ABC");
    }

    #[test]
    fn skips_padding_between_objects() {
        let tlvs = parse(&h("005A0212340000FF9F0201019000")[..12]).unwrap();
        assert_eq!(
            tlvs.iter().map(|t| t.tag).collect::<Vec<_>>(),
            vec![0x5A, 0x9F02]
        );
    }

    #[test]
    fn truncated_and_hostile_input_is_an_error() {
        assert_eq!(
            parse(&h("5A08123456")),
            Err(TlvError::Truncated { offset: 2 })
        );
        assert!(matches!(parse(&h("9F")), Err(TlvError::Truncated { .. })));
        assert!(matches!(parse(&h("5A")), Err(TlvError::Truncated { .. })));
        assert!(matches!(parse(&h("5A82")), Err(TlvError::Truncated { .. })));
        assert!(matches!(
            parse(&h("5A80")),
            Err(TlvError::BadLength { byte: 0x80, .. })
        ));
        assert!(matches!(
            parse(&h("5A85FFFFFFFFFF")),
            Err(TlvError::BadLength { .. })
        ));
        assert!(matches!(
            parse(&h("5A84FFFFFFFF00")),
            Err(TlvError::Truncated { .. })
        ));
        assert!(matches!(
            parse(&h("9F81828384850100")),
            Err(TlvError::TagTooLong { .. })
        ));
        // The error inside a template is reported at its offset in the whole input.
        assert_eq!(
            parse(&h("70045A051234")),
            Err(TlvError::Truncated { offset: 4 })
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let mut data = Vec::new();
        for _ in 0..200 {
            data.insert(0, data.len() as u8);
            data.insert(0, 0x70);
            if data.len() > 120 {
                break;
            }
        }
        // 61 nested 70 templates with one-byte lengths.
        assert_eq!(parse(&data), Err(TlvError::TooDeep));
        let mut ok = Vec::new();
        for _ in 0..MAX_DEPTH {
            ok.insert(0, ok.len() as u8);
            ok.insert(0, 0x70);
        }
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn parses_data_object_lists() {
        let pdol = h("9F66049F02069F37045F2A029F1A02");
        assert_eq!(
            parse_dol(&pdol).unwrap(),
            vec![
                (0x9F66, 4),
                (0x9F02, 6),
                (0x9F37, 4),
                (0x5F2A, 2),
                (0x9F1A, 2)
            ]
        );
        assert_eq!(parse_dol(&[]).unwrap(), vec![]);
        assert!(parse_dol(&h("9F66049F02")).is_err());
        assert!(parse_dol(&h("9F")).is_err());
    }

    #[test]
    fn encode_round_trips() {
        let long = vec![7u8; 200];
        let inner = [encode(0x5A, &h("4761739001010010")), encode(0x9F46, &long)].concat();
        let data = encode(0x70, &inner);
        assert_eq!(&data[..3], &[0x70, 0x81, 0xD6]);

        let tlvs = parse(&data).unwrap();

        assert_eq!(find(&tlvs, 0x9F46).unwrap().value, long);
        assert_eq!(find_all(&tlvs, 0x5A).len(), 1);
        assert_eq!(tag_bytes(0xBF0C), vec![0xBF, 0x0C]);
        assert_eq!(tag_bytes(0), vec![0]);
    }

    #[test]
    fn debug_does_not_show_values() {
        let tlvs = parse(&h("5A084761739001010010")).unwrap();
        let shown = format!("{tlvs:?}");
        assert!(
            !shown.contains("4761739001010010") && !shown.contains("71, 97"),
            "{shown}"
        );
    }
}
