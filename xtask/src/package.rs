//! `cargo xtask package`: the Debian packages of the agent and the server, release builds made
//! with `cargo-deb` (installed with `cargo install cargo-deb --locked` when missing) into
//! `target/debian/`. The page module is built first: the server package serves it from
//! `/usr/share/cardbridge/www`. What goes into each package is the `[package.metadata.deb]` table
//! of its Cargo.toml and the files under `packaging/`; `docs/packaging.md` describes the result.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::{cargo, prereq, run, wasm};

/// The crates packaged and the cargo profile of each, agent first (the smaller build). The agent
/// runs on every bank PC: `agent-release` (size-optimised, LTO) makes it about 40 % smaller.
const CRATES: [(&str, &str); 2] = [("cardbridge-agent", "agent-release"), ("cardbridge", "release")];

pub fn package(root: &Path) -> anyhow::Result<()> {
    ensure_cargo_deb()?;
    prereq::ensure_pcsc_build_deps()?;
    println!("==> building the page module (the server package serves it)");
    wasm::build_wasm(root)?;
    let mut built = Vec::new();
    for (krate, profile) in CRATES {
        println!("==> cargo deb -p {krate} --profile {profile}");
        let out = cargo()
            .current_dir(root)
            .args(["deb", "--locked", "-p", krate, "--profile", profile])
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("running cargo deb -p {krate}"))?;
        if !out.status.success() {
            bail!("cargo deb -p {krate} failed with {}", out.status);
        }
        // cargo-deb prints the path of the package it wrote.
        let stdout = String::from_utf8_lossy(&out.stdout);
        let deb = stdout
            .lines()
            .map(str::trim)
            .rfind(|l| l.ends_with(".deb"))
            .map(PathBuf::from)
            .with_context(|| format!("cargo deb -p {krate} printed no .deb path: {stdout}"))?;
        built.push(deb);
    }
    println!();
    for deb in &built {
        let bytes = std::fs::metadata(deb).with_context(|| format!("reading {}", deb.display()))?.len();
        println!("  {}  ({:.1} MiB)", deb.display(), bytes as f64 / (1024.0 * 1024.0));
    }
    println!();
    println!("Install on the target machine with `apt install ./FILE.deb`; see docs/packaging.md.");
    println!("`cargo test -p cardbridge-tests --test packaging` now also inspects these packages.");
    Ok(())
}

fn ensure_cargo_deb() -> anyhow::Result<()> {
    let present = cargo().args(["deb", "--version"]).output().is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    println!("==> installing cargo-deb (cargo install cargo-deb --locked)");
    run(cargo().args(["install", "cargo-deb", "--locked"]))
}
