//! Job ids in Salt's format (`YYYYmmddHHMMSSffffff`, local time unless `utc_jid`), generated
//! by Brine so that waiters can register for a job before it is published.
//!
//! The master accepts a jid passed in a publish load as is. Two jids from one process never
//! repeat: a jid that would not be greater than the previous one is bumped by a microsecond.

use std::sync::Mutex;

use chrono::{Local, NaiveDateTime, Utc};

static LAST: Mutex<Option<NaiveDateTime>> = Mutex::new(None);

/// A new jid, greater than every jid this process made before.
pub fn gen_jid(utc: bool) -> String {
    let now = if utc {
        Utc::now().naive_utc()
    } else {
        Local::now().naive_local()
    };
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let next = match *last {
        Some(prev) if now <= prev => prev + chrono::Duration::microseconds(1),
        _ => now,
    };
    *last = Some(next);
    next.format("%Y%m%d%H%M%S%6f").to_string()
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
}
