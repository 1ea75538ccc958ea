//! Bank-gateway replies as the server's client takes them (`server/src/bank.rs`): the body through `serde_json::from_slice` into each `protocol::bank` reply type the client reads (its `parse` and `rejected`), and the reply signature check `BankKey::verify_reply` over the same body
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::bank::signing::BankKey;
use protocol::bank::{Binding, ErrorBody, Health, Refund, Statement, Transfer};

const NOW_S: i64 = 1_800_000_000;
const REQUEST_SIGNATURE: &str = "5f1d9a";

fuzz_target!(|body: &[u8]| {
    // Every body type the client parses, as it parses them (`parse::<T>(&reply)`).
    let transfer = serde_json::from_slice::<Transfer>(body);
    let _ = serde_json::from_slice::<Refund>(body);
    let _ = serde_json::from_slice::<Binding>(body);
    let _ = serde_json::from_slice::<Health>(body);
    let _ = serde_json::from_slice::<Statement>(body).map(|s| s.entries.len());
    let _ = serde_json::from_slice::<ErrorBody>(body).map(|e| e.code);
    if let Ok(t) = transfer {
        let _ = protocol::bank::mask(&t.idempotency_key);
    }

    // The signature is checked before any of that: a signed body verifies, any other text does not.
    let key = BankKey::new("k_fuzz", vec![0x42; 32]).expect("a 32-byte key");
    let signature = key.sign_reply(200, REQUEST_SIGNATURE, NOW_S, body);
    assert_eq!(key.verify_reply("k_fuzz", 200, REQUEST_SIGNATURE, NOW_S, body, &signature, NOW_S), Ok(()));
    assert!(key.verify_reply("k_fuzz", 201, REQUEST_SIGNATURE, NOW_S, body, &signature, NOW_S).is_err());
    let claimed = String::from_utf8_lossy(body);
    if claimed != signature {
        assert!(key.verify_reply("k_fuzz", 200, REQUEST_SIGNATURE, NOW_S, body, &claimed, NOW_S).is_err());
    }
    // And a key file, the one other bank text the server parses.
    let _ = BankKey::parse_file(&claimed);
});
