//! Packaging suite, fast enough for every `cargo xtask test`: it checks the package *definitions*
//! rather than building release packages (`cargo xtask package` does that, in minutes).
//!
//! - `configuration` — `docs/configuration.md` and the packaged `cardbridge.toml` against the
//!   server's configuration as the code has it at test time (keys, defaults, variables).
//! - `units` — the systemd units: they parse, carry the hardening the packaging promises, and pass
//!   `systemd-analyze verify` where that tool exists (no running systemd is needed).
//! - `debs` — the `[package.metadata.deb]` tables name assets that exist and every file under
//!   `packaging/` is used; a `.deb` already built in `target/debian` has the expected contents.
//!
//! Where a tool is missing a check is skipped with a note on standard output
//! (`cargo test -p cardbridge-tests --test packaging -- --nocapture` shows the notes).

mod configuration;
mod debs;
mod units;

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn root() -> PathBuf {
    cardbridge_tests::workspace_root()
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// True when `program` can be started (it answers `--version`).
pub fn have(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// A skipped check, said where `--nocapture` shows it.
pub fn note(text: &str) {
    println!("note: {text}");
}

/// Every regular file under `dir`, recursively, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}
