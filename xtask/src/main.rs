//! Project tasks: `cargo xtask demo` runs the whole product on embedded defaults, `cargo xtask
//! test` installs what the tests need and runs every suite, `cargo xtask wasm` builds the page
//! module.

mod fuzz;
mod package;
mod prereq;
mod wasm;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Set everything up and run the product: SQLite, demo data, server, a virtual terminal.
    Demo {
        /// Address the server listens on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Install what the tests need and run every test suite.
    Test {
        /// Extra arguments passed to `cargo test` (after `--`).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Build the page module into www/pkg.
    Wasm,
    /// Build the Debian packages of the agent and the server (release, cargo-deb) into
    /// target/debian/.
    Package,
    /// Run a benchmark: `tap` (tap to submit over pcscd + vpcd, A/B/C), `topup` (kiosk top-ups
    /// per second on SQLite and PostgreSQL, beside the bare ledger transaction), `load` (connected
    /// agents per instance, memory per agent, reads per second on one and two instances).
    Bench {
        #[arg(value_parser = ["tap", "topup", "load"])]
        name: String,
    },
    /// Fuzz the parsers of outside bytes with cargo-fuzz (libFuzzer): one target or all, each for
    /// `--seconds` (docs/fuzzing.md). Not part of `test`.
    Fuzz {
        /// One target of fuzz/fuzz_targets/; all of them, one after the other, when absent.
        target: Option<String>,
        /// How long each target runs.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let root = workspace_root();
    match Cli::parse().command {
        Task::Wasm => wasm::build_wasm(&root),
        Task::Package => package::package(&root),
        Task::Test { args } => test(&root, &args),
        Task::Demo { listen } => demo(&root, &listen),
        Task::Bench { name } => bench(&root, &name),
        Task::Fuzz { target, seconds } => fuzz::fuzz(&root, target.as_deref(), seconds),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_path_buf()
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn test(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    println!("==> checking prerequisites");
    wasm::build_wasm(root)?;
    prereq::ensure_browser()?;
    let pcscd = prereq::ensure_pcsc()?;
    let pg = prereq::postgres_url();
    match &pg {
        Some(url) => println!("    PostgreSQL reachable ({})", prereq::redact(url)),
        None if ci => bail!(
            "PostgreSQL is required under CI=true but is not reachable at {}; start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`",
            prereq::DEFAULT_PG_URL
        ),
        None => println!("    PostgreSQL is NOT reachable: the PostgreSQL suite will be skipped (it is required under CI=true)"),
    }
    println!("==> building");
    run(cargo().current_dir(root).args(["build", "--workspace", "--bins", "--tests"]))?;
    println!("==> running the tests");
    let mut cmd = cargo();
    cmd.current_dir(root).args(["test", "--workspace", "--no-fail-fast"]);
    if !args.is_empty() {
        cmd.args(args);
    }
    if let Some(url) = pg {
        cmd.env("CARDBRIDGE_TEST_PG_URL", url);
    }
    // The PC/SC suites skip with a note where pcscd is missing; here it is set up, so they must run.
    cmd.env("CARDBRIDGE_REQUIRE_PCSC", "1");
    if let Some(started) = &pcscd {
        // This pcscd belongs to the test run: the pcscd-restart test may stop and replace it.
        cmd.env("CARDBRIDGE_TEST_PCSCD_PID", started.pid().to_string());
    }
    run(&mut cmd)
}

fn bench(root: &Path, name: &str) -> anyhow::Result<()> {
    if name == "topup" {
        return bench_topup(root);
    }
    if name == "load" {
        return bench_load(root);
    }
    wasm::build_wasm(root)?;
    prereq::ensure_browser()?;
    let pcscd = prereq::ensure_pcsc()?;
    let _pcscd = pcscd;
    run(cargo().current_dir(root).args(["bench", "-p", "cardbridge-tests", "--bench", name]).env("CARDBRIDGE_REQUIRE_PCSC", "1"))
}

/// The top-up benchmark: in-process agents with simulated purses, no PC/SC reader or browser;
/// SQLite, and PostgreSQL (required: the figures are for both).
fn bench_topup(root: &Path) -> anyhow::Result<()> {
    prereq::ensure_pcsc_build_deps()?;
    let Some(pg) = prereq::postgres_url() else {
        bail!(
            "PostgreSQL is not reachable at {}; start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`",
            prereq::DEFAULT_PG_URL
        );
    };
    println!("    PostgreSQL reachable ({})", prereq::redact(&pg));
    run(cargo().current_dir(root).args(["bench", "-p", "cardbridge-tests", "--bench", "topup"]).env("CARDBRIDGE_TEST_PG_URL", pg))
}

/// The load benchmark: the release server as its own process (its memory alone) on PostgreSQL
/// (required: two instances share one database), simulated agents and pages in the bench.
fn bench_load(root: &Path) -> anyhow::Result<()> {
    prereq::ensure_pcsc_build_deps()?;
    let Some(pg) = prereq::postgres_url() else {
        bail!(
            "PostgreSQL is not reachable at {}; start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`",
            prereq::DEFAULT_PG_URL
        );
    };
    println!("    PostgreSQL reachable ({})", prereq::redact(&pg));
    println!("==> building the release server");
    run(cargo().current_dir(root).args(["build", "--release", "-p", "cardbridge", "--bin", "cardbridge"]))?;
    run(cargo()
        .current_dir(root)
        .args(["bench", "-p", "cardbridge-tests", "--bench", "load"])
        .env("CARDBRIDGE_TEST_PG_URL", pg)
        .env("CARDBRIDGE_BENCH_SERVER_BIN", root.join("target/release/cardbridge")))
}

/// Children killed when the demo ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn demo(root: &Path, listen: &str) -> anyhow::Result<()> {
    println!("==> building the page module");
    wasm::build_wasm(root)?;
    prereq::ensure_pcsc_build_deps()?;
    println!("==> building the server and the agent");
    run(cargo().current_dir(root).args(["build", "-p", "cardbridge", "-p", "cardbridge-agent"]))?;
    let target = root.join("target/debug");
    let server_bin = target.join("cardbridge");
    let agent_bin = target.join("cardbridge-agent");
    let data = root.join("data");
    std::fs::create_dir_all(&data)?;
    let db_url = format!("sqlite://{}", data.join("cardbridge.db").display());
    let server = |args: &[&str]| {
        let mut c = Command::new(&server_bin);
        c.current_dir(root)
            .args(args)
            .env("CARDBRIDGE_DATABASE_URL", &db_url)
            .env("CARDBRIDGE_DATA_DIR", &data)
            .env("CARDBRIDGE_WWW_DIR", root.join("www"))
            .env("CARDBRIDGE_LISTEN", listen)
            .env("CARDBRIDGE_DEMO", "true")
            .env("CARDBRIDGE_DEMO_BANK", "true");
        c
    };
    println!("==> database and demo data ({db_url})");
    run(&mut server(&["migrate"]))?;
    run(&mut server(&["seed-demo"]))?;

    let agent_dir = data.join("demo-terminal");
    let base = format!("http://{listen}");
    // Ctrl-C or SIGTERM: return normally so that `Children` stops the server and the agent.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::SeqCst)).context("installing the signal handler")?;
    let mut children = Children(Vec::new());
    println!("==> starting the server on {base}");
    children.0.push(server(&["serve"]).spawn().context("starting the server")?);
    wait_for_port(listen, Duration::from_secs(30))?;

    if !agent_dir.join("terminal.toml").exists() {
        println!("==> creating and enrolling the demo terminal");
        let name = format!("Demo terminal {}", std::process::id());
        let out = server(&["terminal", "add", &name])
            .stderr(Stdio::inherit())
            .output()
            .context("creating the demo terminal")?;
        if !out.status.success() {
            bail!("creating the demo terminal failed");
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let code = text
            .lines()
            .find_map(|l| l.strip_prefix("enrolment_code").map(|c| c.trim().to_string()))
            .context("no enrolment code printed")?;
        run(Command::new(&agent_bin).args(["enrol", "--server", &base, "--code", &code, "--state-dir"]).arg(&agent_dir))?;
        // The demo terminal is also a self-service top-up kiosk (R3.3: an admin's switch).
        run(&mut server(&["terminal", "topup", &name, "on"]))?;
    }
    println!("==> starting the virtual terminal (agent with simulated cards)");
    children.0.push(
        Command::new(&agent_bin)
            .args(["run", "--reader", "virtual", "--console", "--state-dir"])
            .arg(&agent_dir)
            .stdin(Stdio::inherit())
            .spawn()
            .context("starting the agent")?,
    );
    let pair = Command::new(&agent_bin).args(["pair", "--state-dir"]).arg(&agent_dir).output().context("pairing")?;
    if !pair.status.success() {
        bail!("asking for a pairing link failed: {}", String::from_utf8_lossy(&pair.stderr));
    }
    let link = String::from_utf8_lossy(&pair.stdout).lines().find(|l| l.contains("/pair?token=")).unwrap_or_default().trim().to_string();
    println!();
    println!("cardbridge demo is running.");
    println!();
    println!("  1. Open this one-time link in your browser; it binds the browser to the demo terminal:");
    println!("       {link}");
    println!("  2. Log in at {base}/ as one of:");
    for (user, pass, role) in [
        ("alice", "alice-demo-pass", "cardholder"),
        ("bob", "bob-demo-pass", "cardholder"),
        ("teller", "teller-demo-pass", "staff (branch desk)"),
        ("admin", "admin-demo-pass", "admin (terminals, permissions, audit)"),
    ] {
        println!("       {user:<7} {pass:<18} {role}");
    }
    println!("  3. Allow the terminal, choose a request, then tap a card in the demo card tray");
    println!("     (or type `tap <card>` here; `list` shows the cards). The number fills itself in.");
    println!("  4. Top-up kiosk (no login; same paired browser): {base}/topup.html");
    println!("     Tap `purse-card` (alice's stored-value card), bind a bank card by tapping");
    println!("     `unionpay-debit` with phone +8613800000001 (the code is in the SMS outbox on the");
    println!("     admin page), tap `purse-card` again and choose an amount. The bank is the sandbox");
    println!("     bank, running inside the server.");
    println!();
    println!("Press Ctrl-C to stop.");
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            println!("stopping the demo");
            return Ok(());
        }
        for child in &mut children.0 {
            if let Some(status) = child.try_wait()? {
                bail!("a demo process exited ({status}) after {:?}", started.elapsed());
            }
        }
    }
}

fn wait_for_port(addr: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the server did not start listening on {addr} within {limit:?}")
}
