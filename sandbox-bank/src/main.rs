//! The `cardbridge-sandbox-bank` command: serve the sandbox bank on its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use cardbridge_sandbox_bank::{SandboxBank, SandboxConfig};
use clap::Parser;
use protocol::bank::signing::BankKey;

/// A sandbox bank implementing the bank-gateway API (docs/bank-gateway.md), with injectable faults
/// at /sandbox/faults.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "SANDBOX_BANK_LISTEN", default_value = "127.0.0.1:8091")]
    listen: SocketAddr,
    /// The sandbox's own database.
    #[arg(long, env = "SANDBOX_BANK_DATABASE", default_value = "sqlite://data/sandbox-bank.db")]
    database: String,
    /// The shared signing key, `<key id>:<hex secret>`; created (mode 0600) if missing.
    #[arg(long, env = "SANDBOX_BANK_KEY_FILE", default_value = "data/bank.key")]
    key_file: PathBuf,
    /// Seed the demo settlement account and customers (idempotent).
    #[arg(long)]
    seed_demo: bool,
}

fn load_or_create_key(path: &Path) -> anyhow::Result<BankKey> {
    if path.exists() {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return BankKey::parse_file(&text).with_context(|| format!("parsing {}", path.display()));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let key = BankKey::generate("sandbox-1");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, key.to_file().as_bytes())?;
    tracing::info!(path = %path.display(), "created a new bank key");
    Ok(key)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let key = load_or_create_key(&args.key_file)?;
    let mut config = SandboxConfig::new(args.listen, args.database, key);
    if args.seed_demo {
        config = config.with_demo_accounts();
    }
    let bank = SandboxBank::spawn(config).await?;
    println!("sandbox bank listening on {}", bank.base_url());
    bank.run_until(async {
        #[cfg(unix)]
        {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("installing the SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}
