//! R3.4 card data analysis: the preset rules a top-up must pass before any money moves — the card's state, the offered amounts, the per-top-up maximum, the balance ceiling, daily and monthly caps per card and per bank card, and a velocity limit
//!
//! Pure: the caller gathers the [`Facts`] (the card's status from the database, its balance as
//! the card itself reported it, and the sums of recent top-ups from
//! `Store::topup_facts` over the [`Windows`] of [`Rules::windows`]) and asks [`check`] about one
//! amount, or [`allowed_amounts`] for the amounts to offer.
//!
//! Business days and months are those of the configured IANA time zone (default
//! `Asia/Shanghai`): a day starts at local midnight, a month at local midnight of its first day.
//! Sums count every top-up that is not `failed` or `refunded` (money taken or possibly taken).
//! A cap is a ceiling one may reach: a top-up that lands exactly on it passes, one fen more is
//! refused.

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::{Fen, Timestamp};
use crate::config::TopUpConfig;
use crate::store::TopUpTotals;

/// The limits, from the `[topup]` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// The amounts a kiosk offers, in fen.
    pub amounts: Vec<Fen>,
    pub per_topup_max: Fen,
    pub card_daily_cap: Fen,
    pub card_monthly_cap: Fen,
    pub binding_daily_cap: Fen,
    pub binding_monthly_cap: Fen,
    /// The most a card may hold after a top-up.
    pub balance_ceiling: Fen,
    /// At most this many top-ups of one card within `velocity_window_ms`.
    pub velocity_max: u32,
    pub velocity_window_ms: i64,
    /// The zone of the business day and month.
    pub time_zone: Tz,
}

impl From<&TopUpConfig> for Rules {
    fn from(c: &TopUpConfig) -> Rules {
        Rules {
            amounts: c.amounts_minor.clone(),
            per_topup_max: c.per_topup_max_minor,
            card_daily_cap: c.card_daily_cap_minor,
            card_monthly_cap: c.card_monthly_cap_minor,
            binding_daily_cap: c.binding_daily_cap_minor,
            binding_monthly_cap: c.binding_monthly_cap_minor,
            balance_ceiling: c.balance_ceiling_minor,
            velocity_max: c.velocity_max,
            velocity_window_ms: c.velocity_window_ms,
            time_zone: c.time_zone,
        }
    }
}

/// Where the windows of the sums start, for one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// Local midnight of today.
    pub day_start: Timestamp,
    /// Local midnight of the first of this month.
    pub month_start: Timestamp,
    /// `now - velocity_window_ms`.
    pub velocity_since: Timestamp,
}

impl Rules {
    /// The windows the sums of [`Facts`] are taken over at `now`.
    pub fn windows(&self, now: Timestamp) -> Windows {
        Windows {
            day_start: Timestamp(day_start_ms(self.time_zone, now.0)),
            month_start: Timestamp(month_start_ms(self.time_zone, now.0)),
            velocity_since: now.plus_ms(self.velocity_window_ms.saturating_neg()),
        }
    }

    /// The business date at `now` (for the card's validity dates).
    pub fn business_date(&self, now: Timestamp) -> NaiveDate {
        local_date(self.time_zone, now.0)
    }
}

/// What the rules look at for one card and its bank card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// The card is registered and active (not blocked).
    pub card_active: bool,
    /// The balance the card reported (authenticated by MAC1), in fen.
    pub balance: Fen,
    /// Sums of this card's top-ups since the start of the business day and month.
    pub card_day: Fen,
    pub card_month: Fen,
    /// Sums of the bank card's (the binding's) top-ups, over all its cards.
    pub binding_day: Fen,
    pub binding_month: Fen,
    /// This card's top-ups within the velocity window.
    pub card_recent: u32,
}

impl Facts {
    /// The facts from the card's state and balance and the stored sums.
    pub fn new(card_active: bool, balance: Fen, totals: &TopUpTotals) -> Facts {
        Facts {
            card_active,
            balance,
            card_day: totals.card_day,
            card_month: totals.card_month,
            binding_day: totals.binding_day,
            binding_month: totals.binding_month,
            card_recent: u32::try_from(totals.card_recent.max(0)).unwrap_or(u32::MAX),
        }
    }
}

/// Why the rules refuse a top-up, in the order [`check`] tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RuleRefusal {
    #[error("the card is not active")]
    CardState,
    #[error("not one of the offered amounts")]
    AmountNotOffered,
    #[error("over the maximum of one top-up")]
    OverPerTopUpMaximum,
    #[error("too many top-ups of this card in a short time")]
    Velocity,
    #[error("the card's balance would go over its ceiling")]
    BalanceCeiling,
    #[error("the card's daily cap would be exceeded")]
    CardDailyCap,
    #[error("the card's monthly cap would be exceeded")]
    CardMonthlyCap,
    #[error("the bank card's daily cap would be exceeded")]
    BindingDailyCap,
    #[error("the bank card's monthly cap would be exceeded")]
    BindingMonthlyCap,
}

impl RuleRefusal {
    /// Stable code for the audit log (the kiosk reason's wire name).
    pub fn code(self) -> &'static str {
        match self {
            RuleRefusal::CardState => "card_state",
            RuleRefusal::AmountNotOffered => "amount_not_offered",
            RuleRefusal::OverPerTopUpMaximum => "over_per_top_up_maximum",
            RuleRefusal::Velocity => "velocity",
            RuleRefusal::BalanceCeiling => "balance_ceiling",
            RuleRefusal::CardDailyCap => "card_daily_cap",
            RuleRefusal::CardMonthlyCap => "card_monthly_cap",
            RuleRefusal::BindingDailyCap => "binding_daily_cap",
            RuleRefusal::BindingMonthlyCap => "binding_monthly_cap",
        }
    }
}

impl From<RuleRefusal> for protocol::kiosk::TopUpRefusal {
    fn from(r: RuleRefusal) -> Self {
        use protocol::kiosk::TopUpRefusal;
        match r {
            RuleRefusal::CardState => TopUpRefusal::CardState,
            RuleRefusal::AmountNotOffered => TopUpRefusal::AmountNotOffered,
            RuleRefusal::OverPerTopUpMaximum => TopUpRefusal::OverPerTopUpMaximum,
            RuleRefusal::Velocity => TopUpRefusal::Velocity,
            RuleRefusal::BalanceCeiling => TopUpRefusal::BalanceCeiling,
            RuleRefusal::CardDailyCap => TopUpRefusal::CardDailyCap,
            RuleRefusal::CardMonthlyCap => TopUpRefusal::CardMonthlyCap,
            RuleRefusal::BindingDailyCap => TopUpRefusal::BindingDailyCap,
            RuleRefusal::BindingMonthlyCap => TopUpRefusal::BindingMonthlyCap,
        }
    }
}

/// Whether a top-up of `amount` fen passes the rules, or the first rule it breaks.
pub fn check(rules: &Rules, facts: &Facts, amount: Fen) -> Result<(), RuleRefusal> {
    if !facts.card_active {
        return Err(RuleRefusal::CardState);
    }
    if amount <= 0 || !rules.amounts.contains(&amount) {
        return Err(RuleRefusal::AmountNotOffered);
    }
    if amount > rules.per_topup_max {
        return Err(RuleRefusal::OverPerTopUpMaximum);
    }
    if facts.card_recent >= rules.velocity_max {
        return Err(RuleRefusal::Velocity);
    }
    let limits = [
        (facts.balance, rules.balance_ceiling, RuleRefusal::BalanceCeiling),
        (facts.card_day, rules.card_daily_cap, RuleRefusal::CardDailyCap),
        (facts.card_month, rules.card_monthly_cap, RuleRefusal::CardMonthlyCap),
        (facts.binding_day, rules.binding_daily_cap, RuleRefusal::BindingDailyCap),
        (facts.binding_month, rules.binding_monthly_cap, RuleRefusal::BindingMonthlyCap),
    ];
    for (so_far, cap, refusal) in limits {
        if so_far.checked_add(amount).is_none_or(|total| total > cap) {
            return Err(refusal);
        }
    }
    Ok(())
}

/// The offered amounts that pass the rules now, in the configured order.
pub fn allowed_amounts(rules: &Rules, facts: &Facts) -> Vec<Fen> {
    rules.amounts.iter().copied().filter(|&amount| check(rules, facts, amount).is_ok()).collect()
}

/// Unix ms of local midnight starting the business day that contains `now_ms` in `zone`.
pub fn day_start_ms(zone: Tz, now_ms: i64) -> i64 {
    start_of_day(zone, local_date(zone, now_ms))
}

/// Unix ms of local midnight starting the first day of the month that contains `now_ms` in `zone`.
pub fn month_start_ms(zone: Tz, now_ms: i64) -> i64 {
    let today = local_date(zone, now_ms);
    start_of_day(zone, today.with_day(1).unwrap_or(today))
}

fn local_date(zone: Tz, now_ms: i64) -> NaiveDate {
    // Only instants about 262,000 years away are out of chrono's range.
    let utc = DateTime::<Utc>::from_timestamp_millis(now_ms).unwrap_or(DateTime::<Utc>::MIN_UTC);
    utc.with_timezone(&zone).date_naive()
}

/// The first instant of `date` in `zone`: midnight, or, where a clock change skips midnight, the
/// first local time after the gap; of an ambiguous midnight, the earlier.
fn start_of_day(zone: Tz, date: NaiveDate) -> i64 {
    let midnight = NaiveDateTime::new(date, NaiveTime::MIN);
    let mut local = midnight;
    // Gaps are whole quarter hours and shorter than a day.
    for _ in 0..96 {
        match zone.from_local_datetime(&local) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => return t.timestamp_millis(),
            LocalResult::None => local += chrono::Duration::minutes(15),
        }
    }
    midnight.and_utc().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::kiosk::TopUpRefusal;

    fn rules() -> Rules {
        Rules::from(&TopUpConfig::default())
    }

    /// An active card with nothing on it and no top-ups yet.
    fn fresh() -> Facts {
        Facts { card_active: true, balance: 0, card_day: 0, card_month: 0, binding_day: 0, binding_month: 0, card_recent: 0 }
    }

    fn shanghai(y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
        chrono_tz::Asia::Shanghai.with_ymd_and_hms(y, m, d, h, min, 0).single().unwrap().timestamp_millis()
    }

    #[test]
    fn the_defaults_are_the_configured_ones() {
        let r = rules();
        assert_eq!(r.amounts, vec![2_000, 5_000, 10_000, 20_000]);
        assert_eq!((r.per_topup_max, r.card_daily_cap, r.card_monthly_cap), (20_000, 50_000, 200_000));
        assert_eq!((r.binding_daily_cap, r.binding_monthly_cap, r.balance_ceiling), (100_000, 300_000, 100_000));
        assert_eq!((r.velocity_max, r.velocity_window_ms, r.time_zone), (3, 600_000, chrono_tz::Asia::Shanghai));
    }

    #[test]
    fn a_fresh_card_may_take_every_offered_amount() {
        assert_eq!(check(&rules(), &fresh(), 5_000), Ok(()));
        assert_eq!(allowed_amounts(&rules(), &fresh()), vec![2_000, 5_000, 10_000, 20_000]);
    }

    #[test]
    fn an_inactive_card_is_refused_whatever_the_amount() {
        let facts = Facts { card_active: false, ..fresh() };
        assert_eq!(check(&rules(), &facts, 3), Err(RuleRefusal::CardState));
        assert!(allowed_amounts(&rules(), &facts).is_empty());
    }

    #[test]
    fn only_offered_positive_amounts() {
        for amount in [0, -2_000, 1, 2_001, 30_000] {
            assert_eq!(check(&rules(), &fresh(), amount), Err(RuleRefusal::AmountNotOffered), "{amount}");
        }
    }

    #[test]
    fn the_per_top_up_maximum_applies_to_offered_amounts_too() {
        let r = Rules { amounts: vec![20_000, 20_001], ..rules() };
        assert_eq!(check(&r, &fresh(), 20_000), Ok(()));
        assert_eq!(check(&r, &fresh(), 20_001), Err(RuleRefusal::OverPerTopUpMaximum));
    }

    #[test]
    fn velocity_refuses_the_top_up_after_the_maximum() {
        let two = Facts { card_recent: 2, ..fresh() };
        assert_eq!(check(&rules(), &two, 2_000), Ok(()));
        let three = Facts { card_recent: 3, ..fresh() };
        assert_eq!(check(&rules(), &three, 2_000), Err(RuleRefusal::Velocity));
    }

    /// Each cap: landing exactly on it passes, one fen over is refused, and the amounts offered
    /// shrink to those that fit.
    #[test]
    fn every_cap_passes_exactly_at_it_and_refuses_one_fen_over() {
        let r = Rules { amounts: vec![2_000, 2_001, 5_000], per_topup_max: 20_000, ..rules() };
        type Case = (fn(Fen) -> Facts, Fen, RuleRefusal);
        let cases: [Case; 5] = [
            (|v| Facts { balance: v, ..fresh() }, 100_000, RuleRefusal::BalanceCeiling),
            (|v| Facts { card_day: v, card_month: v, binding_day: v, binding_month: v, ..fresh() }, 50_000, RuleRefusal::CardDailyCap),
            (|v| Facts { card_month: v, binding_month: v, ..fresh() }, 200_000, RuleRefusal::CardMonthlyCap),
            (|v| Facts { binding_day: v, binding_month: v, ..fresh() }, 100_000, RuleRefusal::BindingDailyCap),
            (|v| Facts { binding_month: v, ..fresh() }, 300_000, RuleRefusal::BindingMonthlyCap),
        ];
        for (facts, cap, refusal) in cases {
            let f = facts(cap - 2_000);
            assert_eq!(check(&r, &f, 2_000), Ok(()), "{refusal:?}: exactly at the cap");
            assert_eq!(check(&r, &f, 2_001), Err(refusal), "{refusal:?}: one fen over");
            assert_eq!(allowed_amounts(&r, &f), vec![2_000], "{refusal:?}");
            assert!(allowed_amounts(&r, &facts(cap)).is_empty(), "{refusal:?}: at the cap already");
        }
    }

    #[test]
    fn sums_that_would_overflow_are_refused_not_wrapped() {
        let facts = Facts { balance: i64::MAX, ..fresh() };
        assert_eq!(check(&rules(), &facts, 2_000), Err(RuleRefusal::BalanceCeiling));
    }

    #[test]
    fn the_first_broken_rule_is_the_one_given() {
        let everything = Facts { card_recent: 9, balance: 99_000, card_day: 49_000, card_month: 199_000, binding_day: 99_000, binding_month: 299_000, ..fresh() };
        assert_eq!(check(&rules(), &everything, 2_000), Err(RuleRefusal::Velocity));
        let no_velocity = Facts { card_recent: 0, ..everything };
        assert_eq!(check(&rules(), &no_velocity, 2_000), Err(RuleRefusal::BalanceCeiling));
        let room_on_card = Facts { balance: 0, ..no_velocity };
        assert_eq!(check(&rules(), &room_on_card, 2_000), Err(RuleRefusal::CardDailyCap));
    }

    #[test]
    fn refusals_have_stable_codes_that_are_the_kiosk_reasons() {
        let all = [
            (RuleRefusal::CardState, TopUpRefusal::CardState),
            (RuleRefusal::AmountNotOffered, TopUpRefusal::AmountNotOffered),
            (RuleRefusal::OverPerTopUpMaximum, TopUpRefusal::OverPerTopUpMaximum),
            (RuleRefusal::Velocity, TopUpRefusal::Velocity),
            (RuleRefusal::BalanceCeiling, TopUpRefusal::BalanceCeiling),
            (RuleRefusal::CardDailyCap, TopUpRefusal::CardDailyCap),
            (RuleRefusal::CardMonthlyCap, TopUpRefusal::CardMonthlyCap),
            (RuleRefusal::BindingDailyCap, TopUpRefusal::BindingDailyCap),
            (RuleRefusal::BindingMonthlyCap, TopUpRefusal::BindingMonthlyCap),
        ];
        for (refusal, wire) in all {
            assert_eq!(TopUpRefusal::from(refusal), wire);
            assert_eq!(serde_json::to_string(&wire).unwrap(), format!("\"{}\"", refusal.code()));
        }
    }

    #[test]
    fn the_business_day_starts_at_midnight_in_shanghai() {
        // 2026-03-05 00:30 in Shanghai is 2026-03-04 16:30 UTC: already the 5th.
        let now = shanghai(2026, 3, 5, 0, 30);
        assert_eq!(day_start_ms(chrono_tz::Asia::Shanghai, now), shanghai(2026, 3, 5, 0, 0));
        assert_eq!(day_start_ms(chrono_tz::UTC, now), Utc.with_ymd_and_hms(2026, 3, 4, 0, 0, 0).unwrap().timestamp_millis());
        let last_ms_of_day = shanghai(2026, 3, 6, 0, 0) - 1;
        assert_eq!(day_start_ms(chrono_tz::Asia::Shanghai, last_ms_of_day), shanghai(2026, 3, 5, 0, 0));
    }

    #[test]
    fn the_month_turns_at_local_midnight_of_the_first_in_shanghai() {
        let zone = chrono_tz::Asia::Shanghai;
        let first = shanghai(2026, 4, 1, 0, 0);
        // One millisecond before: still March (though 2026-03-31 16:00 UTC onwards is April there).
        assert_eq!(month_start_ms(zone, first - 1), shanghai(2026, 3, 1, 0, 0));
        assert_eq!(month_start_ms(zone, first), first);
        assert_eq!(month_start_ms(zone, shanghai(2026, 4, 30, 23, 59)), first);
        // In UTC terms the Shanghai month starts the evening before.
        assert_eq!(first, Utc.with_ymd_and_hms(2026, 3, 31, 16, 0, 0).unwrap().timestamp_millis());
        // Across a year.
        assert_eq!(month_start_ms(zone, shanghai(2027, 1, 1, 0, 0) - 1), shanghai(2026, 12, 1, 0, 0));
        assert_eq!(month_start_ms(zone, shanghai(2027, 1, 1, 0, 0)), shanghai(2027, 1, 1, 0, 0));
    }

    #[test]
    fn windows_for_an_instant() {
        let now = Timestamp(shanghai(2026, 5, 1, 0, 5));
        let w = rules().windows(now);
        assert_eq!(w.day_start, Timestamp(shanghai(2026, 5, 1, 0, 0)));
        assert_eq!(w.month_start, w.day_start);
        // The velocity window reaches back into April.
        assert_eq!(w.velocity_since, Timestamp(shanghai(2026, 4, 30, 23, 55)));
        assert_eq!(rules().business_date(now), NaiveDate::from_ymd_opt(2026, 5, 1).unwrap());
    }

    #[test]
    fn a_day_whose_midnight_is_skipped_starts_after_the_gap() {
        // America/Sao_Paulo moved its clocks from 00:00 to 01:00 on 2018-11-04.
        let zone = chrono_tz::America::Sao_Paulo;
        let noon = zone.with_ymd_and_hms(2018, 11, 4, 12, 0, 0).single().unwrap().timestamp_millis();
        let one = zone.with_ymd_and_hms(2018, 11, 4, 1, 0, 0).single().unwrap().timestamp_millis();
        assert_eq!(day_start_ms(zone, noon), one);
    }

    #[test]
    fn facts_come_from_the_stored_totals() {
        let totals = TopUpTotals { card_day: 1, card_month: 2, binding_day: 3, binding_month: 4, card_recent: 5 };
        let facts = Facts::new(true, 700, &totals);
        assert_eq!(facts, Facts { card_active: true, balance: 700, card_day: 1, card_month: 2, binding_day: 3, binding_month: 4, card_recent: 5 });
    }
}
