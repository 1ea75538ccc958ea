//! The `cardbridge` command: serve, migrate, seed demo data, manage users, terminals and stored-value cards, settle a business day.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use cardbridge::auth::MAX_USERNAME_CHARS;
use cardbridge::store::{Role, Store, StoreError};
use cardbridge::terminals::TerminalName;
use cardbridge::{Application, Config};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cardbridge", version, about = "Read smart cards at any PC through the browser")]
struct Cli {
    /// TOML configuration file (defaults, then this file, then CARDBRIDGE_* variables).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log format, overriding `log_format` of the configuration: text or json.
    #[arg(long, global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Insert demo users, bank cards, accounts and transactions.
    SeedDemo,
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage terminals.
    Terminal {
        #[command(subcommand)]
        command: TerminalCommand,
    },
    /// Manage the stored-value (purse) cards the issuer knows: only these are admitted for top-up.
    PurseCard {
        #[command(subcommand)]
        command: PurseCardCommand,
    },
    /// Check the audit log: its hash chain, every signed checkpoint of its head, and optionally a
    /// head held outside the database.
    AuditVerify(AuditVerifyArgs),
    /// Settle a business day (R3.7): reconcile the bank's statement, the ledger and the cards'
    /// proofs, and keep the report. Settling again gives the same report; a different result is
    /// a new revision, the old one kept.
    Settle {
        /// The business day, YYYY-MM-DD.
        #[arg(long, value_parser = parse_business_date)]
        date: cardbridge::settlement::BusinessDate,
    },
}

#[derive(clap::Args)]
struct AuditVerifyArgs {
    /// Event count of a head held outside the database (with --expect-head).
    #[arg(long, requires = "expect_head", conflicts_with = "expect_checkpoint")]
    expect_count: Option<u64>,
    /// Head hash (hex) of that head.
    #[arg(long, requires = "expect_count")]
    expect_head: Option<String>,
    /// A checkpoint held outside the database: the JSON answer of `GET /api/admin/audit/head`
    /// (its signature must verify).
    #[arg(long, value_name = "FILE")]
    expect_checkpoint: Option<PathBuf>,
    /// The server's Ed25519 public key (hex) to check signatures with; default: the key of
    /// `server.key` in the data directory.
    #[arg(long, value_name = "HEX")]
    public_key: Option<String>,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user; the password is read from standard input.
    Add {
        name: String,
        #[arg(long, value_parser = ["cardholder", "staff", "admin"])]
        role: String,
    },
}

#[derive(Subcommand)]
enum TerminalCommand {
    /// Create a terminal; prints its id and one-time enrolment code. The name is trimmed and has at
    /// most 64 characters, none of them control characters.
    Add {
        #[arg(value_parser = TerminalName::parse)]
        name: TerminalName,
    },
    /// Switch a terminal's permission on.
    Permit { terminal_id: String },
    /// Switch a terminal's permission off.
    Forbid { terminal_id: String },
    /// Switch self-service top-up on or off for a terminal (by name, or by id).
    Topup {
        name: String,
        #[arg(value_parser = ["on", "off"])]
        switch: String,
    },
}

#[derive(Subcommand)]
enum PurseCardCommand {
    /// Register a stored-value card (serial: 16 hex digits) for a cardholder.
    Add {
        #[arg(value_parser = parse_serial)]
        serial: card::purse::CardSerial,
        /// The holder's user name (a cardholder account).
        #[arg(long)]
        user: String,
    },
    /// Block a card (lost, stolen, closed): no kiosk admits it.
    Block {
        #[arg(value_parser = parse_serial)]
        serial: card::purse::CardSerial,
        #[arg(long)]
        reason: String,
    },
    /// Unblock a blocked card.
    Unblock {
        #[arg(value_parser = parse_serial)]
        serial: card::purse::CardSerial,
    },
}

fn parse_business_date(text: &str) -> Result<cardbridge::settlement::BusinessDate, String> {
    cardbridge::settlement::BusinessDate::parse(text).map_err(|e| e.to_string())
}

fn parse_serial(text: &str) -> Result<card::purse::CardSerial, String> {
    cardbridge::topup::admission::parse_card_serial(text).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(format) = &cli.log_format {
        config.log_format = format.parse()?;
    }
    cardbridge::logging::init(config.log_format)?;
    match cli.command {
        Command::Serve => {
            let app = Application::build(config).await?;
            tracing::info!(address = %app.local_addr(), "cardbridge listening");
            app.run_until(shutdown_signal()).await
        }
        Command::Migrate => {
            open_store(&config).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::SeedDemo => {
            let store = open_store(&config).await?;
            let secrets = cardbridge::secrets::Secrets::load_or_create(&config.data_dir)?;
            cardbridge::seed::seed_demo(&store, &secrets).await?;
            println!("demo data in place; logins:");
            for (name, password, role) in cardbridge::seed::DEMO_USERS {
                println!("  {:<10} {:<10} password {password}", role.as_str(), name);
            }
            Ok(())
        }
        Command::User { command: UserCommand::Add { name, role } } => {
            let store = open_store(&config).await?;
            let role = Role::parse(&role).context("unknown role")?;
            let name = name.trim().to_lowercase();
            anyhow::ensure!(
                !name.is_empty() && name.chars().count() <= MAX_USERNAME_CHARS && !name.chars().any(char::is_control),
                "a user name has 1 to {MAX_USERNAME_CHARS} characters and no control characters"
            );
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password).context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\n', '\r']);
            anyhow::ensure!(password.chars().count() >= 8, "the password must have at least 8 characters");
            let hash = cardbridge::auth::hash_password(password)?;
            let user = store.create_user(&name, &hash, role).await.map_err(|e| match e {
                cardbridge::store::StoreError::Conflict(_) => anyhow::anyhow!("user {name} exists already"),
                other => other.into(),
            })?;
            store.audit("cli", "user.add", &user.user_id, role.as_str()).await?;
            println!("{}", user.user_id);
            Ok(())
        }
        Command::Terminal { command } => {
            let store = open_store(&config).await?;
            match command {
                TerminalCommand::Add { name } => {
                    let created = cardbridge::terminals::create_named(&store, &name, "cli").await.map_err(|e| match e {
                        cardbridge::store::StoreError::Conflict(_) => anyhow::anyhow!("a terminal named {name} exists already"),
                        other => other.into(),
                    })?;
                    println!("terminal_id     {}", created.terminal_id);
                    println!("enrolment_code  {}", created.enrolment_code);
                    println!("expires_at      {} UTC", cardbridge::util::format_ms(created.expires_at));
                }
                TerminalCommand::Permit { terminal_id } => {
                    cardbridge::terminals::set_permitted(&store, &terminal_id, true, "cli").await.context("no such terminal")?;
                    println!("terminal {terminal_id} permitted");
                }
                TerminalCommand::Forbid { terminal_id } => {
                    cardbridge::terminals::set_permitted(&store, &terminal_id, false, "cli").await.context("no such terminal")?;
                    println!("terminal {terminal_id} forbidden");
                }
                TerminalCommand::Topup { name, switch } => {
                    let enabled = switch == "on";
                    let terminal = match store.terminal_by_name(name.trim()).await {
                        Err(StoreError::NotFound) => store.terminal(name.trim()).await,
                        found => found,
                    }
                    .map_err(|e| match e {
                        StoreError::NotFound => anyhow::anyhow!("no terminal named {name}"),
                        other => other.into(),
                    })?;
                    let mut tx = store.begin().await?;
                    tx.set_terminal_topup(&terminal.terminal_id, enabled).await?;
                    tx.audit("cli", cardbridge::http::admin::topup_action(enabled), &terminal.terminal_id, "").await?;
                    tx.commit().await?;
                    println!("top-up {switch} for terminal {} ({})", terminal.name, terminal.terminal_id);
                }
            }
            Ok(())
        }
        Command::PurseCard { command } => {
            let store = open_store(&config).await?;
            purse_card(&store, command).await
        }
        Command::AuditVerify(args) => audit_verify(&config, args).await,
        Command::Settle { date } => settle(&config, date).await,
    }
}

async fn purse_card(store: &Store, command: PurseCardCommand) -> anyhow::Result<()> {
    let now = cardbridge::util::now_ms();
    let no_card = |e: StoreError| match e {
        StoreError::NotFound => anyhow::anyhow!("no such card"),
        other => other.into(),
    };
    match command {
        PurseCardCommand::Add { serial, user } => {
            let name = user.trim().to_lowercase();
            let holder = store.user_by_name(&name).await.map_err(|e| match e {
                StoreError::NotFound => anyhow::anyhow!("no user named {name}"),
                other => other.into(),
            })?;
            anyhow::ensure!(holder.role == Role::Cardholder, "{name} is not a cardholder account");
            let mut tx = store.begin().await?;
            tx.insert_purse_card(&serial, &holder.user_id, None, now).await.map_err(|e| match e {
                StoreError::Conflict(_) => anyhow::anyhow!("card {serial} is registered already"),
                other => other.into(),
            })?;
            tx.audit("cli", "purse_card.add", &serial.masked(), &holder.username).await?;
            tx.commit().await?;
            println!("card {} registered for {name}", serial.to_hex());
        }
        PurseCardCommand::Block { serial, reason } => {
            let reason = cardbridge::http::admin::block_reason(&reason).map_err(|e| anyhow::anyhow!(e))?;
            let mut tx = store.begin().await?;
            anyhow::ensure!(tx.block_purse_card(&serial, reason, now).await.map_err(no_card)?, "card {serial} is blocked already");
            tx.audit("cli", "purse_card.block", &serial.masked(), reason).await?;
            tx.commit().await?;
            println!("card {} blocked", serial.to_hex());
        }
        PurseCardCommand::Unblock { serial } => {
            let mut tx = store.begin().await?;
            anyhow::ensure!(tx.unblock_purse_card(&serial, now).await.map_err(no_card)?, "card {serial} is not blocked");
            tx.audit("cli", "purse_card.unblock", &serial.masked(), "").await?;
            tx.commit().await?;
            println!("card {} unblocked", serial.to_hex());
        }
    }
    Ok(())
}

async fn audit_verify(config: &Config, args: AuditVerifyArgs) -> anyhow::Result<()> {
    use cardbridge::checkpoint::{verify_log, ExpectedHead};
    let server_key = match &args.public_key {
        Some(text) => {
            let bytes = hex::decode(text.trim()).context("--public-key is not hex")?;
            Some(protocol::envelope::verifying_key(&bytes).context("--public-key is not an Ed25519 public key")?)
        }
        // A server that never ran has no key, and no checkpoints either (verify_log says if it has).
        None if !config.data_dir.join("server.key").exists() => None,
        None => Some(cardbridge::secrets::Secrets::load_server_public_key(&config.data_dir)?),
    };
    let expected = match (&args.expect_checkpoint, args.expect_count, &args.expect_head) {
        (Some(path), _, _) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let head: protocol::api::AuditHead =
                protocol::decode(&text).with_context(|| format!("{} is not an audit head", path.display()))?;
            let key = server_key.as_ref().context("no server key to check the held checkpoint with (pass --public-key)")?;
            Some(ExpectedHead::from_signed(&head, key)?)
        }
        (None, Some(count), Some(head)) => Some(ExpectedHead::parse(count, head)?),
        _ => None,
    };
    let store = open_store(config).await?;
    let verification = verify_log(&store, server_key.as_ref(), expected.as_ref()).await?;
    store.close().await;
    if !verification.is_intact() {
        for problem in &verification.problems {
            eprintln!("{problem}");
        }
        anyhow::bail!("audit log not intact: {} problem(s) in {} events", verification.problems.len(), verification.events);
    }
    println!(
        "audit log intact: {} events, {} signed checkpoint(s){}",
        verification.events,
        verification.checkpoints_verified,
        if expected.is_some() { ", matches the expected head" } else { "" }
    );
    if verification.checkpoints_verified == 0 && expected.is_none() {
        println!("note: no checkpoint yet, so deleting the newest events would go unnoticed");
    }
    Ok(())
}

async fn settle(config: &Config, date: cardbridge::settlement::BusinessDate) -> anyhow::Result<()> {
    use cardbridge::settlement::{Class, Lang, LoggingAlarms, Report, Settler};
    let store = open_store(config).await?;
    let bank = config.bank_gateway()?.context("settling needs the bank's statement: set bank_url and bank_key_file")?;
    let settler = Settler::from_parts(
        config,
        store.clone(),
        Some(bank),
        std::sync::Arc::new(config.key_store()?),
        std::sync::Arc::new(cardbridge::clock::SystemClock),
        std::sync::Arc::new(LoggingAlarms),
    );
    let settled = settler.settle(date, "cli").await;
    store.close().await;
    let settled = settled?;
    let report = Report::new(settled.settlement);
    let (h, totals) = (report.header(), report.totals());
    let money = cardbridge::settlement::export::yuan;
    println!(
        "{} revision {} ({}), {} to {} {}",
        h.business_date,
        h.revision,
        if settled.new_revision { "new" } else { "unchanged: same result as before" },
        report.calendar.local_text(h.window.start_ms),
        report.calendar.local_text(h.window.end_ms),
        h.time_zone
    );
    println!(
        "top-ups {}  completed {} ({} {})  bank debits {}  ledger debits {}",
        totals.n_topups,
        totals.n_completed,
        h.currency,
        money(totals.completed_minor),
        money(totals.bank_debit_minor),
        money(totals.ledger_debit_minor)
    );
    let counts: Vec<String> = Class::ALL.iter().map(|c| format!("{} {}", c.code(), totals.count(*c))).collect();
    println!("{}", counts.join("  "));
    for i in report.mismatches() {
        println!(
            "  {:<16} {:<28} {:<24} {} {}  {}",
            i.class().code(),
            i.reason.code(),
            i.topup_id.as_deref().or(i.bank_key.as_deref()).unwrap_or("-"),
            h.currency,
            money(i.amount_minor),
            i.reason.action(Lang::En)
        );
    }
    Ok(())
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = Store::connect(&config.database_url).await?;
    store.migrate().await?;
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_names_are_parsed_on_the_command_line() {
        let parse = |name: &str| Cli::try_parse_from(["cardbridge", "terminal", "add", name]);

        let ok = parse("  Desk 4  ").expect("a plain name parses");
        let Command::Terminal { command: TerminalCommand::Add { name } } = ok.command else { panic!("terminal add") };
        assert_eq!(name.as_str(), "Desk 4");
        assert!(parse("Desk\n4").is_err());
        assert!(parse(&"x".repeat(65)).is_err());
        assert!(parse("   ").is_err());
    }

    #[test]
    fn purse_card_and_topup_commands_parse() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["cardbridge"], args].concat());
        let ok = parse(&["purse-card", "add", "20261200000004aa", "--user", "alice"]).expect("add parses");
        let Command::PurseCard { command: PurseCardCommand::Add { serial, user } } = ok.command else { panic!("purse-card add") };
        assert_eq!((serial.to_hex().as_str(), user.as_str()), ("20261200000004AA", "alice"));
        assert!(parse(&["purse-card", "add", "2026", "--user", "alice"]).is_err(), "a short serial");
        assert!(parse(&["purse-card", "add", "20261200000004AA"]).is_err(), "no holder");
        assert!(parse(&["purse-card", "block", "20261200000004AA", "--reason", "lost"]).is_ok());
        assert!(parse(&["purse-card", "block", "20261200000004AA"]).is_err(), "no reason");
        assert!(parse(&["purse-card", "unblock", "20261200000004AA"]).is_ok());
        assert!(parse(&["terminal", "topup", "Kiosk 1", "on"]).is_ok());
        assert!(parse(&["terminal", "topup", "Kiosk 1", "off"]).is_ok());
        assert!(parse(&["terminal", "topup", "Kiosk 1", "maybe"]).is_err());
    }

    #[test]
    fn settle_takes_a_real_date() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["cardbridge"], args].concat());
        let ok = parse(&["settle", "--date", "2026-05-01"]).expect("settle parses");
        let Command::Settle { date } = ok.command else { panic!("settle") };
        assert_eq!(date.to_string(), "2026-05-01");
        assert!(parse(&["settle", "--date", "2026-02-30"]).is_err(), "no such day");
        assert!(parse(&["settle", "--date", "yesterday"]).is_err());
        assert!(parse(&["settle"]).is_err(), "the date is required");
    }

    #[test]
    fn the_log_format_is_text_or_json() {
        assert!(Cli::try_parse_from(["cardbridge", "--log-format", "json", "migrate"]).is_ok());
        assert!(Cli::try_parse_from(["cardbridge", "--log-format", "xml", "migrate"]).is_err());
    }
}

/// Ctrl-C or SIGTERM (what a service manager sends): either starts the graceful shutdown.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
        _ = terminate => tracing::info!("terminated: shutting down"),
    }
}
