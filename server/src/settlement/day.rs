//! The business day of settlement (R3.7): which day an instant belongs to in the settlement's zone with its cut-off, the day's window, and when the scheduled job may settle it
//!
//! A top-up at or after the cut-off counts on the next day: with a cut-off of 23:00 the day
//! `2026-05-02` runs from 2026-05-01 23:00 to 2026-05-02 23:00 local time; with the default
//! 00:00 it is the calendar day. Windows are computed on local wall-clock time and converted
//! with the zone, so a day across a daylight-saving change is 23 or 25 hours long.

use std::fmt;

use chrono::{Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike};
use chrono_tz::Tz;

const DAY_MS: i64 = 86_400_000;

/// A business day, `yyyy-mm-dd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BusinessDate(NaiveDate);

/// A date that is not `yyyy-mm-dd` or does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a date (yyyy-mm-dd)")]
pub struct BadDate(pub String);

impl BusinessDate {
    /// Strictly `yyyy-mm-dd`, and a date that exists.
    pub fn parse(text: &str) -> Result<BusinessDate, BadDate> {
        let bad = || BadDate(crate::util::truncate(text, 32).into_owned());
        let b = text.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !digits(0..4) || !digits(5..7) || !digits(8..10) {
            return Err(bad());
        }
        let (y, m, d) = (text[0..4].parse().map_err(|_| bad())?, text[5..7].parse().map_err(|_| bad())?, text[8..10].parse().map_err(|_| bad())?);
        NaiveDate::from_ymd_opt(y, m, d).map(BusinessDate).ok_or_else(bad)
    }

    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<BusinessDate> {
        NaiveDate::from_ymd_opt(year, month, day).map(BusinessDate)
    }

    pub fn next(self) -> BusinessDate {
        BusinessDate(self.0.succ_opt().unwrap_or(self.0))
    }

    pub fn previous(self) -> BusinessDate {
        BusinessDate(self.0.pred_opt().unwrap_or(self.0))
    }
}

impl fmt::Display for BusinessDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.0.year(), self.0.month(), self.0.day())
    }
}

/// A local time of day, `HH:MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay {
    minutes: u16,
}

impl TimeOfDay {
    pub const MIDNIGHT: TimeOfDay = TimeOfDay { minutes: 0 };

    pub fn new(hour: u16, minute: u16) -> Option<TimeOfDay> {
        (hour < 24 && minute < 60).then_some(TimeOfDay { minutes: hour * 60 + minute })
    }

    /// `HH:MM`, 00:00 to 23:59.
    pub fn parse(text: &str) -> Option<TimeOfDay> {
        let (h, m) = text.trim().split_once(':')?;
        if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        TimeOfDay::new(h.parse().ok()?, m.parse().ok()?)
    }

    pub fn hour(self) -> u32 {
        u32::from(self.minutes / 60)
    }

    fn naive(self) -> NaiveTime {
        NaiveTime::from_hms_opt(u32::from(self.minutes / 60), u32::from(self.minutes % 60), 0).unwrap_or(NaiveTime::MIN)
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.minutes / 60, self.minutes % 60)
    }
}

/// A half-open interval of Unix milliseconds, `[start_ms, end_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl Window {
    pub fn contains(&self, ms: i64) -> bool {
        self.start_ms <= ms && ms < self.end_ms
    }

    /// This window widened by `by_ms` at both ends.
    pub fn widened(&self, by_ms: i64) -> Window {
        Window { start_ms: self.start_ms.saturating_sub(by_ms), end_ms: self.end_ms.saturating_add(by_ms) }
    }
}

/// How business days are cut: the zone, the cut-off, when the scheduled job runs, and how long
/// after a day's end the bank's late records of it are waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calendar {
    pub zone: Tz,
    pub cutoff: TimeOfDay,
    pub run_at: TimeOfDay,
    pub grace_ms: i64,
}

impl Calendar {
    /// How far local time is moved forward to fall on its business date: a day minus the
    /// cut-off (none for a midnight cut-off).
    fn shift(&self) -> chrono::Duration {
        chrono::Duration::minutes(i64::from((1440 - self.cutoff.minutes) % 1440))
    }

    fn local(&self, ms: i64) -> NaiveDateTime {
        self.zone.timestamp_millis_opt(ms).single().map(|t| t.naive_local()).unwrap_or_default()
    }

    /// The instant of a local wall-clock time: the earlier one when the clock went back, the
    /// first one after the gap when it jumped forward.
    fn instant(&self, local: NaiveDateTime) -> i64 {
        let mut at = local;
        for _ in 0..8 {
            match self.zone.from_local_datetime(&at) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => return t.timestamp_millis(),
                LocalResult::None => at += chrono::Duration::minutes(15),
            }
        }
        local.and_utc().timestamp_millis()
    }

    /// The business day `ms` belongs to.
    pub fn date_of(&self, ms: i64) -> BusinessDate {
        BusinessDate((self.local(ms) + self.shift()).date())
    }

    /// The business day `date`: from the cut-off before it to its cut-off.
    pub fn window(&self, date: BusinessDate) -> Window {
        let start = date.0.and_time(NaiveTime::MIN) - self.shift();
        let end = start + chrono::Duration::days(1);
        Window { start_ms: self.instant(start), end_ms: self.instant(end) }
    }

    /// Whether `date` is over at `now_ms`.
    pub fn is_over(&self, date: BusinessDate, now_ms: i64) -> bool {
        self.window(date).end_ms <= now_ms
    }

    /// When the scheduled job settles `date`: at the first `run_at` after the day's end, and
    /// not before the grace for the bank's late records has passed.
    pub fn due_ms(&self, date: BusinessDate) -> i64 {
        let end_ms = self.window(date).end_ms;
        let end = self.local(end_ms);
        let mut run = end.date().and_time(self.run_at.naive());
        if run < end {
            run += chrono::Duration::days(1);
        }
        self.instant(run).max(end_ms + self.grace_ms)
    }

    /// The latest business day due for settlement at `now_ms`.
    pub fn latest_due(&self, now_ms: i64) -> BusinessDate {
        let mut date = self.date_of(now_ms);
        while self.due_ms(date) > now_ms {
            date = date.previous();
        }
        date
    }

    /// The local hour of `ms`, 0–23.
    pub fn local_hour(&self, ms: i64) -> u32 {
        self.local(ms).hour()
    }

    /// The local date and time of `ms`: (year, month, day, hour, minute, second).
    pub fn local_parts(&self, ms: i64) -> (i32, u32, u32, u32, u32, u32) {
        let t = self.local(ms);
        (t.year(), t.month(), t.day(), t.hour(), t.minute(), t.second())
    }

    /// `yyyy-mm-dd HH:MM:SS` local time.
    pub fn local_text(&self, ms: i64) -> String {
        let (y, mo, d, h, mi, s) = self.local_parts(ms);
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
    }

    /// The hours of a business day in its order: from the cut-off's hour round to the one before.
    pub fn hours_in_order(&self) -> impl Iterator<Item = u32> {
        let first = self.cutoff.hour();
        (0..24).map(move |i| (first + i) % 24)
    }
}

/// The UTC dates (`yyyy-mm-dd`, the bank's statement days) that `window` touches.
pub fn utc_dates_covering(window: Window) -> Vec<String> {
    let mut out = Vec::new();
    let last = (window.end_ms - 1).div_euclid(DAY_MS);
    let mut day = window.start_ms.div_euclid(DAY_MS);
    while day <= last {
        out.push(crate::util::format_ms(day * DAY_MS)[..10].to_string());
        day += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shanghai(cutoff: &str) -> Calendar {
        Calendar {
            zone: chrono_tz::Asia::Shanghai,
            cutoff: TimeOfDay::parse(cutoff).unwrap(),
            run_at: TimeOfDay::parse("01:00").unwrap(),
            grace_ms: 3_600_000,
        }
    }

    fn at(zone: Tz, y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
        zone.with_ymd_and_hms(y, m, d, h, min, 0).single().unwrap().timestamp_millis()
    }

    fn date(text: &str) -> BusinessDate {
        BusinessDate::parse(text).unwrap()
    }

    #[test]
    fn dates_and_times_parse_strictly() {
        assert_eq!(date("2026-02-28").to_string(), "2026-02-28");
        for bad in ["2026-02-29", "2026-2-28", "20260228", "2026-13-01", "2026-01-0x", " 2026-01-01", "２０２６-01-01"] {
            assert!(BusinessDate::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(TimeOfDay::parse("23:00").unwrap().to_string(), "23:00");
        for bad in ["24:00", "7:00", "07:60", "0700", "07:0a"] {
            assert!(TimeOfDay::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_midnight_cutoff_gives_the_calendar_day() {
        let c = shanghai("00:00");
        let tz = c.zone;
        assert_eq!(c.date_of(at(tz, 2026, 5, 1, 0, 0)), date("2026-05-01"));
        assert_eq!(c.date_of(at(tz, 2026, 5, 1, 23, 59)), date("2026-05-01"));
        assert_eq!(c.window(date("2026-05-01")), Window { start_ms: at(tz, 2026, 5, 1, 0, 0), end_ms: at(tz, 2026, 5, 2, 0, 0) });
        // 16:00 UTC is midnight in Shanghai.
        assert_eq!(c.window(date("2026-05-01")).start_ms % DAY_MS, 16 * 3_600_000);
    }

    #[test]
    fn a_top_up_at_or_after_the_cutoff_counts_on_the_next_day() {
        let c = shanghai("23:00");
        let tz = c.zone;
        assert_eq!(c.date_of(at(tz, 2026, 5, 1, 22, 59)), date("2026-05-01"));
        assert_eq!(c.date_of(at(tz, 2026, 5, 1, 23, 0)), date("2026-05-02"));
        let w = c.window(date("2026-05-02"));
        assert_eq!(w, Window { start_ms: at(tz, 2026, 5, 1, 23, 0), end_ms: at(tz, 2026, 5, 2, 23, 0) });
        assert!(w.contains(at(tz, 2026, 5, 1, 23, 0)) && !w.contains(at(tz, 2026, 5, 2, 23, 0)));
        assert_eq!(c.hours_in_order().take(3).collect::<Vec<_>>(), vec![23, 0, 1]);
    }

    #[test]
    fn a_day_is_due_at_the_first_run_time_after_it_and_its_grace() {
        let c = shanghai("00:00");
        let tz = c.zone;
        assert_eq!(c.due_ms(date("2026-05-01")), at(tz, 2026, 5, 2, 1, 0));
        assert_eq!(c.latest_due(at(tz, 2026, 5, 2, 0, 59)), date("2026-04-30"));
        assert_eq!(c.latest_due(at(tz, 2026, 5, 2, 1, 0)), date("2026-05-01"));
        // A run time inside the grace waits for the grace.
        let early = Calendar { run_at: TimeOfDay::parse("00:10").unwrap(), ..c };
        assert_eq!(early.due_ms(date("2026-05-01")), at(tz, 2026, 5, 2, 1, 0));
        // A cut-off at 23:00 with the job at 01:00 settles the next night.
        let late = shanghai("23:00");
        assert_eq!(late.due_ms(date("2026-05-02")), at(tz, 2026, 5, 3, 1, 0));
        assert!(late.is_over(date("2026-05-02"), at(tz, 2026, 5, 2, 23, 0)));
        assert!(!late.is_over(date("2026-05-02"), at(tz, 2026, 5, 2, 22, 59)));
    }

    #[test]
    fn a_day_across_a_daylight_saving_change_is_shorter() {
        let c = Calendar { zone: chrono_tz::Europe::Berlin, ..shanghai("00:00") };
        let w = c.window(date("2026-03-29"));
        assert_eq!(w.end_ms - w.start_ms, 23 * 3_600_000);
    }

    #[test]
    fn the_statement_days_cover_the_window() {
        let c = shanghai("00:00");
        let w = c.window(date("2026-05-01"));
        assert_eq!(utc_dates_covering(w), vec!["2026-04-30", "2026-05-01"]);
        assert_eq!(utc_dates_covering(w.widened(3_600_000)), vec!["2026-04-30", "2026-05-01"]);
        assert_eq!(utc_dates_covering(Window { start_ms: 0, end_ms: DAY_MS }), vec!["1970-01-01"]);
    }
}
