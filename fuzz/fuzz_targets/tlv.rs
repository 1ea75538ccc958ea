//! BER-TLV as card answers carry it: `card::tlv::parse` and `card::tlv::parse_dol` on any bytes, and every object it decodes re-encodes (`card::tlv::encode`) to bytes that decode to the same object
#![no_main]

use card::tlv;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(objects) = tlv::parse(data) {
        check_round_trip(&objects, 0);
        let first = objects.first().map(|t| t.tag).unwrap_or(0x5A);
        let _ = tlv::find(&objects, first);
        let _ = tlv::find_all(&objects, 0x70);
        let _ = format!("{objects:?}");
    }
    let _ = tlv::parse_dol(data);
});

/// Each decoded object, encoded again in the shortest form, decodes to itself.
fn check_round_trip(objects: &[tlv::Tlv], depth: usize) {
    for object in objects {
        let encoded = tlv::encode(object.tag, &object.value);
        let again = tlv::parse(&encoded).expect("a decoded object re-encodes to valid TLV");
        assert_eq!(again.as_slice(), std::slice::from_ref(object), "round trip at depth {depth}");
        check_round_trip(&object.children, depth + 1);
    }
}
