//! The agent's local policy file: `cardbridge_agent::LocalPolicy::parse` on any text, and for a policy that parses, `check_apdus` and `reader_allowed` on APDUs cut from the same input (`policy::write_instruction`)
#![no_main]

use cardbridge_agent::policy::write_instruction;
use cardbridge_agent::LocalPolicy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The agent reads the file with `read_to_string`: only UTF-8 reaches the parser.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(policy) = LocalPolicy::parse(text) else { return };
    for reader in &policy.allowed_readers {
        assert!(!reader.trim().is_empty());
        assert!(policy.reader_allowed(reader));
    }
    let report = policy.report();
    assert_eq!(report.read_only, policy.read_only);
    // The input's bytes as a batch of 5-byte APDUs (and a short last one).
    let apdus: Vec<&[u8]> = data.chunks(5).collect();
    match policy.check_apdus(apdus.iter().copied()) {
        Ok(()) => assert!(!policy.read_only || apdus.iter().all(|a| write_instruction(a).is_none())),
        Err(refusal) => {
            assert!(policy.read_only);
            let _ = refusal.to_string();
        }
    }
});
