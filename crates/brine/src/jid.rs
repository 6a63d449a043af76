//! Job ids in Salt's format (`YYYYmmddHHMMSSffffff`, local time unless `utc_jid`), generated
//! by Brine so that waiters can register for a job before it is published.
//!
//! The master accepts a jid passed in a publish load as is. Two jids from one process never
//! repeat: a jid that would not be greater than the previous one is bumped by a microsecond.
//! The comparison is made at the jid's own precision (microseconds): two calls within one
//! microsecond once got the same jid, and two requests then shared one job.

use std::sync::Mutex;

use chrono::{Local, NaiveDateTime, Timelike, Utc};

static LAST: Mutex<Option<NaiveDateTime>> = Mutex::new(None);

/// A new jid, greater than every jid this process made before.
pub fn gen_jid(utc: bool) -> String {
    let now = if utc {
        Utc::now().naive_utc()
    } else {
        Local::now().naive_local()
    };
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let next = next_after(*last, now);
    *last = Some(next);
    next.format("%Y%m%d%H%M%S%6f").to_string()
}

/// The time of the next jid: `now` cut to whole microseconds, or a microsecond after `prev`
/// when that is not later.
fn next_after(prev: Option<NaiveDateTime>, now: NaiveDateTime) -> NaiveDateTime {
    let now = now
        .with_nanosecond(now.nanosecond() / 1000 * 1000)
        .unwrap_or(now);
    match prev {
        Some(prev) if now <= prev => prev + chrono::Duration::microseconds(1),
        _ => now,
    }
}

/// `salt.utils.jid.is_jid`: 20 digits, optionally followed by `_<pid>`.
pub fn is_jid(text: &str) -> bool {
    let head = text.split('_').next().unwrap_or("");
    head.len() == 20 && head.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jids_are_20_digits_and_strictly_increasing() {
        let mut prev = String::new();
        for _ in 0..1000 {
            let j = gen_jid(false);
            assert_eq!(j.len(), 20);
            assert!(is_jid(&j));
            assert!(j > prev, "{j} <= {prev}");
            prev = j;
        }
        assert!(!is_jid("2026"));
        assert!(is_jid("20261126092012564887_123"));
    }

    #[test]
    fn two_calls_within_one_microsecond_get_two_jids() {
        let at = |ns: u32| {
            chrono::NaiveDate::from_ymd_opt(2026, 11, 27)
                .and_then(|d| d.and_hms_nano_opt(7, 52, 8, 400_106_000 + ns))
                .unwrap_or_default()
        };
        let fmt = |t: NaiveDateTime| t.format("%Y%m%d%H%M%S%6f").to_string();
        let first = next_after(None, at(200));
        let second = next_after(Some(first), at(700));
        assert_eq!(fmt(first), "20261127075208400106");
        assert_eq!(fmt(second), "20261127075208400107");
        // Later clock readings are taken as they are.
        assert_eq!(
            fmt(next_after(Some(second), at(5_000))),
            "20261127075208400111"
        );
    }

    #[test]
    fn jids_made_at_once_on_many_threads_are_all_different() {
        let threads: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(|| (0..2000).map(|_| gen_jid(false)).collect::<Vec<_>>()))
            .collect();
        let mut all = std::collections::HashSet::new();
        for t in threads {
            for j in t.join().unwrap_or_default() {
                assert!(all.insert(j.clone()), "{j} made twice");
            }
        }
        assert_eq!(all.len(), 16_000);
    }
}
