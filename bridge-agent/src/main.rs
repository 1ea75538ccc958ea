//! `cardbridge-agent`: command-line wiring of the agent library (enrol, run, pair).

use std::path::PathBuf;

use anyhow::Context;
use cardbridge_agent::{backend, console, state, AgentConfig, ReaderChoice, ReaderHandle};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cardbridge-agent", version, about = "Runs the bank server's signed card-reader commands on this PC")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register this terminal with the server using a one-time enrolment code
    Enrol {
        /// The server's base URL, e.g. https://cardbridge.bank.example
        #[arg(long)]
        server: String,
        /// The one-time enrolment code an administrator created for this terminal
        #[arg(long)]
        code: String,
        #[command(flatten)]
        state: StateDir,
        /// Replace an existing enrolment (its terminal key is lost)
        #[arg(long)]
        force: bool,
    },
    /// Connect to the server and serve its commands until stopped
    Run {
        #[command(flatten)]
        state: StateDir,
        /// Reader backend: virtual, pcsc or pcsc:NAME
        #[arg(long, default_value = "virtual")]
        reader: ReaderChoice,
        /// Virtual reader: start with this simulated card present
        #[arg(long)]
        card: Option<String>,
        /// Virtual reader: read `tap NAME`, `remove`, `list`, `help` from standard input
        #[arg(long)]
        console: bool,
    },
    /// Print a one-time link that pairs a browser on this PC with this terminal
    Pair {
        #[command(flatten)]
        state: StateDir,
    },
}

#[derive(Debug, clap::Args)]
struct StateDir {
    /// State directory [default: $CARDBRIDGE_AGENT_STATE_DIR, else $HOME/.cardbridge-agent]
    #[arg(long = "state-dir")]
    state_dir: Option<PathBuf>,
}

impl StateDir {
    fn resolve(self) -> anyhow::Result<PathBuf> {
        match self.state_dir {
            Some(dir) => Ok(dir),
            None => state::default_state_dir(),
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Enrol { server, code, state, force } => {
            let state_dir = state.resolve()?;
            let enrolment = cardbridge_agent::enrol(&server, &code, &state_dir, force).await?;
            println!(
                "Enrolled as terminal \"{}\" ({}).\nState directory: {}\nNext: cardbridge-agent pair, then cardbridge-agent run",
                enrolment.terminal_name,
                enrolment.terminal_id,
                enrolment.state_dir.display()
            );
            Ok(())
        }
        Command::Pair { state } => {
            let link = cardbridge_agent::request_pairing(&state.resolve()?).await?;
            println!("Open this link in the browser to pair it with this terminal (valid until {}):", link.expires_at);
            println!("{}", link.url);
            Ok(())
        }
        Command::Run { state, reader, card, console: with_console } => {
            let config = AgentConfig::load(&state.resolve()?)?;
            if with_console && reader != ReaderChoice::Virtual {
                anyhow::bail!("--console works only with the virtual reader");
            }
            let backend = backend::open(&reader, card.as_deref())?;
            let (handle, events) = ReaderHandle::spawn(backend)?;
            if with_console {
                let handle = handle.clone();
                tokio::spawn(async move {
                    println!("virtual reader console; type help");
                    let lines = console::stdin_lines();
                    if let Err(error) = console::console(handle, lines, tokio::io::stdout()).await {
                        tracing::warn!(error = %format!("{error:#}"), "console stopped");
                    }
                });
            }
            cardbridge_agent::run_with_reader(config, handle, events, shutdown_signal())
                .await
                .context("the agent stopped")
        }
    }
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
