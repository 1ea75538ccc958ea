//! `cargo xtask fuzz [TARGET] [--seconds N]`: the cargo-fuzz (libFuzzer) targets of `fuzz/`, run one after the other, with a summary per target
//!
//! The targets need nightly compiler flags (`-Zsanitizer`, coverage instrumentation); the stable
//! toolchain accepts them under `RUSTC_BOOTSTRAP=1`, set here for every cargo-fuzz call. Each run
//! grows `fuzz/corpus/<target>/` (only the committed `seed-*` files are in git) and leaves a crash
//! in `fuzz/artifacts/<target>/`. Not part of `cargo xtask test`: see docs/fuzzing.md.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::{cargo, prereq, run};

/// What one run ended with, from libFuzzer's output.
#[derive(Debug, Default)]
struct RunSummary {
    target: String,
    executions: Option<u64>,
    execs_per_sec: Option<u64>,
    cov: Option<u64>,
    ft: Option<u64>,
    /// libFuzzer's corpus (`corp:`), and the files in the corpus directory (older, since reduced
    /// inputs stay there).
    corpus_units: Option<u64>,
    corpus_files: usize,
    crash: Option<String>,
}

pub fn fuzz(root: &Path, target: Option<&str>, seconds: u64) -> anyhow::Result<()> {
    let fuzz_dir = root.join("fuzz");
    let targets = list_targets(&fuzz_dir)?;
    let chosen: Vec<String> = match target {
        None => targets.clone(),
        Some(t) if targets.iter().any(|known| known == t) => vec![t.to_string()],
        Some(t) => bail!("no fuzz target `{t}`; the targets are: {}", targets.join(", ")),
    };
    ensure_cargo_fuzz()?;
    // The policy target links the agent, which links libpcsclite.
    prereq::ensure_pcsc_build_deps()?;
    println!("==> building the fuzz targets (cargo fuzz build, RUSTC_BOOTSTRAP=1)");
    run(cargo_fuzz(&fuzz_dir).args(["build", "--debug-assertions"]))?;

    let log_dir = fuzz_dir.join("target/fuzz-logs");
    std::fs::create_dir_all(&log_dir)?;
    let mut summaries = Vec::new();
    for name in &chosen {
        println!("==> fuzzing {name} for {seconds} s");
        summaries.push(run_target(&fuzz_dir, name, seconds, &log_dir.join(format!("{name}.log")))?);
    }

    println!();
    println!("{:<12} {:>13} {:>8} {:>7} {:>7} {:>7} {:>7}  crash", "target", "executions", "exec/s", "cov", "ft", "corpus", "files");
    let show = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
    for s in &summaries {
        println!(
            "{:<12} {:>13} {:>8} {:>7} {:>7} {:>7} {:>7}  {}",
            s.target,
            show(s.executions),
            show(s.execs_per_sec),
            show(s.cov),
            show(s.ft),
            show(s.corpus_units),
            s.corpus_files,
            s.crash.as_deref().unwrap_or("none")
        );
    }
    println!("(full libFuzzer output: {})", log_dir.display());
    let crashed: Vec<_> = summaries.iter().filter(|s| s.crash.is_some()).map(|s| s.target.as_str()).collect();
    if !crashed.is_empty() {
        bail!(
            "crashes in {}: reproduce with `RUSTC_BOOTSTRAP=1 cargo fuzz run --debug-assertions <target> <artifact>` in fuzz/, \
             fix, and keep the input as a regression test (docs/fuzzing.md)",
            crashed.join(", ")
        );
    }
    Ok(())
}

/// The targets: one file each in `fuzz/fuzz_targets/`.
fn list_targets(fuzz_dir: &Path) -> anyhow::Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut targets: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".rs").map(str::to_string))
        .collect();
    targets.sort();
    Ok(targets)
}

fn cargo_fuzz(fuzz_dir: &Path) -> Command {
    let mut cmd = cargo();
    cmd.current_dir(fuzz_dir).arg("fuzz").env("RUSTC_BOOTSTRAP", "1");
    cmd
}

/// cargo-fuzz is a cargo subcommand from crates.io; install it when it is missing.
fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let present = cargo().args(["fuzz", "--version"]).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    println!("==> installing cargo-fuzz (cargo install cargo-fuzz --locked)");
    run(cargo().args(["install", "cargo-fuzz", "--locked"]))
        .context("installing cargo-fuzz failed; install it by hand with `cargo install cargo-fuzz`")
}

fn run_target(fuzz_dir: &Path, name: &str, seconds: u64, log: &Path) -> anyhow::Result<RunSummary> {
    let corpus = fuzz_dir.join("corpus").join(name);
    std::fs::create_dir_all(&corpus)?;
    let mut child = cargo_fuzz(fuzz_dir)
        .args(["run", "--debug-assertions", name])
        .arg(&corpus)
        .args(["--", &format!("-max_total_time={seconds}"), "-timeout=10", "-print_final_stats=1"])
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting cargo fuzz run {name}"))?;
    let mut log_file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut summary = RunSummary { target: name.to_string(), ..RunSummary::default() };
    let stderr = child.stderr.take().expect("stderr is piped");
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        writeln!(log_file, "{line}")?;
        read_line(&line, &mut summary);
        // Progress and findings on the terminal; every NEW/REDUCE line only in the log.
        if line.contains("pulse") || line.contains("DONE") || line.contains("INITED") || is_finding(&line) {
            println!("    {line}");
        }
    }
    let status = child.wait()?;
    summary.corpus_files = std::fs::read_dir(&corpus)?.flatten().count();
    if !status.success() && summary.crash.is_none() {
        // A build failure or an unexpected stop: say so rather than report numbers.
        let crash = artifacts(&fuzz_dir.join("artifacts").join(name)).into_iter().last();
        match crash {
            Some(path) => summary.crash = Some(path.display().to_string()),
            None => bail!("cargo fuzz run {name} failed with {status}; see {}", log.display()),
        }
    }
    Ok(summary)
}

fn is_finding(line: &str) -> bool {
    line.contains("ERROR: libFuzzer") || line.contains("panicked at") || line.contains("SUMMARY:") || line.contains("Test unit written to")
}

/// Fold one line of libFuzzer's output into the summary: the last `cov:`/`ft:` status line, the
/// final stats (`-print_final_stats=1`) and the crash artifact.
fn read_line(line: &str, summary: &mut RunSummary) {
    let field = |key: &str| {
        let mut words = line.split_whitespace();
        words.by_ref().find(|w| *w == key)?;
        words.next()?.parse::<u64>().ok()
    };
    if line.starts_with('#') {
        if let Some(cov) = field("cov:") {
            summary.cov = Some(cov);
        }
        if let Some(ft) = field("ft:") {
            summary.ft = Some(ft);
        }
        let corp = line.split_whitespace().skip_while(|w| *w != "corp:").nth(1);
        if let Some(units) = corp.and_then(|c| c.split('/').next()?.parse().ok()) {
            summary.corpus_units = Some(units);
        }
        if let Some(done) = line.strip_prefix('#').and_then(|l| l.split_whitespace().next()).and_then(|n| n.parse().ok()) {
            summary.executions = Some(done);
        }
        if let Some(rate) = field("exec/s:") {
            summary.execs_per_sec = Some(rate);
        }
    }
    let stat = |key: &str| line.strip_prefix(key).and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = stat("stat::number_of_executed_units:") {
        summary.executions = Some(n);
    }
    if let Some(n) = stat("stat::average_exec_per_sec:") {
        summary.execs_per_sec = Some(n);
    }
    if let Some(path) = line.split("Test unit written to ").nth(1) {
        summary.crash = Some(path.trim().to_string());
    }
}

fn artifacts(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    found.sort_by_key(|p| p.metadata().and_then(|m| m.modified()).ok());
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_status_and_final_stats() {
        let mut s = RunSummary::default();
        for line in [
            "#2\tINITED cov: 812 ft: 1033 corp: 8/1422b exec/s: 0 rss: 45Mb",
            "#524288\tpulse  cov: 1204 ft: 4410 corp: 310/40Kb lim: 4096 exec/s: 8738 rss: 410Mb",
            "#5242880\tDONE   cov: 1210 ft: 4452 corp: 318/41Kb lim: 4096 exec/s: 8737 rss: 412Mb",
            "stat::number_of_executed_units: 5242881",
            "stat::average_exec_per_sec:     8738",
        ] {
            read_line(line, &mut s);
        }
        assert_eq!((s.cov, s.ft, s.executions, s.execs_per_sec), (Some(1210), Some(4452), Some(5242881), Some(8738)));
        assert_eq!(s.corpus_units, Some(318));
        assert_eq!(s.crash, None);
        read_line("artifact_prefix='/w/fuzz/artifacts/tlv/'; Test unit written to /w/fuzz/artifacts/tlv/crash-0a1b", &mut s);
        assert_eq!(s.crash.as_deref(), Some("/w/fuzz/artifacts/tlv/crash-0a1b"));
    }
}
