//! The server's wall clock, injectable: [`SystemClock`] in production, [`ManualClock`] in tests.
//!
//! Every time decision the server makes from the calendar — is a read id still live, has a
//! throttle's window passed, how long must a login wait, what instant does a checkpoint carry —
//! takes "now" from the [`Clock`] in `AppState`, so a test moves time by hand instead of sleeping.
//!
//! Timers (the checkpoint interval, restart backoff, command timeouts) are not the clock's
//! business: they run on `tokio::time`, which tests stop and move with `tokio::time::pause()` and
//! `tokio::time::advance`. Wall time can jump (NTP, an operator); a timer must not.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Wall-clock time in milliseconds since the unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Milliseconds since the unix epoch.
    fn now_ms(&self) -> i64;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::util::now_ms()
    }
}

/// A clock that stands still until a test moves it. Shared between the test and the server
/// through an `Arc`; an atomic, so reading it takes no lock.
#[derive(Debug)]
pub struct ManualClock {
    now_ms: AtomicI64,
}

impl ManualClock {
    /// A clock showing `now_ms`.
    pub fn at(now_ms: i64) -> ManualClock {
        ManualClock { now_ms: AtomicI64::new(now_ms) }
    }

    /// A clock showing the system's time now (so that rows it stamps look ordinary), standing
    /// still from then on.
    pub fn starting_now() -> ManualClock {
        ManualClock::at(crate::util::now_ms())
    }

    /// Move the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        // fetch_update cannot fail with a closure that always returns Some.
        let _ = self.now_ms.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| Some(now.saturating_add(by)));
    }

    /// Set the clock to `now_ms` (backwards too: wall clocks do jump).
    pub fn set(&self, now_ms: i64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::at(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        assert_eq!(clock.now_ms(), 1_000, "it stands still");

        clock.advance(Duration::from_secs(61));
        assert_eq!(clock.now_ms(), 62_000);
        clock.set(500);
        assert_eq!(clock.now_ms(), 500);
        clock.advance(Duration::MAX);
        assert_eq!(clock.now_ms(), i64::MAX, "advancing saturates");
    }

    #[test]
    fn the_system_clock_is_the_epoch_clock() {
        let before = crate::util::now_ms();
        let now = SystemClock.now_ms();
        assert!(now >= before && now - before < 60_000);
    }

    #[test]
    fn a_throttle_driven_by_the_manual_clock_reopens_when_it_advances() {
        let clock = ManualClock::at(10_000);
        let throttle = crate::throttle::Throttle::new(1, Duration::from_secs(60));
        assert!(throttle.check(&["user:u1"], clock.now_ms()).is_ok());
        assert_eq!(throttle.check(&["user:u1"], clock.now_ms()), Err(Duration::from_secs(60)));

        clock.advance(Duration::from_secs(60));

        assert!(throttle.check(&["user:u1"], clock.now_ms()).is_ok());
    }
}
