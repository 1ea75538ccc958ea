//! `vcard`: put a simulated card into a vsmartcard virtual reader and keep it there until told to remove it
//!
//! ```text
//! cargo run -p card --bin vcard -- --list
//! cargo run -p card --bin vcard -- --slot 0 --card unionpay-debit [--delay-ms N] [--vanish-after N]
//! ```
//!
//! The card stays inserted until stdin ends or reads `remove` (or Ctrl-C, which closes the socket
//! with the process). If vpcd drops the connection, or the card vanishes, vcard exits with a
//! message rather than inserting the card again.

use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use card::sim::vpcd::{self, Ended, Options};
use card::sim::{self, Misbehave, Vanish};

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
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        print_catalogue();
        return ExitCode::SUCCESS;
    }
    let name = args.card.as_deref().unwrap_or_default();
    let Some(card) = sim::load(name) else {
        eprintln!("vcard: no card named {name:?} in the catalogue (see --list)");
        return ExitCode::FAILURE;
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
}
