//! Running as one of N instances on PostgreSQL: this instance's lease, which instance holds which
//! terminal's agent (presence), calls to the instance that holds an agent and their answers, the
//! events every instance hears, and the one leader that runs the once-per-cluster jobs.
//!
//! All of it is PostgreSQL's own machinery — `LISTEN/NOTIFY`, a session advisory lock — kept in
//! this one module (sqlx's `AnyPool` has no listener): the rest of the server sees
//! [`crate::router::Router`], which goes to the local hub or through here. With SQLite there is no
//! cluster: one instance, and the server refuses to start a second on the same database file.
//!
//! - **Lease.** Each instance renews its `cluster_instance.lease_until` every [`HEARTBEAT`]; one
//!   whose lease ([`LEASE`]) ran out is gone: any instance deletes it and its presence rows, and
//!   every instance fails its calls to it and frees the card claims it held.
//! - **Calls.** A call (and its answer) is a row of `cluster_message`, sealed with ChaCha20-Poly1305
//!   under a key every instance derives from the shared PAN key (answers to commands hold the
//!   card's APDU answers); the notification on the recipient's channel carries only the row id;
//!   the recipient deletes the row as it reads it. Rows nobody read (a notification lost while a
//!   listener reconnected) are swept after a minute; their caller has timed out by then.
//! - **Events.** [`protocol::cluster::EventKind`] on one channel every instance listens to: ids
//!   only, never card data.
//! - **Leader.** The instance whose dedicated connection holds the advisory lock runs the jobs
//!   that must run once across instances (the top-up bank worker, the daily settlement, alarm
//!   evaluation, audit checkpoints). The lock goes with the connection: a dead leader's lock is
//!   free at once, and another instance takes over within a heartbeat.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use protocol::cluster::{Answer, Body, Call, Event, EventKind, Message, CLUSTER_VERSION};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// An instance whose lease is older than this is gone.
pub const LEASE: Duration = Duration::from_secs(6);
/// How often an instance renews its lease (and sweeps the gone ones).
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// The channel every instance listens to for events.
const EVENTS_CHANNEL: &str = "cardbridge_events";
/// The leader's advisory lock ("cardbrdg").
const LEADER_LOCK: i64 = 0x6361_7264_6272_6467;
/// Messages nobody read are deleted after this long.
const MESSAGE_TTL_MS: i64 = 60_000;
/// The database's clock in unix milliseconds: leases compare times of different machines.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Why a call to another instance gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the instance holding the agent did not answer in time")]
    Timeout,
    #[error("the instance holding the agent is gone")]
    InstanceGone,
    #[error("a message between instances could not be sent")]
    Database(#[from] sqlx::Error),
}

/// This instance's membership of the cluster (cheap to clone).
#[derive(Clone)]
pub struct Cluster(Arc<Inner>);

struct Inner {
    id: String,
    url: String,
    listen: String,
    pool: PgPool,
    cipher: ChaCha20Poly1305,
    next_call: AtomicU64,
    calls: Mutex<HashMap<u64, PendingCall>>,
    leader: watch::Sender<bool>,
}

struct PendingCall {
    target: String,
    tx: oneshot::Sender<Answer>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("instance_id", &self.0.id).finish_non_exhaustive()
    }
}

/// The notification channel of one instance.
fn channel(instance_id: &str) -> String {
    format!("cardbridge_{instance_id}")
}

impl Cluster {
    /// Join the cluster on the PostgreSQL database at `url`: a fresh instance id, its lease
    /// recorded. `listen` is where this instance serves (shown to operators).
    pub async fn join(url: &str, listen: &str, key: [u8; 32]) -> anyhow::Result<Cluster> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(url)
            .await
            .context("connecting to PostgreSQL for the cluster")?;
        let id = {
            use rand::RngCore;
            let mut raw = [0u8; 8];
            rand::rngs::OsRng.fill_bytes(&mut raw);
            format!("i{}", hex::encode(raw))
        };
        let cluster = Cluster(Arc::new(Inner {
            id,
            url: url.to_string(),
            listen: listen.to_string(),
            pool,
            cipher: ChaCha20Poly1305::new(&key.into()),
            next_call: AtomicU64::new(1),
            calls: Mutex::new(HashMap::new()),
            leader: watch::channel(false).0,
        }));
        cluster.register().await.context("recording this instance's lease")?;
        tracing::info!(instance_id = %cluster.0.id, "joined the cluster");
        Ok(cluster)
    }

    async fn register(&self) -> Result<(), sqlx::Error> {
        let sql = format!(
            "insert into cluster_instance (instance_id, started_at, lease_until, listen) values ($1, {NOW_MS}, {NOW_MS} + $2, $3) \
             on conflict (instance_id) do update set lease_until = excluded.lease_until"
        );
        sqlx::query(&sql).bind(&self.0.id).bind(LEASE.as_millis() as i64).bind(&self.0.listen).execute(&self.0.pool).await?;
        Ok(())
    }

    pub fn instance_id(&self) -> &str {
        &self.0.id
    }

    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<u64, PendingCall>> {
        self.0.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- presence ----

    /// The live instance holding `terminal_id`'s agent, if any (this one included).
    pub async fn holder(&self, terminal_id: &str) -> Result<Option<String>, sqlx::Error> {
        let sql = format!(
            "select p.instance_id from agent_presence p join cluster_instance i on i.instance_id = p.instance_id \
             where p.terminal_id = $1 and i.lease_until > {NOW_MS}"
        );
        let row: Option<(String,)> = sqlx::query_as(&sql).bind(terminal_id).fetch_optional(&self.0.pool).await?;
        Ok(row.map(|(id,)| id))
    }

    /// This instance now holds `terminal_id`'s agent.
    pub async fn claim_presence(&self, terminal_id: &str) -> Result<(), sqlx::Error> {
        let sql = format!(
            "insert into agent_presence (terminal_id, instance_id, connected_at) values ($1, $2, {NOW_MS}) \
             on conflict (terminal_id) do update set instance_id = excluded.instance_id, connected_at = excluded.connected_at"
        );
        sqlx::query(&sql).bind(terminal_id).bind(&self.0.id).execute(&self.0.pool).await?;
        Ok(())
    }

    /// This instance no longer holds `terminal_id`'s agent (a row another instance took over
    /// stays).
    pub async fn release_presence(&self, terminal_id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("delete from agent_presence where terminal_id = $1 and instance_id = $2")
            .bind(terminal_id)
            .bind(&self.0.id)
            .execute(&self.0.pool)
            .await?;
        Ok(())
    }

    /// Terminals whose agents are connected to a live instance, and which instance.
    pub async fn online(&self) -> Result<Vec<(String, String)>, sqlx::Error> {
        let sql = format!(
            "select p.terminal_id, p.instance_id from agent_presence p join cluster_instance i on i.instance_id = p.instance_id \
             where i.lease_until > {NOW_MS}"
        );
        sqlx::query_as(&sql).fetch_all(&self.0.pool).await
    }

    /// Live instances (id, where it listens), this one included.
    pub async fn instances(&self) -> Result<Vec<(String, String)>, sqlx::Error> {
        let sql = format!("select instance_id, listen from cluster_instance where lease_until > {NOW_MS} order by started_at");
        sqlx::query_as(&sql).fetch_all(&self.0.pool).await
    }

    // ---- calls ----

    /// Ask `target` to do `call` and wait at most `timeout` for its answer.
    pub async fn call(&self, target: &str, call: Call, timeout: Duration) -> Result<Answer, CallError> {
        let call_id = self.0.next_call.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.calls().insert(call_id, PendingCall { target: target.to_string(), tx });
        // However this ends, the call stops waiting.
        struct Forget<'a>(&'a Cluster, u64);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0.calls().remove(&self.1);
            }
        }
        let _forget = Forget(self, call_id);
        let message = Message { v: CLUSTER_VERSION, from: self.0.id.clone(), call_id, body: Body::Call { call } };
        self.send(target, &message).await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(CallError::InstanceGone),
            Err(_) => Err(CallError::Timeout),
        }
    }

    /// Send `body` to `target` without waiting for an answer (a page's frame).
    pub async fn tell(&self, target: &str, body: Body) -> Result<(), sqlx::Error> {
        self.send(target, &Message { v: CLUSTER_VERSION, from: self.0.id.clone(), call_id: 0, body }).await
    }

    /// Seal `message` for `target`, store it, and notify `target` of its row id, in one statement.
    async fn send(&self, target: &str, message: &Message) -> Result<(), sqlx::Error> {
        let sealed = self.seal(target, protocol::encode(message).as_bytes());
        let sql = format!(
            "with m as (insert into cluster_message (recipient, body, created_at) values ($1, $2, {NOW_MS}) returning message_id) \
             select pg_notify($3, m.message_id::text) from m"
        );
        sqlx::query(&sql).bind(target).bind(sealed).bind(channel(target)).execute(&self.0.pool).await?;
        Ok(())
    }

    /// Nonce, then ChaCha20-Poly1305 of `plain` with the recipient's id as associated data (a row
    /// moved to another recipient does not open).
    fn seal(&self, recipient: &str, plain: &[u8]) -> Vec<u8> {
        use rand::RngCore;
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .0
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad: recipient.as_bytes() })
            .expect("ChaCha20-Poly1305 seals any message under 256 GiB");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < 12 {
            return None;
        }
        let (nonce, body) = sealed.split_at(12);
        self.0.cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad: self.0.id.as_bytes() }).ok()
    }

    // ---- events ----

    /// Tell every other instance.
    pub async fn announce(&self, what: EventKind) -> Result<(), sqlx::Error> {
        let event = Event { v: CLUSTER_VERSION, from: self.0.id.clone(), what };
        sqlx::query("select pg_notify($1, $2)").bind(EVENTS_CHANNEL).bind(protocol::encode(&event)).execute(&self.0.pool).await?;
        Ok(())
    }

    // ---- shared rate limits ----

    /// Count an event for every key at `now_ms`, or, if any key already has `max` events in the
    /// window, count nothing and say how long until its oldest leaves it (the rule of
    /// [`crate::throttle::Throttle::check`], kept in `rate_event` for every instance). Decisions on
    /// the same keys are taken one at a time (transaction-scoped advisory locks, in key order).
    pub async fn rate_check(&self, keys: &[String], max: usize, window_ms: i64, now_ms: i64) -> Result<Result<(), Duration>, sqlx::Error> {
        let mut sorted = keys.to_vec();
        sorted.sort();
        let mut tx = self.0.pool.begin().await?;
        sqlx::query("select pg_advisory_xact_lock(h) from (select hashtext(k) as h from unnest($1::text[]) as k order by k) as locks")
            .bind(&sorted)
            .execute(&mut *tx)
            .await?;
        let window_start = now_ms - window_ms;
        sqlx::query("delete from rate_event where key = any($1) and at <= $2").bind(&sorted).bind(window_start).execute(&mut *tx).await?;
        let counts: Vec<(String, i64, i64)> =
            sqlx::query_as("select key, count(*), min(at) from rate_event where key = any($1) and at > $2 group by key")
                .bind(&sorted)
                .bind(window_start)
                .fetch_all(&mut *tx)
                .await?;
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let wait = counts.iter().filter(|(_, n, _)| *n >= max).map(|(_, _, oldest)| oldest + window_ms - now_ms).max();
        if let Some(wait) = wait {
            tx.rollback().await?;
            return Ok(Err(Duration::from_millis(wait.max(1) as u64)));
        }
        sqlx::query("insert into rate_event (key, at) select k, $2 from unnest($1::text[]) as k").bind(&sorted).bind(now_ms).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    // ---- leader ----

    /// Whether this instance runs the once-per-cluster jobs now (and changes to it).
    pub fn leader(&self) -> watch::Receiver<bool> {
        self.0.leader.subscribe()
    }

    /// Hold the leader's lock whenever it is free, until `stop`.
    pub async fn lead(self, stop: CancellationToken) -> anyhow::Result<()> {
        loop {
            let held = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                held = self.hold_lock(&stop) => held,
            };
            self.0.leader.send_replace(false);
            if let Err(e) = held {
                tracing::warn!(error = %crate::util::ErrorChain(&*e), "the leader's connection failed; trying again");
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(HEARTBEAT) => {}
            }
        }
    }

    /// Try for the lock every heartbeat; once held, check the connection every heartbeat (the
    /// lock is held as long as it lives). Returns when the connection fails or on `stop`.
    async fn hold_lock(&self, stop: &CancellationToken) -> anyhow::Result<()> {
        let mut conn = PgConnection::connect(&self.0.url).await?;
        loop {
            let (got,): (bool,) = sqlx::query_as("select pg_try_advisory_lock($1)").bind(LEADER_LOCK).fetch_one(&mut conn).await?;
            if got {
                tracing::info!(instance_id = %self.0.id, "this instance leads the cluster's jobs");
                self.0.leader.send_replace(true);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => {
                            let _ = conn.close().await;
                            return Ok(());
                        }
                        _ = tokio::time::sleep(HEARTBEAT) => {}
                    }
                    sqlx::query("select 1").execute(&mut conn).await?;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(HEARTBEAT) => {}
            }
        }
    }

    // ---- the instance's life ----

    /// Listen for calls and events, renew the lease and sweep gone instances, until `stop`.
    pub async fn run(self, state: AppState, stop: CancellationToken) -> anyhow::Result<()> {
        let mut listener = PgListener::connect_with(&self.0.pool).await.context("starting the cluster's listener")?;
        let own = channel(&self.0.id);
        listener.listen_all([own.as_str(), EVENTS_CHANNEL]).await.context("listening for the cluster")?;
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = beat.tick() => {
                    if let Err(e) = self.heartbeat(&state).await {
                        tracing::error!(error = %crate::util::ErrorChain(&e), "renewing this instance's lease");
                    }
                }
                note = listener.recv() => {
                    let note = note.context("the cluster's listener failed")?;
                    if note.channel() == EVENTS_CHANNEL {
                        self.on_event(&state, note.payload());
                    } else if let Ok(message_id) = note.payload().parse::<i64>() {
                        // Read in the order they were sent (a page's frames stay in order); only
                        // serving a call runs beside the loop.
                        self.on_message(&state, message_id).await;
                    }
                }
            }
        }
    }

    fn on_event(&self, state: &AppState, payload: &str) {
        match protocol::decode::<Event>(payload) {
            Ok(event) if event.v != CLUSTER_VERSION => tracing::warn!(v = event.v, "cluster event of another version dropped"),
            Ok(event) if event.from == self.0.id => {}
            Ok(event) => {
                let state = state.clone();
                tokio::spawn(async move { crate::router::on_event(&state, event.what).await });
            }
            Err(e) => tracing::warn!(error = %e, "malformed cluster event dropped"),
        }
    }

    async fn on_message(&self, state: &AppState, message_id: i64) {
        let row: Result<Option<(Vec<u8>,)>, _> =
            sqlx::query_as("delete from cluster_message where message_id = $1 and recipient = $2 returning body")
                .bind(message_id)
                .bind(&self.0.id)
                .fetch_optional(&self.0.pool)
                .await;
        let sealed = match row {
            Ok(Some((body,))) => body,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %crate::util::ErrorChain(&e), "reading a message from another instance");
                return;
            }
        };
        let Some(plain) = self.open(&sealed) else {
            tracing::warn!(message_id, "a message between instances did not open (another key?); dropped");
            return;
        };
        let message = match std::str::from_utf8(&plain).map_err(|e| e.to_string()).and_then(|t| protocol::decode::<Message>(t).map_err(|e| e.to_string())) {
            Ok(m) if m.v == CLUSTER_VERSION => m,
            Ok(m) => return tracing::warn!(v = m.v, "cluster message of another version dropped"),
            Err(e) => return tracing::warn!(error = %e, "malformed cluster message dropped"),
        };
        match message.body {
            Body::Call { call } => {
                let (cluster, state) = (self.clone(), state.clone());
                tokio::spawn(async move {
                    let answer = crate::router::serve_call(&state, call, &message.from).await;
                    let reply = Message { v: CLUSTER_VERSION, from: cluster.0.id.clone(), call_id: message.call_id, body: Body::Answer { answer } };
                    if let Err(e) = cluster.send(&message.from, &reply).await {
                        tracing::error!(error = %crate::util::ErrorChain(&e), "answering another instance");
                    }
                });
            }
            Body::Answer { answer } => {
                if let Some(pending) = self.calls().remove(&message.call_id) {
                    let _ = pending.tx.send(answer);
                }
            }
            Body::PageFrame { page_id, disarm, frame } => crate::router::on_page_frame(state, page_id, disarm, frame),
        }
    }

    /// Renew this instance's lease (re-joining if another instance declared it gone), sweep gone
    /// instances and stale messages.
    async fn heartbeat(&self, state: &AppState) -> Result<(), sqlx::Error> {
        let sql = format!("update cluster_instance set lease_until = {NOW_MS} + $2 where instance_id = $1");
        let renewed = sqlx::query(&sql).bind(&self.0.id).bind(LEASE.as_millis() as i64).execute(&self.0.pool).await?;
        if renewed.rows_affected() == 0 {
            tracing::warn!(instance_id = %self.0.id, "this instance's lease had run out; joining again");
            self.register().await?;
            for terminal_id in state.hub.online_terminals() {
                self.claim_presence(&terminal_id).await?;
            }
        }
        let sql = format!("delete from cluster_instance where lease_until < {NOW_MS} returning instance_id");
        let gone: Vec<(String,)> = sqlx::query_as(&sql).fetch_all(&self.0.pool).await?;
        sqlx::query("delete from agent_presence p where not exists (select 1 from cluster_instance i where i.instance_id = p.instance_id)")
            .execute(&self.0.pool)
            .await?;
        let sql = format!("delete from cluster_message where created_at < {NOW_MS} - $1");
        sqlx::query(&sql).bind(MESSAGE_TTL_MS).execute(&self.0.pool).await?;
        // Calls to an instance that is not live any more fail now rather than at their timeout,
        // and the card claims of instances that died with a read in flight are freed.
        let live: std::collections::HashSet<String> = self.instances().await?.into_iter().map(|(id, _)| id).collect();
        let dead: Vec<String> = {
            let mut calls = self.calls();
            let dead: Vec<u64> = calls.iter().filter(|(_, c)| !live.contains(&c.target)).map(|(id, _)| *id).collect();
            dead.iter().filter_map(|id| calls.remove(id)).map(|c| c.target).collect()
        };
        for (id,) in &gone {
            tracing::warn!(instance_id = %id, "instance gone (lease ran out): its agents reconnect elsewhere");
        }
        if !gone.is_empty() || !dead.is_empty() {
            state.hub.release_claims_except(&live);
        }
        Ok(())
    }

    /// Leave the cluster (graceful shutdown): this instance's presence rows and lease go, so
    /// calls go elsewhere as soon as the agents reconnect.
    pub async fn leave(&self) {
        let result = async {
            sqlx::query("delete from agent_presence where instance_id = $1").bind(&self.0.id).execute(&self.0.pool).await?;
            sqlx::query("delete from cluster_instance where instance_id = $1").bind(&self.0.id).execute(&self.0.pool).await?;
            Ok::<_, sqlx::Error>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %crate::util::ErrorChain(&e), "leaving the cluster");
        }
        self.0.pool.close().await;
    }
}
