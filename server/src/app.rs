//! The [`Application`]: builds the state, binds its own listener, and runs the HTTP server and the
//! supervised background tasks until one shutdown signal stops them all.
//!
//! Shutdown, in order: the signal cancels the supervisor's token, so axum stops accepting and
//! drains its connections while every background task winds down; the supervisor waits for the
//! tasks (at most [`TASK_STOP_DEADLINE`], then aborts what is left); the final audit checkpoint is
//! written; the pool closes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::auth::LoginLimiter;
use crate::checkpoint::Checkpointer;

/// The supervised task that runs top-ups' bank effects.
pub const TOPUP_BANK_WORKER_TASK: &str = "topup-bank-worker";
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::http;
use crate::hub::Hub;
use crate::secrets::Secrets;
use crate::state::{AppState, Inner};
use crate::store::Store;
use crate::supervisor::{RestartPolicy, Supervisor, TaskBoard, TaskStatus};

/// The scheduled daily settlement (R3.7): settles the previous business day once it is due.
pub const SETTLEMENT_TASK: &str = "daily-settlement";

/// The name of the periodic audit checkpoint task on the [`TaskBoard`].
pub const AUDIT_CHECKPOINT_TASK: &str = "audit-checkpoint";
/// Run-state monitoring's tasks (R3.8): the alarm evaluator, the bank's health probe, the alarm
/// webhook's deliveries, the periodic audit verification.
pub const MONITOR_EVALUATOR_TASK: &str = "monitor-evaluator";
pub const BANK_PROBE_TASK: &str = "bank-probe";
pub const ALARM_WEBHOOK_TASK: &str = "alarm-webhook";
pub const AUDIT_VERIFICATION_TASK: &str = "audit-verification";
/// Running as one of N instances (PostgreSQL): calls and events between instances, the lease.
pub const CLUSTER_TASK: &str = "cluster";
/// Holding the cluster's leadership when it is free (the once-per-cluster jobs run there).
pub const CLUSTER_LEADER_TASK: &str = "cluster-leader";

/// How long shutdown waits for the background tasks to stop before it aborts them.
pub const TASK_STOP_DEADLINE: Duration = Duration::from_secs(10);

/// The server, bound and ready: `build` then `run_until`.
#[derive(Debug)]
pub struct Application {
    listener: tokio::net::TcpListener,
    state: AppState,
    /// The demo's in-process sandbox bank (`demo_bank`), stopped with the server.
    demo_bank: Option<crate::state::DemoBank>,
    /// The alarm webhook's deliveries, run as a task by `run_until` (when a webhook is configured).
    webhook_deliveries: Option<crate::monitor::webhook::Deliveries>,
}

impl Application {
    /// Connect and migrate the database, load the secrets and pages, bind the listener (port 0
    /// picks a free port).
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        Application::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`Application::build`] with the clock every time decision reads (a
    /// [`crate::clock::ManualClock`] in tests).
    pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Application> {
        let store = Store::connect(&config.database_url).await?;
        store.migrate().await?;
        Application::build_with(config, store, clock).await
    }

    /// [`Application::build`] over a store connected (and migrated) already.
    pub async fn build_with_store(config: Config, store: Store) -> anyhow::Result<Application> {
        Application::build_with(config, store, Arc::new(SystemClock)).await
    }

    /// [`Application::build_with_store`] with the server's clock.
    pub async fn build_with(mut config: Config, store: Store, clock: Arc<dyn Clock>) -> anyhow::Result<Application> {
        let demo_bank = match config.demo_bank {
            true => Some(crate::state::DemoBank::new(start_demo_bank(&mut config).await?)),
            false => None,
        };
        let secrets = Arc::new(Secrets::load_or_create(&config.data_dir)?);
        // SQLite serves one instance: a second one on the same file is refused here.
        let instance_lock = match store.dialect() {
            crate::store::Dialect::Sqlite => crate::store::sqlite_instance_lock(&config.database_url)?,
            crate::store::Dialect::Postgres => None,
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let bound = listener.local_addr()?;
        let cluster = match store.dialect() {
            crate::store::Dialect::Postgres => {
                Some(crate::cluster::Cluster::join(&config.database_url, &bound.to_string(), secrets.cluster_key()).await?)
            }
            crate::store::Dialect::Sqlite => None,
        };
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let hub = Hub::with_metrics(secrets.server_key.clone(), Duration::from_millis(config.command_timeout_ms), clock.clone(), metrics.clone());
        let assets = http::assets::Assets::load(&config.www_dir);
        let login_limiter = LoginLimiter::new(config.login_throttle, config.trusted_proxies.clone());
        let keys = Arc::new(config.key_store()?);
        let throttles = crate::throttle::Throttles::from_config(&config, cluster.clone());
        // Every bank call is timed and counted for monitoring (R3.8).
        let bank_watch = config.bank_gateway()?.map(|gateway| (gateway, Arc::new(crate::monitor::bank::BankWatch::default())));
        let bank = bank_watch.as_ref().map(|(gateway, watch)| {
            let metered = crate::monitor::bank::MeteredBank::new(gateway.clone(), watch.clone(), metrics.clone(), clock.clone());
            Arc::new(metered) as Arc<dyn crate::bank::BankGateway>
        });
        let (webhook, webhook_deliveries) = match (&config.monitoring.webhook_url, &config.monitoring.webhook_key_file) {
            (Some(url), Some(key_file)) => {
                let m = &config.monitoring;
                let webhook = crate::monitor::webhook::WebhookConfig {
                    url: url.clone(),
                    key: crate::monitor::webhook::WebhookKey::load(key_file)?,
                    timeout: Duration::from_millis(m.webhook_timeout_ms),
                    max_attempts: m.webhook_max_attempts,
                    backoff_initial: Duration::from_millis(m.webhook_backoff_initial_ms),
                    backoff_max: Duration::from_millis(m.webhook_backoff_max_ms),
                };
                let (webhook, deliveries) = crate::monitor::webhook::channel(webhook, clock.clone(), metrics.clone())?;
                (Some(webhook), Some(deliveries))
            }
            _ => (None, None),
        };
        let monitor = crate::monitor::Monitor::new(crate::monitor::MonitorParts {
            store: store.clone(),
            hub: hub.clone(),
            cluster: cluster.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
            config: config.monitoring.clone(),
            webhook,
            bank: bank_watch.map(|(_, watch)| watch),
        });
        let router = crate::router::Router::new(hub.clone(), cluster.clone(), Duration::from_millis(config.command_timeout_ms));
        let topups = crate::topup::service::TopUps::new(crate::topup::service::TopUpsConfig {
            store: store.clone(),
            router: router.clone(),
            keys: keys.clone(),
            clock: clock.clone(),
            policy: crate::topup::Policy::default(),
            key_index: config.topup.key_index,
            time_zone: config.topup.time_zone,
            observer: Some(Arc::new(monitor.clone())),
        });
        let state = AppState::new(Inner {
            demo_bank: demo_bank.clone(),
            topups,
            store,
            hub,
            router,
            cluster,
            draining: tokio_util::sync::CancellationToken::new(),
            instance_lock: std::sync::Mutex::new(instance_lock),
            secrets,
            keys,
            public_base: config.public_base(bound),
            origins: crate::state::AllowedOrigins::new(config.origins(bound)),
            config,
            login_limiter,
            assets,
            read_timings: Default::default(),
            read_profiles: Default::default(),
            throttles,
            bank,
            sms: Arc::new(crate::binding::OutboxSms),
            clock,
            tasks: TaskBoard::default(),
            monitor,
            metrics,
        });
        Ok(Application { listener, state, demo_bank, webhook_deliveries })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// The background tasks and how they fare (also `state().tasks`, which outlives `run_until`).
    pub fn task_status(&self) -> Vec<TaskStatus> {
        self.state.tasks.statuses()
    }

    /// Serve and run the background tasks until `shutdown` completes, then stop everything (see
    /// the module documentation). Returns the server's error, if it had one.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let state = self.state;
        let demo_bank = self.demo_bank;
        let mut supervisor = Supervisor::new(state.tasks.clone());
        if let Some(cluster) = &state.cluster {
            let (listening, leading, cluster_state) = (cluster.clone(), cluster.clone(), state.clone());
            supervisor.spawn(CLUSTER_TASK, RestartPolicy::default(), move |stop| listening.clone().run(cluster_state.clone(), stop))?;
            supervisor.spawn(CLUSTER_LEADER_TASK, RestartPolicy::default(), move |stop| leading.clone().lead(stop))?;
        }
        let leader = state.cluster.as_ref().map(|c| c.leader());
        let checkpointer = Checkpointer::new(
            state.store.clone(),
            state.secrets.clone(),
            state.clock.clone(),
            Duration::from_secs(state.config.audit_checkpoint_interval_s),
        );
        if !checkpointer.interval().is_zero() {
            let periodic = checkpointer.clone();
            let monitor = state.monitor.clone();
            let leader = leader.clone();
            supervisor.spawn(AUDIT_CHECKPOINT_TASK, RestartPolicy::default(), move |stop| {
                let (periodic, monitor) = (periodic.clone(), monitor.clone());
                while_leader(leader.clone(), stop, move |stop| {
                    let (periodic, monitor) = (periodic.clone(), monitor.clone());
                    async move {
                        let run = periodic.run(stop).await;
                        if let Err(e) = &run {
                            crate::monitor::evaluator::checkpoint_failed(&monitor, e).await;
                        }
                        run
                    }
                })
            })?;
        }
        spawn_monitoring(&mut supervisor, &state, self.webhook_deliveries, leader.clone())?;

        match (&state.bank, &state.config.bank_settlement_account) {
            (Some(bank), Some(account)) => {
                let worker = crate::topup::worker::BankWorker {
                    store: state.store.clone(),
                    bank: bank.clone(),
                    policy: crate::topup::Policy::default(),
                    settlement_account: account.clone(),
                    currency: "CNY".into(),
                    clock: state.clock.clone(),
                    topups: Some(state.topups.clone()),
                };
                let interval = Duration::from_millis(state.config.topup_worker_interval_ms.max(100));
                // One worker across instances: two never drive the same top-up.
                let leader = leader.clone();
                supervisor.spawn(TOPUP_BANK_WORKER_TASK, RestartPolicy::default(), move |stop| {
                    let worker = worker.clone();
                    while_leader(leader.clone(), stop, move |stop| {
                        let worker = worker.clone();
                        async move { worker.run(interval, stop).await }
                    })
                })?;
            }
            (Some(_), None) => tracing::warn!("a bank gateway without bank_settlement_account: the top-up worker does not run"),
            _ => {}
        }

        if state.bank.is_some() && state.config.settlement.scheduled {
            let settler = crate::settlement::Settler::from_state(&state);
            let interval = Duration::from_millis(state.config.settlement.check_interval_ms);
            let leader = leader.clone();
            supervisor.spawn(SETTLEMENT_TASK, RestartPolicy::default(), move |stop| {
                let settler = settler.clone();
                while_leader(leader.clone(), stop, move |stop| {
                    let settler = settler.clone();
                    async move { settler.run(interval, stop).await }
                })
            })?;
        }

        use axum::serve::ListenerExt;
        // Agent commands and page frames are small and latency-bound: no Nagle delay.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "setting TCP_NODELAY");
            }
        });
        let stop = supervisor.stop_token();
        let draining = state.draining.clone();
        let signal = async move {
            shutdown.await;
            // Stop accepting (axum), tell every connected agent and page to reconnect elsewhere
            // (close 1012), and wind the background tasks down.
            draining.cancel();
            stop.cancel();
        };
        let app = http::router(state.clone());
        let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(signal)
            .await
            .context("serving");
        state.draining.cancel();
        supervisor.shutdown(TASK_STOP_DEADLINE).await;
        if let Some(cluster) = &state.cluster {
            cluster.leave().await;
        }
        // The head at shutdown is signed too, so that no event of this run goes unanchored.
        checkpointer.finish().await;
        state.store.close().await;
        // The database file is free for another instance now.
        drop(state.instance_lock.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(bank) = demo_bank {
            if let Err(e) = bank.set_running(false).await {
                tracing::warn!(error = %crate::util::ErrorChain(&*e), "stopping the demo bank");
            }
        }
        served
    }
}

/// Run `job` while this instance leads the cluster (always, with one instance): started when
/// leadership comes, its token cancelled when it goes, until `stop`.
async fn while_leader<F, Fut>(leader: Option<tokio::sync::watch::Receiver<bool>>, stop: tokio_util::sync::CancellationToken, job: F) -> anyhow::Result<()>
where
    F: Fn(tokio_util::sync::CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let Some(mut leader) = leader else { return job(stop).await };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            led = async { leader.wait_for(|l| *l).await.map(|_| ()) } => led.context("the cluster's leadership ended")?,
        }
        let lost = stop.child_token();
        let run = job(lost.clone());
        tokio::pin!(run);
        tokio::select! {
            result = &mut run => return result,
            _ = async { leader.wait_for(|l| !*l).await.map(|_| ()) } => {
                lost.cancel();
                run.await?;
            }
        }
    }
}

/// Run-state monitoring's supervised tasks: the evaluator, the bank probe (with a bank), the
/// webhook's deliveries (with a webhook), the audit verification (unless its interval is 0).
fn spawn_monitoring(
    supervisor: &mut Supervisor,
    state: &AppState,
    webhook: Option<crate::monitor::webhook::Deliveries>,
    leader: Option<tokio::sync::watch::Receiver<bool>>,
) -> anyhow::Result<()> {
    let config = &state.config.monitoring;
    let (monitor, tasks) = (state.monitor.clone(), state.tasks.clone());
    // One judge of the alarms across instances (the leader), with the whole cluster's terminals.
    let evaluator_leader = leader.clone();
    supervisor.spawn(MONITOR_EVALUATOR_TASK, RestartPolicy::default(), move |stop| {
        let (monitor, tasks) = (monitor.clone(), tasks.clone());
        while_leader(evaluator_leader.clone(), stop, move |stop| crate::monitor::evaluator::run(monitor.clone(), tasks.clone(), stop))
    })?;
    if let Some(bank) = &state.bank {
        let (monitor, bank) = (state.monitor.clone(), bank.clone());
        let (interval, deadline) = (Duration::from_millis(config.bank_probe_interval_ms), Duration::from_millis(config.bank_probe_timeout_ms));
        supervisor.spawn(BANK_PROBE_TASK, RestartPolicy::default(), move |stop| {
            crate::monitor::bank::run_probe(monitor.clone(), bank.clone(), interval, deadline, stop)
        })?;
    }
    if let Some(deliveries) = webhook {
        supervisor.spawn(ALARM_WEBHOOK_TASK, RestartPolicy::default(), move |stop| {
            let deliveries = deliveries.clone();
            async move { deliveries.run(stop).await }
        })?;
    }
    if config.audit_verify_interval_s > 0 {
        let (monitor, secrets) = (state.monitor.clone(), state.secrets.clone());
        let interval = Duration::from_secs(config.audit_verify_interval_s);
        supervisor.spawn(AUDIT_VERIFICATION_TASK, RestartPolicy::default(), move |stop| {
            let (monitor, secrets) = (monitor.clone(), secrets.clone());
            while_leader(leader.clone(), stop, move |stop| {
                crate::monitor::evaluator::run_audit_verification(monitor.clone(), secrets.clone(), interval, stop)
            })
        })?;
    }
    Ok(())
}

/// The demo's bank: the sandbox bank with its demo accounts, in this process, on a free local
/// port, with its own SQLite file in the data directory and a key made for this run; `config` is
/// pointed at it (URL, key file, settlement account).
async fn start_demo_bank(config: &mut Config) -> anyhow::Result<cardbridge_sandbox_bank::SandboxBank> {
    use std::os::unix::fs::OpenOptionsExt;
    let key = protocol::bank::signing::BankKey::generate("demo-bank");
    let url = format!("sqlite://{}", config.data_dir.join("demo-bank.db").display());
    let sandbox = cardbridge_sandbox_bank::SandboxConfig::new("127.0.0.1:0".parse()?, url, key.clone()).with_demo_accounts();
    let bank = cardbridge_sandbox_bank::SandboxBank::spawn(sandbox).await.context("starting the demo bank")?;
    let key_file = config.data_dir.join("demo-bank.key");
    let _ = std::fs::remove_file(&key_file);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&key_file).context("writing the demo bank key")?;
    std::io::Write::write_all(&mut file, key.to_file().as_bytes())?;
    config.bank_url = Some(bank.base_url());
    config.bank_key_file = Some(key_file);
    config.bank_settlement_account = Some(cardbridge_sandbox_bank::DEMO_SETTLEMENT_ACCOUNT.into());
    tracing::warn!(url = %bank.base_url(), "demo mode: the sandbox bank runs inside the server");
    Ok(bank)
}
