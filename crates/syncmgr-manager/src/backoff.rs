//! Backoff: a registration whose automatic session failed waits before the
//! next automatic one, `initial` doubling up to `max`, stretched by a stable
//! jitter of up to 10 % (from a hash of the name and the failure count, so
//! that many registrations that fail together do not all retry together,
//! and a restart does not re-roll it). A success or a manual sync resets
//! it; a manual sync is never held back by it.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The constants (`[backoff]` in `config.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The first wait.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
}

/// One registration's backoff.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
    until: Option<DateTime<Utc>>,
}

impl Backoff {
    /// An automatic session of `name` failed at `now`: the wait grows.
    pub fn failed(&mut self, name: &str, now: DateTime<Utc>, policy: Policy) {
        self.failures = self.failures.saturating_add(1);
        let wait = delay(name, self.failures, policy);
        self.until = Some(now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX));
    }

    /// A success, a manual sync or a network connect: no more waiting.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }

    /// Until when automatic sessions wait, if they still do at `now`.
    pub fn until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.until.filter(|until| *until > now)
    }

    /// Failures in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// The wait after the `failures`-th failure in a row.
pub fn delay(name: &str, failures: u32, policy: Policy) -> Duration {
    let doublings = failures.saturating_sub(1).min(32);
    let base = policy
        .initial
        .checked_mul(1u32 << doublings.min(31))
        .unwrap_or(policy.max)
        .min(policy.max);
    // Up to 10 % more, stable for this name and count.
    let hash = blake3::hash(format!("{name}\0{failures}").as_bytes());
    let per_mille = u64::from(u16::from_le_bytes([hash.as_bytes()[0], hash.as_bytes()[1]]) % 101);
    let extra_ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX) / 1000 * per_mille;
    base + Duration::from_millis(extra_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        initial: Duration::from_secs(30),
        max: Duration::from_secs(3600),
    };

    fn within_jitter(got: Duration, base: Duration) -> bool {
        got >= base && got <= base + base / 10
    }

    #[test]
    fn the_wait_doubles_up_to_the_max_with_a_stable_jitter() {
        for (failures, base) in [(1, 30), (2, 60), (3, 120), (7, 1920), (8, 3600), (40, 3600)] {
            let got = delay("mail", failures, POLICY);
            assert!(
                within_jitter(got, Duration::from_secs(base)),
                "failure {failures}: {got:?}"
            );
            assert_eq!(got, delay("mail", failures, POLICY), "stable");
        }
        // Not every name waits the same, and the jitter uses its 10 %.
        let waits: Vec<_> = (0..40)
            .map(|i| delay(&format!("h{i}"), 3, POLICY))
            .collect();
        let base = Duration::from_secs(120);
        assert!(waits.iter().any(|w| *w > base + base / 20), "{waits:?}");
        assert!(waits.iter().all(|w| within_jitter(*w, base)), "{waits:?}");
    }

    #[test]
    fn failures_grow_the_wait_and_a_reset_clears_it() {
        let t0 = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut b = Backoff::default();
        assert_eq!(b.until(t0), None);
        b.failed("mail", t0, POLICY);
        let first = b.until(t0).expect("waiting");
        assert!(within_jitter(
            (first - t0).to_std().unwrap(),
            Duration::from_secs(30)
        ));
        // Over once the time has come.
        assert_eq!(b.until(first), None);
        b.failed("mail", first, POLICY);
        let second = b.until(first).expect("waiting");
        assert!(within_jitter(
            (second - first).to_std().unwrap(),
            Duration::from_secs(60)
        ));
        assert_eq!(b.failures(), 2);
        b.reset();
        assert_eq!(b.until(first), None);
        assert_eq!(b.failures(), 0);

        // Other constants (from config.toml) are honoured.
        let policy = Policy {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(8),
        };
        b.failed("mail", t0, policy);
        b.failed("mail", t0, policy);
        let capped = (b.until(t0).unwrap() - t0).to_std().unwrap();
        assert!(within_jitter(capped, Duration::from_secs(8)), "{capped:?}");
    }
}
