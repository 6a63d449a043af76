//! Login throttling: a per-client-address token bucket in front of `/login` and `/token`.
//!
//! Every attempt (or, with `login_rate_limit_failures_only`, every refused one) takes a token
//! from the bucket of the caller's address; the bucket refills at `login_rate_limit` tokens a
//! minute up to `login_burst`. An attempt that finds the bucket empty is answered 429 with
//! `Retry-After` before anything reaches the master, so a password-guessing client costs the
//! master's eauth backend (PAM, LDAP) nothing past its allowance. IPv6 callers are keyed by
//! their /64, which one host usually owns whole. The buckets live in an LRU map of bounded
//! size, so a flood of addresses cannot grow memory; an address pushed out starts again with
//! a full bucket.
//!
//! Hand-rolled rather than `governor`: its keyed limiter grows with every key until pruned
//! and counts every call, while this needs a bounded map and "failed attempts only".

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

/// Addresses tracked at most.
const TRACKED: usize = 65_536;

/// One address's allowance.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The throttle (see the module notes).
pub struct LoginThrottle {
    per_sec: f64,
    burst: f64,
    failures_only: bool,
    buckets: Mutex<LruCache<IpAddr, Bucket>>,
}

/// What the throttle says of an attempt.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Go ahead.
    Allowed,
    /// Refuse; the client may retry after this long.
    Limited(Duration),
}

impl LoginThrottle {
    /// A throttle allowing `per_minute` attempts a minute per address with bursts of `burst`;
    /// `None` when `per_minute` is 0 (throttling off).
    pub fn new(per_minute: u64, burst: u64, failures_only: bool) -> Option<LoginThrottle> {
        if per_minute == 0 {
            return None;
        }
        Some(LoginThrottle {
            per_sec: per_minute as f64 / 60.0,
            burst: burst.max(1) as f64,
            failures_only,
            buckets: Mutex::new(LruCache::new(
                NonZeroUsize::new(TRACKED).unwrap_or(NonZeroUsize::MIN),
            )),
        })
    }

    fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
                }
            },
        }
    }

    /// The bucket of `ip`, refilled up to now.
    fn refill(&self, buckets: &mut LruCache<IpAddr, Bucket>, ip: IpAddr, now: Instant) -> Bucket {
        let b = buckets.get(&ip).copied().unwrap_or(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        Bucket {
            tokens: (b.tokens + elapsed * self.per_sec).min(self.burst),
            at: now,
        }
    }

    /// Called before an attempt: is there a token left for `ip`? Takes it unless only failures
    /// count.
    pub fn check(&self, ip: IpAddr) -> Verdict {
        self.check_at(Self::key(ip), Instant::now())
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Verdict {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Verdict::Allowed;
        };
        let mut b = self.refill(&mut buckets, ip, now);
        let verdict = if b.tokens >= 1.0 {
            if !self.failures_only {
                b.tokens -= 1.0;
            }
            Verdict::Allowed
        } else {
            let wait = (1.0 - b.tokens) / self.per_sec;
            Verdict::Limited(Duration::from_secs_f64(wait.ceil().max(1.0)))
        };
        buckets.put(ip, b);
        verdict
    }

    /// Called after an attempt the master refused: with `failures_only`, this is what costs
    /// a token.
    pub fn failed(&self, ip: IpAddr) {
        if self.failures_only {
            self.failed_at(Self::key(ip), Instant::now());
        }
    }

    fn failed_at(&self, ip: IpAddr, now: Instant) {
        if let Ok(mut buckets) = self.buckets.lock() {
            let mut b = self.refill(&mut buckets, ip, now);
            b.tokens = (b.tokens - 1.0).max(0.0);
            buckets.put(ip, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn a_burst_then_the_rate() {
        let t = LoginThrottle::new(60, 3, false);
        let Some(t) = t else { panic!("throttle off") };
        let now = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(t.check_at(a, now), Verdict::Allowed);
        }
        assert_eq!(t.check_at(a, now), Verdict::Limited(Duration::from_secs(1)));
        // Another address has its own bucket.
        assert_eq!(t.check_at(ip("192.0.2.2"), now), Verdict::Allowed);
        // One token a second comes back.
        assert_eq!(
            t.check_at(a, now + Duration::from_millis(1100)),
            Verdict::Allowed
        );
        assert!(matches!(
            t.check_at(a, now + Duration::from_millis(1200)),
            Verdict::Limited(_)
        ));
    }

    #[test]
    fn retry_after_says_when_a_token_is_back() {
        let Some(t) = LoginThrottle::new(6, 1, false) else {
            panic!("throttle off")
        };
        let now = Instant::now();
        let a = ip("192.0.2.1");
        assert_eq!(t.check_at(a, now), Verdict::Allowed);
        assert_eq!(
            t.check_at(a, now),
            Verdict::Limited(Duration::from_secs(10))
        );
    }

    #[test]
    fn failures_only_counts_refused_attempts() {
        let Some(t) = LoginThrottle::new(60, 2, true) else {
            panic!("throttle off")
        };
        let now = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..10 {
            assert_eq!(t.check_at(a, now), Verdict::Allowed);
        }
        t.failed_at(a, now);
        t.failed_at(a, now);
        assert!(matches!(t.check_at(a, now), Verdict::Limited(_)));
    }

    #[test]
    fn ipv6_hosts_share_their_64_and_mapped_v4_is_v4() {
        assert_eq!(
            LoginThrottle::key(ip("2001:db8:1:2:aaaa::1")),
            LoginThrottle::key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            LoginThrottle::key(ip("2001:db8:1:2::1")),
            LoginThrottle::key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(LoginThrottle::key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn zero_rate_is_off() {
        assert!(LoginThrottle::new(0, 10, false).is_none());
    }
}
