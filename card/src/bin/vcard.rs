//! `vcard`: put a simulated card into a vsmartcard virtual reader and keep it there until told to remove it
//!
//! ```text
//! cargo run -p card --bin vcard -- --list
//! cargo run -p card --bin vcard -- --slot 0 --card unionpay-debit [--delay-ms N] [--vanish-after N]
//! cargo run -p card --bin vcard -- --card purse-card --state purse.json [--tear-credit after]
//! ```
//!
//! A demo e-purse (`purse-card`, `purse-card-2`, `purse-foreign`, `purse-clone`) keeps its
//! balance, online serial and load log in the `--state` file (created if missing, written after
//! every change), so running vcard again with the same file inserts the same card again. `--tear-credit before|after` makes the first CREDIT FOR LOAD vanish without
//! an answer, before or after the card commits it.
//!
//! The card stays inserted until stdin ends or reads `remove` (or Ctrl-C, which closes the socket
//! with the process). If vpcd drops the connection, or the card vanishes, vcard exits with a
//! message rather than inserting the card again.

use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use card::sim::vpcd::{self, Ended, Options};
use card::sim::purse::{self as purse_sim, Tear};
use card::sim::{self, Misbehave, SimCard, Vanish};

#[derive(Debug, Parser)]
#[command(about = "Insert a simulated card into a vsmartcard (vpcd) virtual PC/SC reader")]
struct Args {
    /// Print the card catalogue and exit.
    #[arg(long)]
    list: bool,
    /// Catalogue name of the card (see --list).
    #[arg(long, required_unless_present = "list")]
    card: Option<String>,
    /// vpcd slot: 0 is reader `Virtual PCD 00 00` (port 35963), 1 is `Virtual PCD 00 01`.
    #[arg(long, default_value_t = 0)]
    slot: u8,
    /// Host vpcd listens on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// Port vpcd listens on (default: 35963 + slot).
    #[arg(long)]
    port: Option<u16>,
    /// Answer every command this many milliseconds late.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Answer this many commands, then vanish (close the connection) on the next one.
    #[arg(long)]
    vanish_after: Option<usize>,
    /// Demo purses only: keep the purse's persistent state in this file.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Demo purses only: tear the first CREDIT FOR LOAD (vanish before or after the commit).
    #[arg(long, value_enum)]
    tear_credit: Option<TearAt>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TearAt {
    Before,
    After,
}

/// The card by name; a demo purse with its state file and tear mode.
fn card_for(name: &str, args: &Args) -> Result<Box<dyn SimCard>, String> {
    let Some(mut card) = purse_sim::demo_purse(name) else {
        if args.state.is_some() || args.tear_credit.is_some() {
            return Err(format!(
                "--state and --tear-credit apply to the demo purses only ({})",
                purse_sim::DEMO_PURSES.join(", ")
            ));
        }
        return sim::load(name)
            .ok_or_else(|| format!("no card named {name:?} in the catalogue (see --list)"));
    };
    if let Some(path) = &args.state {
        card = card
            .with_state_file(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    match args.tear_credit {
        Some(TearAt::Before) => card.tear_next_credit(Tear::BeforeCommit),
        Some(TearAt::After) => card.tear_next_credit(Tear::AfterCommit),
        None => {}
    }
    Ok(Box::new(card))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        print_catalogue();
        return ExitCode::SUCCESS;
    }
    let name = args.card.as_deref().unwrap_or_default();
    let card = match card_for(name, &args) {
        Ok(card) => card,
        Err(e) => {
            eprintln!("vcard: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut card = Misbehave::new(card).delay(Duration::from_millis(args.delay_ms));
    if let Some(n) = args.vanish_after {
        card = card.vanish(Vanish::AfterCommands(n));
    }
    let port = args
        .port
        .unwrap_or_else(|| vpcd::slot_addr(args.slot).port());
    let addr = SocketAddr::new(args.host, port);

    let inserted = match vpcd::insert_at(Box::new(card), addr, Options::default()) {
        Ok(inserted) => inserted,
        Err(e) => {
            eprintln!("vcard: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "vcard: {name} inserted into {} ({addr}); type `remove` or end stdin (Ctrl-D) to remove it",
        vpcd::reader_name(args.slot)
    );

    let remover = inserted.remover();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(line) if line.trim() == "remove" => break,
                Ok(_) => println!("vcard: type `remove` to remove the card"),
                Err(_) => break,
            }
        }
        remover.remove();
    });

    match inserted.wait() {
        Ok(Ended::Removed) => {
            println!("vcard: card removed");
            ExitCode::SUCCESS
        }
        Ok(Ended::Vanished) => {
            println!("vcard: card vanished mid-command as configured; exiting");
            ExitCode::SUCCESS
        }
        Ok(Ended::ReaderClosed) => {
            eprintln!("vcard: vpcd closed the connection (pcscd stopped?); not re-inserting");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("vcard: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Names and labels; the numbers shown masked.
fn print_catalogue() {
    let entries = sim::catalogue();
    let width = entries.iter().map(|e| e.name.len()).max().unwrap_or(0);
    for entry in entries {
        println!(
            "{:width$}  {}  {}",
            entry.name,
            card::pan::mask(entry.expected_number),
            entry.label
        );
    }
    for purse in purse_sim::DEMO_PURSES
        .iter()
        .filter_map(|name| purse_sim::demo_purse(name))
    {
        println!(
            "{:width$}  {}  PBOC e-purse, balance kept with --state (not a payment card)",
            purse.name(),
            purse.serial().masked()
        );
    }
}
