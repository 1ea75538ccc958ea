//! Rate limits: a sliding window of events per key, for arming a terminal, card reads and typed card lookups
//!
//! One instance counts in memory; several instances on PostgreSQL count in the database
//! ([`crate::cluster::Cluster::rate_check`]), so that a limit holds whichever instance a request
//! reaches.
//!
//! A card read costs real time on a real reader and a typed lookup is a guess at somebody's card
//! number: both are limited per terminal and per user so that a flood of frames or requests never
//! becomes a flood of reads or lookups. One std `Mutex`, never held across `.await`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// At most `max` events per `window` for each key.
#[derive(Debug)]
pub struct Throttle {
    /// Prefixes the keys where they are shared (`arm`, `read`, `typed`).
    name: &'static str,
    max: usize,
    window_ms: i64,
    events: Mutex<HashMap<String, VecDeque<i64>>>,
    /// Counted in the database, for every instance.
    shared: Option<crate::cluster::Cluster>,
}

impl Throttle {
    pub fn new(max: usize, window: Duration) -> Throttle {
        Throttle { name: "local", max, window_ms: window.as_millis() as i64, events: Mutex::new(HashMap::new()), shared: None }
    }

    /// [`Throttle::new`], counted across the instances of `cluster` when there is one.
    pub fn shared(name: &'static str, max: usize, window: Duration, cluster: Option<crate::cluster::Cluster>) -> Throttle {
        Throttle { name, shared: cluster, ..Throttle::new(max, window) }
    }

    /// Count an event for every key at `now_ms` where the limit is kept (this process, or the
    /// database for several instances), or say how long to wait (see [`Throttle::check`]). A
    /// database that cannot answer lets the event through (logged): every request it limits
    /// needs the database for its authorization anyway.
    pub async fn allow(&self, keys: &[&str], now_ms: i64) -> Result<(), Duration> {
        let Some(cluster) = &self.shared else { return self.check(keys, now_ms) };
        let keys: Vec<String> = keys.iter().map(|k| format!("{}:{k}", self.name)).collect();
        match cluster.rate_check(&keys, self.max, self.window_ms, now_ms).await {
            Ok(decision) => decision,
            Err(e) => {
                tracing::error!(error = %crate::util::ErrorChain(&e), throttle = self.name, "checking a shared rate limit");
                Ok(())
            }
        }
    }

    /// Count an event for every key at `now_ms`, or, if any key is at its limit, count nothing and
    /// say how long until the oldest event of the fullest key leaves the window.
    pub fn check(&self, keys: &[&str], now_ms: i64) -> Result<(), Duration> {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait_ms = 0;
        for key in keys {
            if let Some(times) = events.get_mut(*key) {
                while times.front().is_some_and(|&t| now_ms - t >= self.window_ms) {
                    times.pop_front();
                }
                if times.len() >= self.max {
                    let oldest = times.front().copied().unwrap_or(now_ms);
                    wait_ms = wait_ms.max(oldest + self.window_ms - now_ms);
                }
            }
        }
        if wait_ms > 0 {
            return Err(Duration::from_millis(wait_ms as u64));
        }
        for key in keys {
            events.entry((*key).to_string()).or_default().push_back(now_ms);
        }
        // Keys whose windows emptied are dropped now and then, so the map does not grow forever.
        if events.len() > 10_000 {
            let window = self.window_ms;
            events.retain(|_, times| times.back().is_some_and(|&t| now_ms - t < window));
        }
        Ok(())
    }
}

/// The limits a server applies (per minute, from the configuration; defaults 30, 20, 10).
#[derive(Debug)]
pub struct Throttles {
    /// `arm` frames and demo taps, per terminal and per user.
    pub arm: Throttle,
    /// Card reads started, per terminal and per user.
    pub read: Throttle,
    /// Lookups of a card number without a read backing it, per user.
    pub typed_lookup: Throttle,
}

impl Throttles {
    /// The configured limits, kept in the database when `cluster` is given (several instances).
    pub fn from_config(config: &crate::config::Config, cluster: Option<crate::cluster::Cluster>) -> Throttles {
        let minute = Duration::from_secs(60);
        Throttles {
            arm: Throttle::shared("arm", config.arms_per_minute, minute, cluster.clone()),
            read: Throttle::shared("read", config.reads_per_minute, minute, cluster.clone()),
            typed_lookup: Throttle::shared("typed", config.typed_lookups_per_minute, minute, cluster),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_at_its_limit_waits_for_the_window_and_counts_nothing_meanwhile() {
        let throttle = Throttle::new(2, Duration::from_secs(10));
        assert!(throttle.check(&["terminal:t1", "user:u1"], 0).is_ok());
        assert!(throttle.check(&["terminal:t1", "user:u2"], 1_000).is_ok());
        assert_eq!(throttle.check(&["terminal:t1", "user:u3"], 2_000), Err(Duration::from_millis(8_000)));
        // The refused event was not counted for user u3.
        assert!(throttle.check(&["terminal:t2", "user:u3"], 2_000).is_ok());
        assert!(throttle.check(&["terminal:t1", "user:u4"], 10_000).is_ok(), "the first event left the window");
    }
}
