//! When an unanswered thread is due, and what is sent again.
//!
//! A pod with `respond_within` expects a first reply within that much
//! business time: every hour of every day, or only the hours of
//! `business_hours` (`"Mon-Fri 08:00-17:00"`) read in `time_zone` (from
//! the system's time zone database, through jiff). A thread
//! with no reply by then is sent again to the pod, and to `escalate_to`
//! when set, once. [`due_at`] is pure over the time a thread opened, so
//! tests give it any clock; the daemon checks the waiting threads on a
//! timer ([`crate::daemon`]).

use std::time::{Duration, SystemTime};

use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::config::Respond;

/// How far ahead [`due_at`] looks for business hours before giving up.
const MAX_DAYS: u32 = 3 * 366;

/// `business_hours`: the week days and the daily window they are open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusinessHours {
    /// Open days, Monday first.
    pub days: [bool; 7],
    /// Opening time, minutes after midnight.
    pub open: u32,
    /// Closing time, minutes after midnight (after `open`).
    pub close: u32,
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl BusinessHours {
    /// Parses `"Mon-Fri 08:00-17:00"`; days may be a list of days and
    /// ranges (`"Mon,Wed,Fri"`, `"Mon-Thu,Sat"`).
    pub fn parse(text: &str) -> Result<BusinessHours, String> {
        let hint = "is not like \"Mon-Fri 08:00-17:00\"";
        let mut words = text.split_whitespace();
        let (Some(days), Some(times), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!("{text:?} {hint}"));
        };
        let mut open_days = [false; 7];
        for part in days.split(',') {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (Some(a), Some(b)) = (day_index(a), day_index(b)) else {
                return Err(format!("{text:?}: unknown day in {part:?}"));
            };
            let mut d = a;
            loop {
                open_days[d] = true;
                if d == b {
                    break;
                }
                d = (d + 1) % 7;
            }
        }
        let (open, close) = times
            .split_once('-')
            .ok_or_else(|| format!("{text:?} {hint}"))?;
        let (open, close) = (minutes(open), minutes(close));
        let (Some(open), Some(close)) = (open, close) else {
            return Err(format!("{text:?}: times must be HH:MM, 00:00 to 24:00"));
        };
        if open >= close {
            return Err(format!("{text:?}: the day must open before it closes"));
        }
        Ok(BusinessHours {
            days: open_days,
            open,
            close,
        })
    }

    fn is_open_on(&self, day: Weekday) -> bool {
        let index = usize::try_from(day.to_monday_zero_offset()).unwrap_or(0);
        self.days[index % 7]
    }
}

fn day_index(name: &str) -> Option<usize> {
    let name = name.trim().to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .position(|d| name.starts_with(d) && name.len() <= 9)
}

fn minutes(text: &str) -> Option<u32> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    let total = h * 60 + m;
    (m < 60 && total <= 24 * 60).then_some(total)
}

/// When a thread that opened at `opened` is due for escalation: `within`
/// of business time later. `None` when the calendar has no open hour in
/// the next three years.
pub fn due_at(opened: SystemTime, respond: &Respond) -> Option<SystemTime> {
    let Some(hours) = respond.hours else {
        return opened.checked_add(respond.within);
    };
    let tz = &respond.time_zone;
    let local = tz.to_datetime(Timestamp::try_from(opened).ok()?);
    let mut left = SignedDuration::try_from(respond.within).ok()?;
    let mut day = local.date();
    let mut from = local.time();
    for _ in 0..MAX_DAYS {
        if hours.is_open_on(day.weekday()) {
            let (open, close) = (at_minute(day, hours.open)?, at_minute(day, hours.close)?);
            let start = open.max(DateTime::from_parts(day, from));
            if start < close {
                let available = start.duration_until(close);
                if left <= available {
                    return to_system(tz, start.checked_add(left).ok()?);
                }
                left -= available;
            }
        }
        day = day.tomorrow().ok()?;
        from = Time::midnight();
    }
    None
}

/// Whether a thread opened at `opened` is due at `now`.
pub fn is_due(opened: SystemTime, respond: &Respond, now: SystemTime) -> bool {
    due_at(opened, respond).is_some_and(|due| due <= now)
}

/// A local time `minute` minutes after midnight of `day` (24:00 is the
/// next midnight).
fn at_minute(day: Date, minute: u32) -> Option<DateTime> {
    let midnight = DateTime::from_parts(day, Time::midnight());
    midnight
        .checked_add(SignedDuration::from_mins(i64::from(minute)))
        .ok()
}

/// A local wall-clock time as a point in time; in a DST gap, the time the
/// clock jumps to, in an overlap the earlier one.
fn to_system(tz: &TimeZone, local: DateTime) -> Option<SystemTime> {
    let at = tz.to_ambiguous_timestamp(local).compatible().ok()?;
    Some(at.into())
}

/// Looks up an IANA time zone (`"America/Edmonton"`) in the system's
/// time zone database (`/usr/share/zoneinfo`).
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name.trim()).map_err(|e| e.to_string())
}

/// `"unanswered for 4h"`: the mark an escalated copy carries.
pub fn label(within: Duration) -> String {
    format!("unanswered for {}", humantime::format_duration(within))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn respond(within: &str, hours: Option<&str>, tz: &str) -> Respond {
        Respond {
            within: humantime::parse_duration(within).unwrap(),
            hours: hours.map(|h| BusinessHours::parse(h).unwrap()),
            time_zone: time_zone(tz).unwrap(),
            escalate_to: None,
        }
    }

    fn t(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    #[test]
    fn parses_business_hours() {
        let h = BusinessHours::parse("Mon-Fri 08:00-17:00").unwrap();
        assert_eq!(h.days, [true, true, true, true, true, false, false]);
        assert_eq!((h.open, h.close), (480, 1020));
        let h = BusinessHours::parse("sat,Sun 10:00-24:00").unwrap();
        assert_eq!(h.days, [false, false, false, false, false, true, true]);
        let h = BusinessHours::parse("Fri-Mon 09:00-10:00").unwrap();
        assert_eq!(h.days, [true, false, false, false, true, true, true]);
        for bad in [
            "Mon-Fri",
            "Mon-Fri 17:00-08:00",
            "Mon-Xyz 08:00-17:00",
            "Mon 8-17",
            "Mon 08:00-25:00",
            "Mon 08:00-17:00 extra",
        ] {
            assert!(BusinessHours::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn without_business_hours_every_hour_counts() {
        let r = respond("4h", None, "UTC");
        let due = due_at(t("2026-12-05T22:00:00Z"), &r).unwrap();
        assert_eq!(due, t("2026-12-06T02:00:00Z"));
    }

    #[test]
    fn business_hours_skip_nights_and_weekends() {
        // Edmonton is UTC-7 in December. Friday 15:00 local, 4h: two hours
        // on Friday, two on Monday from 08:00.
        let r = respond("4h", Some("Mon-Fri 08:00-17:00"), "America/Edmonton");
        let friday = t("2026-12-04T22:00:00Z");
        let due = due_at(friday, &r).unwrap();
        assert_eq!(due, t("2026-12-07T17:00:00Z")); // Monday 10:00 local
        assert!(!is_due(friday, &r, t("2026-12-07T16:59:00Z")));
        assert!(is_due(friday, &r, t("2026-12-07T17:00:00Z")));
    }

    #[test]
    fn mail_before_opening_counts_from_opening() {
        let r = respond("1h", Some("Mon-Fri 08:00-17:00"), "UTC");
        let due = due_at(t("2026-12-07T03:00:00Z"), &r).unwrap();
        assert_eq!(due, t("2026-12-07T09:00:00Z"));
        // After closing on Friday: Monday 09:00.
        let due = due_at(t("2026-12-04T18:00:00Z"), &r).unwrap();
        assert_eq!(due, t("2026-12-07T09:00:00Z"));
    }

    #[test]
    fn a_wait_longer_than_a_day_spans_days() {
        let r = respond("12h", Some("Mon-Fri 08:00-17:00"), "UTC");
        // Monday 08:00 + 9h Monday + 3h Tuesday = Tuesday 11:00.
        let due = due_at(t("2026-12-07T08:00:00Z"), &r).unwrap();
        assert_eq!(due, t("2026-12-08T11:00:00Z"));
    }

    #[test]
    fn the_label_says_how_long() {
        assert_eq!(label(Duration::from_secs(4 * 3600)), "unanswered for 4h");
    }
}
