//! Build the page module: `cardbridge-web` for `wasm32-unknown-unknown`, then its JavaScript
//! bindings into `www/pkg/` (`cardbridge_web.js` + `cardbridge_web_bg.wasm`).
//!
//! Bindings come from the `wasm-bindgen-cli-support` library rather than the `wasm-bindgen` CLI: the
//! lockfile then keeps it at exactly the version of the `wasm-bindgen` crate, which the generated
//! glue requires, and nothing has to be installed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context};

const TARGET: &str = "wasm32-unknown-unknown";
const PROFILE: &str = "wasm-release";
const CRATE: &str = "cardbridge-web";
/// Output stem: `cardbridge_web.js`, `cardbridge_web_bg.wasm`.
const ARTIFACT: &str = "cardbridge_web";

/// Build the module and write its bindings to `<workspace_root>/www/pkg`.
pub fn build_wasm(workspace_root: &Path) -> anyhow::Result<()> {
    ensure_target()?;

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let status = Command::new(&cargo)
        .current_dir(workspace_root)
        .args([
            "build",
            "-p",
            CRATE,
            "--target",
            TARGET,
            "--profile",
            PROFILE,
        ])
        .status()
        .with_context(|| format!("running {} build -p {CRATE}", cargo.to_string_lossy()))?;
    ensure!(
        status.success(),
        "cargo build -p {CRATE} --target {TARGET} failed ({status})"
    );

    let input = target_dir(workspace_root)
        .join(TARGET)
        .join(PROFILE)
        .join(format!("{ARTIFACT}.wasm"));
    ensure!(
        input.is_file(),
        "the build did not produce {}",
        input.display()
    );

    let out_dir = workspace_root.join("www").join("pkg");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    wasm_bindgen_cli_support::Bindgen::new()
        .input_path(&input)
        .web(true)
        .context("selecting the web target of wasm-bindgen")?
        .typescript(false)
        // Function names only help a debugger; they are a third of the module.
        .remove_name_section(true)
        .remove_producers_section(true)
        .generate(&out_dir)
        .with_context(|| {
            format!(
                "generating bindings for {} into {}",
                input.display(),
                out_dir.display()
            )
        })?;

    for file in [format!("{ARTIFACT}.js"), format!("{ARTIFACT}_bg.wasm")] {
        let path = out_dir.join(&file);
        let len = std::fs::metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        println!("wasm: www/pkg/{file} ({len} bytes)");
    }
    Ok(())
}

/// Install the wasm target through rustup when it is missing (a no-op otherwise).
fn ensure_target() -> anyhow::Result<()> {
    let output = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup target list --installed (is rustup installed?)")?;
    ensure!(
        output.status.success(),
        "rustup target list --installed failed ({})",
        output.status
    );
    if String::from_utf8_lossy(&output.stdout)
        .lines()
        .any(|line| line.trim() == TARGET)
    {
        return Ok(());
    }
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .context("running rustup target add")?;
    if !status.success() {
        bail!("rustup target add {TARGET} failed ({status})");
    }
    Ok(())
}

/// Cargo's target directory: `CARGO_TARGET_DIR` / `CARGO_BUILD_TARGET_DIR` when set (relative to
/// the workspace), else `<workspace_root>/target`.
fn target_dir(workspace_root: &Path) -> PathBuf {
    ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"]
        .into_iter()
        .find_map(std::env::var_os)
        .filter(|dir| !dir.is_empty())
        .map(|dir| workspace_root.join(dir))
        .unwrap_or_else(|| workspace_root.join("target"))
}
