//! The alarm rules as a pure function, like the top-up engine: readings in, transitions out.
//!
//! Each condition is a [`Reading`] of one [`AlarmKey`] (a kind and a subject) at a [`Level`]:
//! `Bad` (the alarm's condition holds), `Good` (it clearly does not) or `Neutral` (between the
//! raise and the clear thresholds: neither). The [`Engine`] remembers since when each key has been
//! at its level; an alarm is raised when its key has been `Bad` for the kind's raise hold, and
//! cleared when it has been `Good` for the kind's clear hold. A key no reading mentions any more
//! (a top-up that left its state, a terminal revoked) counts as `Good`.
//!
//! That is the hysteresis: a value wavering around the raise threshold goes `Bad`/`Neutral` and
//! never stays `Bad` long enough to raise; once raised, wavering around the same threshold never
//! gets it `Good`; only a value below the (lower) clear threshold, held for the clear hold, clears
//! it. Nothing here reads a clock or a database: [`super::evaluator`] gathers the readings and
//! applies the transitions.

use std::collections::{BTreeMap, BTreeSet};

use super::AlarmKind;

/// One alarm's identity: at most one is open per key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlarmKey {
    pub kind: AlarmKind,
    pub subject: String,
}

impl AlarmKey {
    pub fn new(kind: AlarmKind, subject: impl Into<String>) -> AlarmKey {
        AlarmKey { kind, subject: subject.into() }
    }
}

/// Where a condition stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The alarm's condition holds (offline, probe failing, ratio above the raise threshold).
    Bad,
    /// Between the thresholds: neither raises nor clears.
    Neutral,
    /// The condition clearly does not hold (below the clear threshold).
    Good,
}

/// How long a level must hold before the alarm changes, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub raise_after_ms: i64,
    pub clear_after_ms: i64,
}

/// One observation of one condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub key: AlarmKey,
    pub level: Level,
    /// Since when the level holds, when the observer knows better than "now" (a terminal offline
    /// since its last heartbeat, a top-up in its state since its last step).
    pub since_ms: Option<i64>,
    /// What the alarm says if it is raised now.
    pub detail: String,
}

impl Reading {
    pub fn new(key: AlarmKey, level: Level, detail: impl Into<String>) -> Reading {
        Reading { key, level, since_ms: None, detail: detail.into() }
    }

    pub fn since(mut self, since_ms: i64) -> Reading {
        self.since_ms = Some(since_ms);
        self
    }
}

/// What the engine decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Raise { key: AlarmKey, detail: String },
    Clear { key: AlarmKey, detail: String },
}

#[derive(Debug, Clone)]
struct Track {
    /// An alarm is open for this key.
    active: bool,
    level: Level,
    since_ms: i64,
    detail: String,
}

/// The rules' memory between evaluations: per key, its level and since when, and whether its
/// alarm is open. Only the kinds given holds are the engine's; open alarms of other kinds (raised
/// by a hook: a reconciliation mismatch, an audit failure) are left alone.
#[derive(Debug, Clone)]
pub struct Engine {
    holds: BTreeMap<AlarmKind, Hold>,
    tracks: BTreeMap<AlarmKey, Track>,
}

impl Engine {
    pub fn new(holds: BTreeMap<AlarmKind, Hold>) -> Engine {
        Engine { holds, tracks: BTreeMap::new() }
    }

    /// Whether the engine raises and clears alarms of `kind`.
    pub fn handles(&self, kind: AlarmKind) -> bool {
        self.holds.contains_key(&kind)
    }

    /// Take the stored truth about open alarms (after a restart, or after someone else raised or
    /// cleared one): keys of the engine's kinds in `open` are active, the others not.
    pub fn sync_open(&mut self, open: &BTreeSet<AlarmKey>, now_ms: i64) {
        for key in open.iter().filter(|k| self.holds.contains_key(&k.kind)) {
            self.tracks
                .entry(key.clone())
                .or_insert_with(|| Track { active: true, level: Level::Neutral, since_ms: now_ms, detail: String::new() })
                .active = true;
        }
        for (key, track) in &mut self.tracks {
            if !open.contains(key) {
                track.active = false;
            }
        }
    }

    /// Evaluate `readings` taken at `now_ms`: the alarms to raise and to clear. Readings of kinds
    /// the engine does not handle are ignored.
    pub fn evaluate(&mut self, readings: Vec<Reading>, now_ms: i64) -> Vec<Transition> {
        let mut seen = BTreeSet::new();
        for reading in readings.into_iter().filter(|r| self.holds.contains_key(&r.key.kind)) {
            seen.insert(reading.key.clone());
            let since = reading.since_ms.unwrap_or(now_ms).min(now_ms);
            let track = self
                .tracks
                .entry(reading.key)
                .or_insert_with(|| Track { active: false, level: reading.level, since_ms: since, detail: String::new() });
            if track.level != reading.level {
                track.level = reading.level;
                track.since_ms = since;
            }
            track.detail = reading.detail;
        }
        // Not mentioned any more: the condition is gone.
        for (key, track) in &mut self.tracks {
            if !seen.contains(key) && track.level != Level::Good {
                track.level = Level::Good;
                track.since_ms = now_ms;
            }
        }
        let mut out = Vec::new();
        for (key, track) in &mut self.tracks {
            let hold = self.holds[&key.kind];
            let held = now_ms.saturating_sub(track.since_ms);
            match (track.active, track.level) {
                (false, Level::Bad) if held >= hold.raise_after_ms => {
                    track.active = true;
                    out.push(Transition::Raise { key: key.clone(), detail: track.detail.clone() });
                }
                (true, Level::Good) if held >= hold.clear_after_ms => {
                    track.active = false;
                    out.push(Transition::Clear { key: key.clone(), detail: track.detail.clone() });
                }
                _ => {}
            }
        }
        // Forget quiet keys that nothing mentions.
        self.tracks.retain(|key, track| track.active || track.level != Level::Good || seen.contains(key));
        out
    }
}

/// The level of a ratio against separate raise and clear thresholds (`clear < raise`): above
/// `raise` is bad, below `clear` good, in between neutral. Too few samples to judge count as good.
pub fn ratio_level(ratio: f64, samples: u64, min_samples: u64, raise: f64, clear: f64) -> Level {
    if samples < min_samples {
        Level::Good
    } else if ratio > raise {
        Level::Bad
    } else if ratio < clear {
        Level::Good
    } else {
        Level::Neutral
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn engine() -> Engine {
        Engine::new(BTreeMap::from([
            (AlarmKind::TerminalOffline, Hold { raise_after_ms: 5 * MIN, clear_after_ms: MIN }),
            (AlarmKind::BankErrorRatio, Hold { raise_after_ms: MIN, clear_after_ms: 2 * MIN }),
            (AlarmKind::TopupStuck, Hold { raise_after_ms: 15 * MIN, clear_after_ms: 0 }),
        ]))
    }

    fn offline(terminal: &str, since: i64) -> Reading {
        Reading::new(AlarmKey::new(AlarmKind::TerminalOffline, terminal), Level::Bad, "offline").since(since)
    }

    fn online(terminal: &str) -> Reading {
        Reading::new(AlarmKey::new(AlarmKind::TerminalOffline, terminal), Level::Good, "online")
    }

    fn raised(t: &[Transition]) -> Vec<String> {
        t.iter().filter_map(|t| if let Transition::Raise { key, .. } = t { Some(key.subject.clone()) } else { None }).collect()
    }

    fn cleared(t: &[Transition]) -> Vec<String> {
        t.iter().filter_map(|t| if let Transition::Clear { key, .. } = t { Some(key.subject.clone()) } else { None }).collect()
    }

    #[test]
    fn an_offline_terminal_raises_after_its_hold_and_clears_after_being_back_long_enough() {
        let mut e = engine();
        let t0 = 1_000_000;

        assert!(e.evaluate(vec![offline("t1", t0)], t0 + 4 * MIN).is_empty(), "4 minutes offline: not yet");
        let t = e.evaluate(vec![offline("t1", t0)], t0 + 5 * MIN);
        assert_eq!(raised(&t), ["t1"]);
        assert!(e.evaluate(vec![offline("t1", t0)], t0 + 6 * MIN).is_empty(), "raised once");

        assert!(e.evaluate(vec![online("t1")], t0 + 7 * MIN).is_empty(), "back, not long enough");
        let t = e.evaluate(vec![online("t1")], t0 + 8 * MIN);
        assert_eq!(cleared(&t), ["t1"]);
        assert!(e.evaluate(vec![online("t1")], t0 + 9 * MIN).is_empty());
    }

    #[test]
    fn the_level_s_own_since_counts_so_a_long_silence_raises_at_once() {
        let mut e = engine();
        let t = e.evaluate(vec![offline("t1", 0)], 10 * MIN);
        assert_eq!(raised(&t), ["t1"], "offline since 10 minutes, seen for the first time now");
    }

    #[test]
    fn a_terminal_flickering_online_neither_clears_nor_raises_again() {
        let mut e = engine();
        assert_eq!(raised(&e.evaluate(vec![offline("t1", 0)], 5 * MIN)), ["t1"]);
        // Back for 30 s, gone for 30 s, again and again: never a minute online in one go.
        let mut now = 5 * MIN;
        for _ in 0..20 {
            now += 30_000;
            assert!(e.evaluate(vec![online("t1")], now).is_empty());
            now += 30_000;
            assert!(e.evaluate(vec![offline("t1", now)], now).is_empty());
        }
    }

    fn ratio(value: f64, at: i64, e: &mut Engine) -> Vec<Transition> {
        let level = ratio_level(value, 100, 10, 0.2, 0.05);
        e.evaluate(vec![Reading::new(AlarmKey::new(AlarmKind::BankErrorRatio, "bank"), level, format!("{value}"))], at)
    }

    #[test]
    fn a_ratio_wavering_around_the_raise_threshold_does_not_flap() {
        let mut e = engine();
        // 0.18, 0.22, 0.18, … every 20 s for 20 minutes: never above 0.2 for a minute.
        for i in 0..60 {
            let value = if i % 2 == 0 { 0.18 } else { 0.22 };
            assert!(ratio(value, i * 20_000, &mut e).is_empty(), "step {i}");
        }
        // Above it for a minute: raised, once.
        let start = 60 * 20_000;
        assert!(ratio(0.3, start, &mut e).is_empty());
        assert_eq!(raised(&ratio(0.3, start + MIN, &mut e)), ["bank"]);
        // Wavering around the raise threshold again, and then around the clear one: never clear.
        let mut now = start + MIN;
        for i in 0..60 {
            now += 20_000;
            let value = match i % 4 {
                0 => 0.18,
                1 => 0.22,
                2 => 0.04,
                _ => 0.06,
            };
            assert!(ratio(value, now, &mut e).is_empty(), "step {i}: {value}");
        }
        // Below the clear threshold for two minutes: cleared, once.
        now += 20_000;
        assert!(ratio(0.01, now, &mut e).is_empty());
        assert_eq!(cleared(&ratio(0.01, now + 2 * MIN, &mut e)), ["bank"]);
        assert!(ratio(0.01, now + 3 * MIN, &mut e).is_empty());
    }

    #[test]
    fn too_few_calls_judge_nothing() {
        assert_eq!(ratio_level(1.0, 3, 10, 0.2, 0.05), Level::Good);
        assert_eq!(ratio_level(0.5, 10, 10, 0.2, 0.05), Level::Bad);
        assert_eq!(ratio_level(0.2, 10, 10, 0.2, 0.05), Level::Neutral, "at the raise threshold is not above it");
        assert_eq!(ratio_level(0.05, 10, 10, 0.2, 0.05), Level::Neutral);
    }

    #[test]
    fn a_key_no_reading_mentions_any_more_clears_after_its_hold() {
        let mut e = engine();
        let stuck = Reading::new(AlarmKey::new(AlarmKind::TopupStuck, "tu_1"), Level::Bad, "debit_unknown").since(0);
        assert_eq!(raised(&e.evaluate(vec![stuck], 15 * MIN)), ["tu_1"]);
        assert_eq!(cleared(&e.evaluate(vec![], 16 * MIN)), ["tu_1"], "the top-up left its state: clear hold 0");
        assert!(e.evaluate(vec![], 17 * MIN).is_empty());
        assert!(e.tracks.is_empty(), "forgotten");
    }

    #[test]
    fn the_stored_truth_wins_over_memory() {
        let mut e = engine();
        let key = AlarmKey::new(AlarmKind::TerminalOffline, "t1");
        // After a restart: the alarm is open in the store, the terminal is online now.
        e.sync_open(&BTreeSet::from([key.clone(), AlarmKey::new(AlarmKind::ReconciliationMismatch, "2026-12-01")]), 0);
        assert!(e.evaluate(vec![online("t1")], 0).is_empty());
        let t = e.evaluate(vec![online("t1")], MIN);
        assert_eq!(cleared(&t), ["t1"], "only the engine's own kinds");

        // Raised by the engine, then cleared elsewhere: it raises again only after a new hold.
        assert_eq!(raised(&e.evaluate(vec![offline("t1", 0)], 10 * MIN)), ["t1"]);
        e.sync_open(&BTreeSet::new(), 10 * MIN);
        assert_eq!(raised(&e.evaluate(vec![offline("t1", 0)], 11 * MIN)), ["t1"], "still bad: raised again");
    }

    #[test]
    fn readings_of_other_kinds_are_ignored() {
        let mut e = engine();
        let r = Reading::new(AlarmKey::new(AlarmKind::AuditChainFailed, "audit-log"), Level::Bad, "x");
        assert!(e.evaluate(vec![r], 100 * MIN).is_empty());
    }
}
