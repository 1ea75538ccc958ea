//! Page and kiosk frames: `protocol::decode::<PageToServer>` (the server's `/ws/page`) and `protocol::decode::<KioskToServer>` (`/ws/kiosk`); the page module's own JSON decoder `protocol::page::json::decode_server_to_page` against serde's `protocol::decode::<ServerToPage>`, which it promises to match; and `json::encode_page_to_server` against `protocol::encode`
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::kiosk::KioskToServer;
use protocol::page::{json, PageToServer, ServerToPage};

fuzz_target!(|data: &[u8]| {
    // A WebSocket text frame is UTF-8 by the time the server or the page sees it.
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(frame) = protocol::decode::<PageToServer>(text) {
        // The page module writes byte for byte what serde writes.
        assert_eq!(json::encode_page_to_server(&frame), protocol::encode(&frame));
    }
    if let Ok(frame) = protocol::decode::<KioskToServer>(text) {
        assert_eq!(protocol::decode::<KioskToServer>(&protocol::encode(&frame)), Ok(frame));
    }
    let ours = json::decode_server_to_page(text);
    let serde = protocol::decode::<ServerToPage>(text);
    match (&ours, &serde) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        // At f64's edge the page decoder rounds exactly and serde_json does not: within that sliver
        // the two may disagree on "out of range" (protocol::page::json::overflows_f64).
        (Ok(_), Err(e)) | (Err(e), Ok(_)) if e.0.contains("out of range") && text.contains("17976931348623") => {}
        (Ok(a), Err(e)) => panic!("the page decoder accepts what serde refuses ({e}): {a:?}"),
        // Deeper than the page decoder's documented limit: its refusal is expected.
        (Err(_), Ok(_)) if nesting(text) > json::MAX_DEPTH => {}
        (Err(e), Ok(b)) => panic!("the page decoder refuses ({e}) what serde accepts: {b:?}"),
        (Err(_), Err(_)) => {}
    }
});

/// The deepest nesting of arrays and objects in `text` (valid JSON: serde accepted it).
fn nesting(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'{' | b'[') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, _, b'}' | b']') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}
