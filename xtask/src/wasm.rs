//! Build the page module: `cardbridge-web` for `wasm32-unknown-unknown`, then its JavaScript
//! bindings into `www/pkg/` (`cardbridge_web.js` + `cardbridge_web_bg.wasm`), and print what the
//! browser downloads: raw, gzip and brotli sizes of both files.
//!
//! Bindings come from the `wasm-bindgen-cli-support` library rather than the `wasm-bindgen` CLI: the
//! lockfile then keeps it at exactly the version of the `wasm-bindgen` crate, which the generated
//! glue requires, and nothing has to be installed.
//!
//! Size settings live in the `wasm-release` profile of the workspace (`opt-level = "z"`, fat LTO,
//! one codegen unit, `panic = "abort"`), so the server's release build is not affected. Two
//! optional steps:
//!
//! - With the xtask feature `wasm-opt` (`cargo run -p xtask --features wasm-opt -- wasm`),
//!   binaryen's `wasm-opt -Oz` from the `wasm-opt` crate runs over the bindgen output. The crate
//!   compiles binaryen from C++ (minutes on 2 cores, once; cargo caches it), so it is off by
//!   default; see `docs/benchmarks.md` for what it buys. Debian's `binaryen` package is never
//!   used: its `wasm-opt` breaks wasm-bindgen output.
//! - `CARDBRIDGE_WASM_NAMES=1` keeps the function names in the module, for `twiggy top
//!   www/pkg/cardbridge_web_bg.wasm` (the sizes printed then include the names).

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context};

const TARGET: &str = "wasm32-unknown-unknown";
const PROFILE: &str = "wasm-release";
const CRATE: &str = "cardbridge-web";
/// Output stem: `cardbridge_web.js`, `cardbridge_web_bg.wasm`.
const ARTIFACT: &str = "cardbridge_web";
/// Keep function names (for twiggy) when set to `1`.
const NAMES_ENV: &str = "CARDBRIDGE_WASM_NAMES";

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

    let keep_names = std::env::var(NAMES_ENV).is_ok_and(|v| v == "1");
    let out_dir = workspace_root.join("www").join("pkg");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    wasm_bindgen_cli_support::Bindgen::new()
        .input_path(&input)
        .web(true)
        .context("selecting the web target of wasm-bindgen")?
        .typescript(false)
        // Function names only help a debugger; they are a third of the module.
        .remove_name_section(!keep_names)
        .remove_producers_section(true)
        .generate(&out_dir)
        .with_context(|| {
            format!(
                "generating bindings for {} into {}",
                input.display(),
                out_dir.display()
            )
        })?;

    let wasm = out_dir.join(format!("{ARTIFACT}_bg.wasm"));
    optimize(&wasm, keep_names)?;

    let files = [format!("{ARTIFACT}_bg.wasm"), format!("{ARTIFACT}.js")];
    let mut total = Sizes::default();
    for file in &files {
        let path = out_dir.join(file);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let sizes = Sizes::of(&bytes)?;
        println!("wasm: www/pkg/{file:<22} {sizes}");
        total = total + sizes;
    }
    println!("wasm: {:<30} {total}", "module + glue");
    if keep_names {
        println!("wasm: names kept ({NAMES_ENV}=1): not the size served");
    }
    Ok(())
}

/// Raw, gzip (level 9) and brotli (quality 11) sizes in bytes: what a server sends with either
/// encoding, or none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sizes {
    pub raw: u64,
    pub gzip: u64,
    pub brotli: u64,
}

impl Sizes {
    pub fn of(bytes: &[u8]) -> anyhow::Result<Sizes> {
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gzip.write_all(bytes).context("gzip")?;
        let gzip = gzip.finish().context("gzip")?;
        let mut brotli = Vec::new();
        {
            let mut writer = brotli::CompressorWriter::new(&mut brotli, 4096, 11, 22);
            writer.write_all(bytes).context("brotli")?;
        }
        Ok(Sizes {
            raw: bytes.len() as u64,
            gzip: gzip.len() as u64,
            brotli: brotli.len() as u64,
        })
    }
}

impl std::ops::Add for Sizes {
    type Output = Sizes;

    fn add(self, other: Sizes) -> Sizes {
        Sizes {
            raw: self.raw + other.raw,
            gzip: self.gzip + other.gzip,
            brotli: self.brotli + other.brotli,
        }
    }
}

impl std::fmt::Display for Sizes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kib = |n: u64| n as f64 / 1024.0;
        write!(
            f,
            "raw {:>7} B ({:>6.1} KiB)  gzip {:>6} B ({:>5.1} KiB)  brotli {:>6} B ({:>5.1} KiB)",
            self.raw,
            kib(self.raw),
            self.gzip,
            kib(self.gzip),
            self.brotli,
            kib(self.brotli)
        )
    }
}

/// `wasm-opt -Oz` over the bindgen output, in place (feature `wasm-opt`). The features enabled
/// are the ones rustc's wasm32 target emits by default and wasm-bindgen relies on (reference types
/// for its externref table, bulk memory, sign extension, non-trapping float conversions, mutable
/// globals, multi-value).
#[cfg(feature = "wasm-opt")]
fn optimize(wasm: &Path, keep_names: bool) -> anyhow::Result<()> {
    use wasm_opt::{Feature, OptimizationOptions};

    let mut options = OptimizationOptions::new_optimize_for_size_aggressively();
    options.debug_info(keep_names);
    for feature in [
        Feature::BulkMemory,
        Feature::ReferenceTypes,
        Feature::SignExt,
        Feature::TruncSat,
        Feature::MutableGlobals,
        Feature::Multivalue,
    ] {
        options.enable_feature(feature);
    }
    options
        .run(wasm, wasm)
        .with_context(|| format!("wasm-opt -Oz over {}", wasm.display()))?;
    println!("wasm: wasm-opt -Oz applied");
    Ok(())
}

#[cfg(not(feature = "wasm-opt"))]
fn optimize(_wasm: &Path, _keep_names: bool) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::Sizes;

    #[test]
    fn compressed_sizes_are_measured() {
        let text = "cardbridge ".repeat(1000);

        let sizes = Sizes::of(text.as_bytes()).unwrap();

        assert_eq!(sizes.raw, 11_000);
        assert!(sizes.gzip > 0 && sizes.gzip < 200, "{sizes:?}");
        assert!(sizes.brotli > 0 && sizes.brotli < 200, "{sizes:?}");
        assert_eq!((sizes + sizes).raw, 22_000);
    }
}
