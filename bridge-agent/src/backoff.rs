//! Exponential reconnect backoff with jitter, so that a branch's agents do not all redial a
//! restarted server in the same instant.

use std::time::Duration;

/// Delays `initial, 2·initial, 4·initial, …` capped at `max`; each drawn uniformly from the upper
/// half of its step ("equal jitter": never shorter than half the step, never longer than it).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max: max.max(initial), attempt: 0 }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step();
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// After a successful connection: start again from `initial`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    fn step(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(20));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));

        let delays: Vec<Duration> = (0..12).map(|_| backoff.next_delay()).collect();

        let steps_ms = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000, 30000, 30000];
        for (delay, step) in delays.iter().zip(steps_ms) {
            let step = Duration::from_millis(step);
            assert!(*delay >= step / 2 && *delay <= step, "{delay:?} outside {step:?}");
        }
    }

    #[test]
    fn reset_starts_again_from_the_initial_delay() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        for _ in 0..10 {
            backoff.next_delay();
        }

        backoff.reset();

        assert!(backoff.next_delay() <= Duration::from_millis(500));
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        for _ in 0..10_000 {
            assert!(backoff.next_delay() <= Duration::from_secs(30));
        }
    }
}
