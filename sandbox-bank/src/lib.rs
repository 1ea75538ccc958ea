//! The sandbox bank: a stand-in for the bank's settlement system that implements the bank-gateway
//! API (`docs/bank-gateway.md`, wire types in `protocol::bank`) with real balances and injectable faults.
//!
//! # Layout
//!
//! - [`ledger`]: accounts, cards, bindings, transfers, refunds and statements in SQLite (WAL,
//!   `synchronous=FULL`, migrations in `sandbox-bank/migrations/`); one transaction per movement.
//! - [`http`]: the `/v1` routes (requests verified, replies signed) and the `/sandbox` admin routes.
//! - [`api`]: the sandbox-only admin wire format, the [`api::FaultPlan`].
//! - [`net`]: a listener whose connections can be dropped (lost replies, crashes).
//!
//! [`SandboxBank::spawn`] runs it in process, for the demo and the tests; the
//! `cardbridge-sandbox-bank` binary runs it on its own.

pub mod api;
pub mod http;
pub mod ledger;
pub mod net;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use protocol::bank::signing::BankKey;
use tokio::sync::watch;

pub use api::{Endpoint, Fault, FaultPlan, FaultRule, StatementFault};
pub use ledger::{Ledger, SeedCustomer, SeedSettlement};

/// How to run a sandbox bank.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Port 0 picks a free port; a restart keeps the port it got.
    pub listen: SocketAddr,
    /// `sqlite://path` (created if missing).
    pub database_url: String,
    pub key: BankKey,
    pub settlement_accounts: Vec<SeedSettlement>,
    pub customers: Vec<SeedCustomer>,
}

/// The demo's settlement account.
pub const DEMO_SETTLEMENT_ACCOUNT: &str = "6200-SETTLE-0001";

impl SandboxConfig {
    /// A config with no accounts.
    pub fn new(listen: SocketAddr, database_url: impl Into<String>, key: BankKey) -> SandboxConfig {
        SandboxConfig { listen, database_url: database_url.into(), key, settlement_accounts: Vec::new(), customers: Vec::new() }
    }

    /// Add the demo accounts: the issuer's settlement account and two customers whose cards are
    /// the card simulator's `unionpay-debit` and `unionpay-credit` cards.
    pub fn with_demo_accounts(mut self) -> SandboxConfig {
        self.settlement_accounts.push(SeedSettlement {
            account_id: DEMO_SETTLEMENT_ACCOUNT.into(),
            holder_name: "Campus card issuer".into(),
            currency: "CNY".into(),
        });
        for (account_id, holder_name, card_number, phone, balance_minor) in [
            ("cust-0001", "Li Lei", "6200000000000005", "+8613800000001", 50_000),
            ("cust-0002", "Han Meimei", "6205500000000000004", "+8613800000002", 2_000),
        ] {
            self.customers.push(SeedCustomer {
                account_id: account_id.into(),
                holder_name: holder_name.into(),
                card_number: card_number.into(),
                phone: phone.into(),
                currency: "CNY".into(),
                balance_minor,
            });
        }
        self
    }
}

struct Running {
    ledger: Ledger,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    registry: net::Registry,
}

/// A sandbox bank running in this process. `stop` is a crash as clients see it: connections drop,
/// in-flight requests that did not commit are rolled back; `start` serves the same database again
/// on the same address.
pub struct SandboxBank {
    config: SandboxConfig,
    addr: SocketAddr,
    faults: Arc<Mutex<FaultPlan>>,
    running: Option<Running>,
}

impl std::fmt::Debug for SandboxBank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxBank").field("addr", &self.addr).field("running", &self.running.is_some()).finish()
    }
}

/// Dropping a running bank stops it the hard way (no waiting for the database to close).
impl Drop for SandboxBank {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(true);
            net::drop_all(&running.registry);
            running.task.abort();
        }
    }
}

impl SandboxBank {
    /// Open the database, seed the configured accounts, bind and serve.
    pub async fn spawn(config: SandboxConfig) -> anyhow::Result<SandboxBank> {
        let mut bank = SandboxBank { addr: config.listen, config, faults: Default::default(), running: None };
        bank.start().await?;
        Ok(bank)
    }

    /// `http://ip:port`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared signing key.
    pub fn key(&self) -> &BankKey {
        &self.config.key
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Replace the fault plan (in force until replaced; survives restarts).
    pub fn set_faults(&self, plan: FaultPlan) {
        *self.faults.lock().expect("faults lock") = plan;
    }

    /// The fault plan as it stands (counted rules count down).
    pub fn faults(&self) -> FaultPlan {
        self.faults.lock().expect("faults lock").clone()
    }

    fn ledger(&self) -> anyhow::Result<&Ledger> {
        self.running.as_ref().map(|r| &r.ledger).context("the sandbox bank is stopped")
    }

    /// Balance of an account, `None` when it does not exist.
    pub async fn balance(&self, account_id: &str) -> anyhow::Result<Option<i64>> {
        self.ledger()?.balance(account_id).await
    }

    /// Settle the pending transfers (see [`Fault::Pending`]); returns how many.
    pub async fn settle_pending(&self) -> anyhow::Result<usize> {
        Ok(self.ledger()?.settle_pending().await?)
    }

    /// Serve again after [`SandboxBank::stop`]. Does nothing when running.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        let ledger = Ledger::open(&self.config.database_url).await?;
        for s in &self.config.settlement_accounts {
            ledger.seed_settlement(s).await?;
        }
        for c in &self.config.customers {
            ledger.seed_customer(c).await?;
        }
        let socket = if self.addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(self.addr).with_context(|| format!("binding {}", self.addr))?;
        let listener = socket.listen(128)?;
        self.addr = listener.local_addr()?;
        let (stop, stopping) = watch::channel(false);
        let registry: net::Registry = Default::default();
        let shared = Arc::new(http::Shared { ledger: ledger.clone(), key: self.config.key.clone(), faults: self.faults.clone(), stopping: stopping.clone() });
        let app = http::router(shared);
        let listener = net::KillableListener::new(listener, registry.clone());
        let mut shutdown = stopping;
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app.into_make_service_with_connect_info::<net::ConnHandle>())
                .with_graceful_shutdown(async move {
                    let _ = shutdown.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "sandbox bank stopped serving");
            }
        });
        tracing::info!(addr = %self.addr, "sandbox bank serving");
        self.running = Some(Running { ledger, stop, task, registry });
        Ok(())
    }

    /// Stop abruptly: no new connections, every open connection dropped, the database closed.
    /// Whatever committed stays; whatever did not is rolled back.
    pub async fn stop(&mut self) {
        let Some(running) = self.running.take() else { return };
        let _ = running.stop.send(true);
        net::drop_all(&running.registry);
        // Graceful shutdown ends once the dropped connections are noticed; a connection that
        // is not noticed within a second is aborted with the task.
        let mut task = running.task;
        if tokio::time::timeout(std::time::Duration::from_secs(1), &mut task).await.is_err() {
            tracing::warn!("sandbox bank: aborting connections still open after the stop");
            task.abort();
        }
        if tokio::time::timeout(std::time::Duration::from_secs(5), running.ledger.close()).await.is_err() {
            tracing::warn!("sandbox bank: database connections still busy after the stop");
        }
        tracing::info!(addr = %self.addr, "sandbox bank stopped");
    }

    /// Stop, then start on the same database and address (a crash and restart).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        self.start().await
    }

    /// Serve until `shutdown` resolves (the binary's loop).
    pub async fn run_until(mut self, shutdown: impl std::future::Future<Output = ()>) {
        shutdown.await;
        self.stop().await;
    }
}
