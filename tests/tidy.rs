//! Tidy checks over the whole source tree: every module says what it owns, only `protocol` knows
//! the wire format, and nothing prints a full card number through `{:?}` of a raw string.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target" || n == "pkg") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<PathBuf> {
    let root = cardbridge_tests::workspace_root();
    let mut files = Vec::new();
    for krate in ["protocol", "card", "server", "bridge-agent", "web-wasm", "xtask", "tests", "sandbox-bank", "fuzz"] {
        rust_files(&root.join(krate), &mut files);
    }
    assert!(files.len() > 30, "the walk found too few files: {}", files.len());
    files
}

#[test]
fn every_module_starts_with_a_doc_line() {
    let missing: Vec<_> = sources()
        .into_iter()
        .filter(|p| !std::fs::read_to_string(p).unwrap_or_default().trim_start().starts_with("//!"))
        .collect();
    assert!(missing.is_empty(), "modules without a `//!` line: {missing:#?}");
}

#[test]
fn only_the_protocol_crate_derives_serialize() {
    let root = cardbridge_tests::workspace_root();
    let offenders: Vec<_> = sources()
        .into_iter()
        .filter(|p| !p.starts_with(root.join("protocol")))
        // The sandbox bank's own admin endpoints (faults) are a wire format only the sandbox has.
        .filter(|p| *p != root.join("sandbox-bank/src/api.rs"))
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines.iter().enumerate().any(|(i, l)| {
                let derives_serialize = l.contains("derive(") && l.split(['(', ',', ')']).any(|w| w.trim() == "Serialize");
                // A file format on disk is a boundary too; it says so on the line above.
                let declared = i > 0 && lines[i - 1].contains("tidy: on-disk format");
                derives_serialize && !declared
            })
        })
        .collect();
    assert!(offenders.is_empty(), "internal types must not be Serialize: {offenders:#?}");
}

#[test]
fn no_unsafe_code() {
    let offenders: Vec<_> = sources()
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "tidy.rs"))
        .filter(|p| std::fs::read_to_string(p).unwrap_or_default().contains("unsafe {"))
        .collect();
    assert!(offenders.is_empty(), "unsafe code: {offenders:#?}");
}
