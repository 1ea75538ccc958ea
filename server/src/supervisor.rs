//! Supervised background work: named tasks, each in its own tokio task, restarted with capped
//! backoff when they panic or fail, given up on (and reported) when they keep failing, and stopped
//! together at shutdown.
//!
//! A task is a function from a [`CancellationToken`] to a future of `anyhow::Result<()>`: the
//! supervisor calls it again for every restart. The task returns `Ok` when the token is cancelled
//! (or when its work is done for good); an `Err` or a panic is a failure. Failures in a row are
//! counted; a run that lasted [`RestartPolicy::healthy_after`] starts the count over. After
//! [`RestartPolicy::max_failures`] in a row the task is [`TaskState::Failed`]: logged with
//! `tracing::error!`, visible on the [`TaskBoard`] (`AppState::tasks`), never restarted.
//!
//! The board is a `tokio::sync::watch` channel: readers take a snapshot (the channel's lock is held
//! only to clone it, never across `.await`) or wait for a change without polling.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::util::ErrorChain;

/// When and how often a failed task is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// The wait before the first restart; it doubles with every failure in a row.
    pub first_backoff: Duration,
    /// The longest wait between restarts.
    pub max_backoff: Duration,
    /// Failures in a row after which the task is given up on (at least 1).
    pub max_failures: u32,
    /// A run that lasted this long before it failed was healthy: the failure count and the
    /// backoff start over.
    pub healthy_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_failures: 5,
            healthy_after: Duration::from_secs(600),
        }
    }
}

impl RestartPolicy {
    /// The wait after `failures` failures in a row (1 for the first): `first_backoff` doubled
    /// `failures - 1` times, at most `max_backoff`.
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first_backoff.saturating_mul(1u32 << doublings).min(self.max_backoff)
    }
}

/// Where a supervised task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Running,
    /// It failed and waits out its backoff before the next start.
    Restarting,
    /// It returned `Ok` on its own: done for good, not restarted.
    Finished,
    /// Stopped by the shutdown signal.
    Stopped,
    /// It failed [`RestartPolicy::max_failures`] times in a row: given up on, not restarted.
    Failed,
}

/// One supervised task as the board shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStatus {
    pub name: &'static str,
    pub state: TaskState,
    /// Times it was started again since the server started.
    pub restarts: u32,
    /// Failures since its last healthy run.
    pub failures_in_a_row: u32,
    /// Its latest failure, with the cause chain (or the panic message).
    pub last_error: Option<String>,
}

/// The status of every supervised task, in the order they were started. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TaskBoard {
    statuses: Arc<watch::Sender<Vec<TaskStatus>>>,
}

impl Default for TaskBoard {
    fn default() -> Self {
        TaskBoard { statuses: Arc::new(watch::Sender::new(Vec::new())) }
    }
}

impl TaskBoard {
    /// A snapshot of every task's status.
    pub fn statuses(&self) -> Vec<TaskStatus> {
        self.statuses.borrow().clone()
    }

    /// A snapshot of the task called `name`, if there is one.
    pub fn status(&self, name: &str) -> Option<TaskStatus> {
        self.statuses.borrow().iter().find(|s| s.name == name).cloned()
    }

    /// Wait until `condition` holds for the statuses, and return them. Returns at once if it holds
    /// already.
    pub async fn wait_for(&self, mut condition: impl FnMut(&[TaskStatus]) -> bool) -> Vec<TaskStatus> {
        let mut changes = self.statuses.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let statuses = match changes.wait_for(|statuses| condition(statuses)).await {
            Ok(statuses) => statuses.clone(),
            Err(_) => self.statuses(),
        };
        statuses
    }

    fn add(&self, name: &'static str) -> bool {
        let mut added = false;
        self.statuses.send_if_modified(|statuses| {
            if statuses.iter().any(|s| s.name == name) {
                return false;
            }
            statuses.push(TaskStatus { name, state: TaskState::Running, restarts: 0, failures_in_a_row: 0, last_error: None });
            added = true;
            true
        });
        added
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut TaskStatus)) {
        self.statuses.send_modify(|statuses| {
            if let Some(status) = statuses.iter_mut().find(|s| s.name == name) {
                change(status);
            }
        });
    }
}

/// Starts supervised tasks and stops them all at shutdown. Dropping it without
/// [`Supervisor::shutdown`] still signals every task to stop.
#[derive(Debug)]
pub struct Supervisor {
    board: TaskBoard,
    stop: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Supervisor {
    /// A supervisor reporting on `board`.
    pub fn new(board: TaskBoard) -> Supervisor {
        Supervisor { board, stop: CancellationToken::new(), tasks: Vec::new() }
    }

    /// The stop signal every task receives; cancelling it starts the shutdown of all of them.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Start `task` under `name` (unique per supervisor), restarting it under `policy`.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, policy: RestartPolicy, task: F) -> anyhow::Result<()>
    where
        F: Fn(CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        anyhow::ensure!(policy.max_failures >= 1, "the restart policy of task {name} allows no failure at all");
        anyhow::ensure!(self.board.add(name), "a background task named {name} runs already");
        let handle = tokio::spawn(supervise(name, policy, task, self.stop.clone(), self.board.clone()));
        self.tasks.push((name, handle));
        Ok(())
    }

    /// Signal every task to stop and wait for them, at most `deadline` in all; a task still
    /// running then is aborted (and reported).
    pub async fn shutdown(mut self, deadline: Duration) {
        self.stop.cancel();
        let until = Instant::now() + deadline;
        for (name, mut handle) in std::mem::take(&mut self.tasks) {
            match tokio::time::timeout_at(until, &mut handle).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(task = name, error = %ErrorChain(&e), "the supervision of a background task ended abnormally"),
                Err(_) => {
                    // Aborting the supervising task drops its JoinSet, which aborts the run itself.
                    handle.abort();
                    let _ = handle.await;
                    tracing::error!(task = name, deadline_ms = deadline.as_millis() as u64, "a background task did not stop in time; aborted");
                    self.board.update(name, |s| {
                        s.state = TaskState::Stopped;
                        s.last_error = Some("did not stop within the shutdown deadline; aborted".into());
                    });
                }
            }
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Run `task` until it is stopped, finishes, or is given up on.
async fn supervise<F, Fut>(name: &'static str, policy: RestartPolicy, task: F, stop: CancellationToken, board: TaskBoard)
where
    F: Fn(CancellationToken) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        // Its own tokio task, so that a panic is caught as a JoinError; the JoinSet aborts it if
        // this supervision is aborted.
        let mut run = JoinSet::new();
        run.spawn(task(stop.clone()));
        let Some(outcome) = run.join_next().await else { return };
        let error = match outcome {
            Ok(Ok(())) => {
                let state = if stop.is_cancelled() { TaskState::Stopped } else { TaskState::Finished };
                if state == TaskState::Finished {
                    tracing::info!(task = name, "background task finished");
                }
                board.update(name, |s| s.state = state);
                return;
            }
            Ok(Err(e)) => ErrorChain(e.as_ref()).to_string(),
            Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e.into_panic())),
            Err(e) => ErrorChain(&e).to_string(),
        };
        if stop.is_cancelled() {
            tracing::warn!(task = name, error = %error, "background task failed while stopping");
            board.update(name, |s| {
                s.state = TaskState::Stopped;
                s.last_error = Some(error);
            });
            return;
        }
        if started.elapsed() >= policy.healthy_after {
            failures = 0;
        }
        failures += 1;
        if failures >= policy.max_failures {
            tracing::error!(task = name, failures, error = %error, "background task keeps failing; given up, not restarted");
            board.update(name, |s| {
                s.state = TaskState::Failed;
                s.failures_in_a_row = failures;
                s.last_error = Some(error);
            });
            return;
        }
        let backoff = policy.backoff(failures);
        tracing::error!(task = name, failures, restart_in_ms = backoff.as_millis() as u64, error = %error, "background task failed; restarting");
        board.update(name, |s| {
            s.state = TaskState::Restarting;
            s.failures_in_a_row = failures;
            s.last_error = Some(error);
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => {
                board.update(name, |s| s.state = TaskState::Stopped);
                return;
            }
        }
        board.update(name, |s| {
            s.state = TaskState::Running;
            s.restarts += 1;
        });
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => payload.downcast_ref::<&str>().map_or_else(|| "(no message)".to_string(), |text| (*text).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn policy(max_failures: u32) -> RestartPolicy {
        RestartPolicy {
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(4),
            max_failures,
            healthy_after: Duration::from_secs(60),
        }
    }

    /// Counts the runs of a task.
    fn counter() -> Arc<AtomicU32> {
        Arc::new(AtomicU32::new(0))
    }

    /// The statuses once `condition` holds; fails the test if it does not within a (paused) hour.
    async fn when(board: &TaskBoard, condition: impl FnMut(&[TaskStatus]) -> bool) -> Vec<TaskStatus> {
        tokio::time::timeout(Duration::from_secs(3600), board.wait_for(condition)).await.expect("the statuses reach the condition")
    }

    #[test]
    fn backoff_doubles_and_stops_at_the_cap() {
        let waits: Vec<u64> = (1..=5).map(|n| policy(10).backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 4, 4]);
        assert_eq!(policy(10).backoff(u32::MAX), Duration::from_secs(4));
        assert_eq!(RestartPolicy::default().backoff(1_000), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_is_restarted_and_the_restart_is_counted() {
        let (board, runs) = (TaskBoard::default(), counter());
        let mut supervisor = Supervisor::new(board.clone());
        let counted = runs.clone();
        supervisor
            .spawn("flaky", policy(3), move |stop| {
                let run = counted.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    assert!(run > 1, "the first run dies");
                    stop.cancelled().await;
                    Ok(())
                }
            })
            .unwrap();

        let statuses = when(&board, |s| s[0].restarts == 1 && s[0].state == TaskState::Running).await;

        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(statuses[0].failures_in_a_row, 1);
        let error = statuses[0].last_error.as_deref().unwrap();
        assert!(error.starts_with("panicked: ") && error.contains("the first run dies"), "{error}");
        supervisor.shutdown(Duration::from_secs(1)).await;
        assert_eq!(board.status("flaky").unwrap().state, TaskState::Stopped);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_keeps_failing_is_given_up_on_and_not_restarted() {
        let (board, runs) = (TaskBoard::default(), counter());
        let mut supervisor = Supervisor::new(board.clone());
        let counted = runs.clone();
        supervisor
            .spawn("doomed", policy(3), move |_stop| {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Err(anyhow::anyhow!("disk on fire").context("writing the thing")) }
            })
            .unwrap();
        let started = Instant::now();

        let statuses = when(&board, |s| s[0].state == TaskState::Failed).await;

        assert_eq!(runs.load(Ordering::SeqCst), 3, "three failures in a row, then no more runs");
        assert_eq!((statuses[0].restarts, statuses[0].failures_in_a_row), (2, 3));
        assert_eq!(statuses[0].last_error.as_deref(), Some("writing the thing: disk on fire"), "the whole cause chain");
        assert_eq!(started.elapsed(), Duration::from_secs(1 + 2), "it backed off 1 s, then 2 s");
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "an hour later it still is not restarted");
        supervisor.shutdown(Duration::from_secs(1)).await;
        assert_eq!(board.status("doomed").unwrap().state, TaskState::Failed, "shutdown does not hide the failure");
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_run_starts_the_failure_count_over() {
        let (board, runs) = (TaskBoard::default(), counter());
        let mut supervisor = Supervisor::new(board.clone());
        let counted = runs.clone();
        supervisor
            .spawn("sometimes", policy(2), move |stop| {
                let run = counted.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    match run {
                        // Fails at once, then after a healthy minute, then at once again.
                        1 | 3 => anyhow::bail!("run {run} failed"),
                        2 => {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            anyhow::bail!("run 2 failed late")
                        }
                        _ => {
                            stop.cancelled().await;
                            Ok(())
                        }
                    }
                }
            })
            .unwrap();

        let statuses = when(&board, |s| s[0].state == TaskState::Failed).await;

        assert_eq!(statuses[0].restarts, 2, "the late failure of the healthy run was restarted");
        assert_eq!(runs.load(Ordering::SeqCst), 3, "then two quick failures in a row gave up");
        assert_eq!(statuses[0].last_error.as_deref(), Some("run 3 failed"));
        supervisor.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_every_task_and_aborts_one_that_ignores_the_signal() {
        let board = TaskBoard::default();
        let mut supervisor = Supervisor::new(board.clone());
        supervisor
            .spawn("polite", policy(3), |stop| async move {
                stop.cancelled().await;
                Ok(())
            })
            .unwrap();
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        let dropped_tx = std::sync::Mutex::new(Some(dropped_tx));
        supervisor
            .spawn("stubborn", policy(3), move |_stop| {
                let guard = OnDrop(dropped_tx.lock().unwrap().take());
                async move {
                    let _guard = guard;
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            })
            .unwrap();
        when(&board, |s| s.len() == 2).await;
        let started = Instant::now();

        supervisor.shutdown(Duration::from_secs(5)).await;

        assert_eq!(started.elapsed(), Duration::from_secs(5), "it waited out the deadline, no longer");
        dropped_rx.await.expect("the stubborn run was dropped");
        let statuses = board.statuses();
        assert_eq!(statuses[0].state, TaskState::Stopped);
        assert_eq!(statuses[0].last_error, None);
        assert_eq!(statuses[1].state, TaskState::Stopped);
        assert!(statuses[1].last_error.as_deref().unwrap().contains("aborted"));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_during_a_backoff_stops_without_another_run() {
        let (board, runs) = (TaskBoard::default(), counter());
        let mut supervisor = Supervisor::new(board.clone());
        let counted = runs.clone();
        supervisor
            .spawn("failing", policy(5), move |_stop| {
                counted.fetch_add(1, Ordering::SeqCst);
                async { anyhow::bail!("no") }
            })
            .unwrap();
        when(&board, |s| s[0].state == TaskState::Restarting).await;
        let started = Instant::now();

        supervisor.shutdown(Duration::from_secs(5)).await;

        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(board.status("failing").unwrap().state, TaskState::Stopped);
    }

    #[tokio::test]
    async fn a_task_that_finishes_on_its_own_is_not_restarted() {
        let (board, runs) = (TaskBoard::default(), counter());
        let mut supervisor = Supervisor::new(board.clone());
        let counted = runs.clone();
        supervisor
            .spawn("once", policy(3), move |_stop| {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            })
            .unwrap();

        when(&board, |s| s[0].state == TaskState::Finished).await;

        assert_eq!(runs.load(Ordering::SeqCst), 1);
        supervisor.shutdown(Duration::from_secs(1)).await;
        assert_eq!(board.status("once").unwrap().state, TaskState::Finished);
    }

    #[tokio::test]
    async fn names_are_unique_and_a_policy_must_allow_a_failure() {
        let mut supervisor = Supervisor::new(TaskBoard::default());
        let idle = |stop: CancellationToken| async move {
            stop.cancelled().await;
            Ok(())
        };
        supervisor.spawn("one", policy(1), idle).unwrap();

        let twice = supervisor.spawn("one", policy(1), idle).unwrap_err();
        let none = supervisor.spawn("two", policy(0), idle).unwrap_err();

        assert!(twice.to_string().contains("runs already"), "{twice}");
        assert!(none.to_string().contains("no failure"), "{none}");
        supervisor.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn dropping_the_supervisor_signals_its_tasks() {
        let board = TaskBoard::default();
        let mut supervisor = Supervisor::new(board.clone());
        let stop = supervisor.stop_token();
        supervisor
            .spawn("idle", policy(1), |stop| async move {
                stop.cancelled().await;
                Ok(())
            })
            .unwrap();

        drop(supervisor);

        stop.cancelled().await;
        when(&board, |s| s[0].state == TaskState::Stopped).await;
    }

    /// Sends on its channel when dropped.
    struct OnDrop(Option<tokio::sync::oneshot::Sender<()>>);

    impl Drop for OnDrop {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
        }
    }
}
