//! Behaviour knobs of the swarm: how long functions take, which minions never answer and
//! which ones drop off and come back.
//!
//! * `--latency [FUN=]MIN[..MAX]` (repeatable): a fixed delay or a uniform range before a
//!   function answers; durations take `ms` or `s` (plain numbers are seconds). A `FUN=`
//!   entry applies to that function; one without is the default.
//! * `--silent PERCENT` and `--flap PERCENT` pick minions spread evenly over the ids:
//!   minion `i` (1-based) of `n` is picked when `floor(i * p / 100)` steps up at `i`, so
//!   exactly `floor(n * p / 100)` are picked, and the picks are reproducible (a test can
//!   compute them with [`picked`]).

use std::time::Duration;

/// A delay: fixed or a uniform range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Delay {
    /// Shortest.
    pub min: Duration,
    /// Longest.
    pub max: Duration,
}

impl Delay {
    /// No delay.
    pub const ZERO: Delay = Delay {
        min: Duration::ZERO,
        max: Duration::ZERO,
    };

    /// One draw.
    pub fn draw(&self) -> Duration {
        if self.max <= self.min {
            return self.min;
        }
        let span = (self.max - self.min).as_micros() as u64;
        self.min + Duration::from_micros(rand::random_range(0..=span))
    }
}

/// Parses `250ms`, `1.5s`, `2` (seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (like 20ms, 1.5s or 2)"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

/// Latencies per function.
#[derive(Clone, Debug, Default)]
pub struct Latency {
    default: Option<Delay>,
    per_function: Vec<(String, Delay)>,
}

impl Latency {
    /// Parses the `--latency` values.
    pub fn parse(specs: &[String]) -> Result<Latency, String> {
        let mut out = Latency::default();
        for spec in specs {
            let (fun, range) = match spec.split_once('=') {
                Some((f, r)) => (Some(f.trim().to_owned()), r),
                None => (None, spec.as_str()),
            };
            let delay = match range.split_once("..") {
                Some((a, b)) => Delay {
                    min: parse_duration(a)?,
                    max: parse_duration(b)?,
                },
                None => {
                    let d = parse_duration(range)?;
                    Delay { min: d, max: d }
                }
            };
            if delay.max < delay.min {
                return Err(format!("--latency {spec}: the range is backwards"));
            }
            match fun {
                Some(f) => out.per_function.push((f, delay)),
                None => out.default = Some(delay),
            }
        }
        Ok(out)
    }

    /// The delay of `fun`.
    pub fn for_function(&self, fun: &str) -> Delay {
        self.per_function
            .iter()
            .find(|(f, _)| f == fun)
            .map(|(_, d)| *d)
            .or(self.default)
            .unwrap_or(Delay::ZERO)
    }
}

/// Whether minion `index` (1-based) is among the `percent` picked (see the module notes).
pub fn picked(index: u32, percent: f64) -> bool {
    if percent <= 0.0 || index == 0 {
        return false;
    }
    let step = |i: u32| (f64::from(i) * percent / 100.0).floor();
    step(index) != step(index - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_latency_specs() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
        let l = Latency::parse(&["10ms..20ms".into(), "test.ping=5ms".into()]);
        let Ok(l) = l else { panic!("parse") };
        assert_eq!(l.for_function("test.ping").draw(), Duration::from_millis(5));
        let d = l.for_function("grains.items").draw();
        assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(20));
        assert!(Latency::parse(&["2s..1s".into()]).is_err());
        assert_eq!(Latency::default().for_function("x"), Delay::ZERO);
    }

    #[test]
    fn picks_are_spread_and_counted() {
        let picks: Vec<u32> = (1..=50).filter(|i| picked(*i, 10.0)).collect();
        assert_eq!(picks, vec![10, 20, 30, 40, 50]);
        assert_eq!((1..=1000).filter(|i| picked(*i, 2.5)).count(), 25);
        assert_eq!((1..=7).filter(|i| picked(*i, 100.0)).count(), 7);
        assert!(!(1..=100).any(|i| picked(i, 0.0)));
    }
}
