//! Schedules: when each one is due, as pure functions of the wall clock.
//!
//! The daemon's timer passes the wall time it reads; tests pass any time, so
//! every rule below is checked without waiting (`tests` at the bottom):
//!
//! - `--every D` is due D after its previous run started (the first time, D
//!   after it was added), like systemd's `OnUnitActiveSec`; `--cron EXPR` at
//!   the expression's next instant after the previous run, in its time zone
//!   (croner's rules for DST: a time skipped by the spring change runs at
//!   the next valid instant, a repeated one once).
//! - **Catch-up once.** What is due is computed from the last run, so a
//!   schedule that missed several runs (the daemon down, the machine asleep,
//!   the clock moved forward) is due once; running it records a new last
//!   run, after which the next instant is in the future again. With
//!   `--no-catch-up`, missed runs are dropped: it waits for the next instant
//!   after now.
//! - **A last run in the future** (the clock moved back) counts as now, so
//!   a schedule is never stuck waiting for a time that already passed.
//! - **Jitter** is a stable offset per schedule (from a hash of its name),
//!   the same after every restart: never re-rolled.
//!
//! The daemon sleeps until the earliest due time, but never longer than
//! [`MAX_SLEEP`]: the sleep runs on the monotonic clock, which stops while
//! the machine is suspended and knows nothing of wall-clock changes, so the
//! wall time is looked at again at least that often.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use syncmgr_store::{ScheduleRecord, ScheduleWhen};

use crate::error::{ManagerError, Result};

/// The longest the daemon sleeps without looking at the wall clock.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);
/// How late a run may be and still count as on time for a schedule that
/// does not catch up (the daemon looks at least every [`MAX_SLEEP`]).
pub const ON_TIME: Duration = Duration::from_secs(90);
/// The shortest `--every`.
pub const MIN_EVERY: Duration = Duration::from_secs(1);

/// A schedule ready to answer "when are you due?".
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Its name.
    pub name: String,
    when: When,
    offset: Duration,
    catch_up: bool,
    created: DateTime<Utc>,
    last_run: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
enum When {
    Every(chrono::Duration),
    Cron { cron: Box<Cron>, zone: Zone },
}

/// The time zone of a cron schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// The machine's zone, as it is when the schedule is evaluated.
    Local,
    /// A named (IANA) zone.
    Named(chrono_tz::Tz),
}

/// Parses a cron expression of 5 fields (minute first) or 6 (seconds
/// first), as a usage error naming what is wrong.
pub fn parse_cron(expr: &str) -> Result<Cron> {
    let fields = expr.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(ManagerError::usage(format!(
            "cron expression {expr:?} has {fields} fields; it needs 5 (minute hour day month weekday) or 6 (seconds first)"
        )));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(expr)
        .map_err(|e| ManagerError::usage(format!("cron expression {expr:?} is not valid: {e}")))
}

/// Parses an IANA time zone name (`Europe/Berlin`, `UTC`).
pub fn parse_zone(name: &str) -> Result<chrono_tz::Tz> {
    chrono_tz::Tz::from_str(name).map_err(|_| {
        ManagerError::usage(format!(
            "unknown time zone {name:?} (use an IANA name such as Europe/Berlin or UTC)"
        ))
    })
}

/// The stable jitter offset of schedule `name`: in `[0, jitter)`, from a
/// hash of the name, so a restart never moves it.
pub fn jitter_offset(name: &str, jitter: Duration) -> Duration {
    let millis = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return Duration::ZERO;
    }
    let hash = blake3::hash(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    Duration::from_millis(u64::from_le_bytes(first) % millis)
}

impl Schedule {
    /// A stored schedule, checked again (the store may hold what an older
    /// version accepted, or what was edited by hand).
    pub fn from_record(record: &ScheduleRecord) -> Result<Schedule> {
        let when = match &record.when {
            ScheduleWhen::Every(every) => {
                if *every < MIN_EVERY {
                    return Err(ManagerError::usage(format!(
                        "schedule {}: --every must be at least 1s",
                        record.name
                    )));
                }
                When::Every(chrono::Duration::from_std(*every).map_err(|_| {
                    ManagerError::usage(format!("schedule {}: --every is too long", record.name))
                })?)
            }
            ScheduleWhen::Cron { expr, timezone } => When::Cron {
                cron: Box::new(parse_cron(expr)?),
                zone: match timezone {
                    None => Zone::Local,
                    Some(name) => Zone::Named(parse_zone(name)?),
                },
            },
        };
        Ok(Schedule {
            name: record.name.clone(),
            when,
            offset: jitter_offset(&record.name, record.jitter),
            catch_up: record.catch_up,
            created: record.created,
            last_run: record.last_run,
        })
    }

    /// When it is due, seen at `now`: a time at or before `now` means "run
    /// now" (once, however many runs were missed); `None` when it never
    /// runs again (a cron expression with no future instant).
    pub fn due(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // A last run in the future (the clock went back) counts as now.
        let base = self.last_run.unwrap_or(self.created).min(now);
        let offset = chrono::Duration::from_std(self.offset).unwrap_or_default();
        let due = self.after(base)? + offset;
        if self.catch_up || due + chrono::Duration::from_std(ON_TIME).unwrap_or_default() >= now {
            return Some(due);
        }
        // Missed, and not made up: the first instant still ahead.
        Some(self.first_at_or_after(base, now - offset)? + offset)
    }

    /// The first instant strictly after `t`.
    fn after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.when {
            When::Every(every) => t.checked_add_signed(*every),
            When::Cron { cron, zone } => next_instant(cron, *zone, t, false),
        }
    }

    /// The first instant of the schedule's rhythm from `base` that is at or
    /// after `t`.
    fn first_at_or_after(&self, base: DateTime<Utc>, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.when {
            When::Every(every) => {
                let every_ms = every.num_milliseconds().max(1);
                // Both are non-negative: u64's div_ceil is stable.
                let behind = (t - base).num_milliseconds().max(0).unsigned_abs();
                let steps = behind.div_ceil(every_ms.unsigned_abs()).max(1);
                let steps = i64::try_from(steps).ok()?;
                base.checked_add_signed(chrono::Duration::milliseconds(
                    steps.checked_mul(every_ms)?,
                ))
            }
            When::Cron { cron, zone } => next_instant(cron, *zone, t, true),
        }
    }

    /// Records a run that started at `at`.
    pub fn ran(&mut self, at: DateTime<Utc>) {
        self.last_run = Some(at);
    }
}

fn next_instant(
    cron: &Cron,
    zone: Zone,
    t: DateTime<Utc>,
    inclusive: bool,
) -> Option<DateTime<Utc>> {
    fn in_zone<Z: TimeZone>(
        cron: &Cron,
        zone: &Z,
        t: DateTime<Utc>,
        inclusive: bool,
    ) -> Option<DateTime<Utc>> {
        cron.find_next_occurrence(&t.with_timezone(zone), inclusive)
            .ok()
            .map(|next| next.with_timezone(&Utc))
    }
    match zone {
        Zone::Local => in_zone(cron, &chrono::Local, t, inclusive),
        Zone::Named(tz) => in_zone(cron, &tz, t, inclusive),
    }
}

/// How long the daemon may sleep at `now` before one of `due` times (or
/// the wall-clock check) comes.
pub fn sleep_until_next(
    now: DateTime<Utc>,
    due: impl IntoIterator<Item = DateTime<Utc>>,
) -> Duration {
    due.into_iter()
        .map(|t| (t - now).to_std().unwrap_or(Duration::ZERO))
        .fold(MAX_SLEEP, Duration::min)
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|d| d.and_hms_opt(h, mi, s))
            .expect("a valid time")
            .and_utc()
    }

    fn record(when: ScheduleWhen, created: DateTime<Utc>) -> ScheduleRecord {
        ScheduleRecord {
            name: "s".into(),
            when,
            jitter: Duration::ZERO,
            catch_up: true,
            targets: Vec::new(),
            created,
            last_run: None,
        }
    }

    fn cron(expr: &str, zone: &str, created: DateTime<Utc>) -> Schedule {
        Schedule::from_record(&record(
            ScheduleWhen::Cron {
                expr: expr.into(),
                timezone: Some(zone.into()),
            },
            created,
        ))
        .expect("valid")
    }

    fn every(d: Duration, created: DateTime<Utc>) -> Schedule {
        Schedule::from_record(&record(ScheduleWhen::Every(d), created)).expect("valid")
    }

    /// Runs the schedule as the daemon would from `from` to `to`, looking
    /// every `step`: the times it ran.
    fn simulate(
        s: &mut Schedule,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step: Duration,
    ) -> Vec<DateTime<Utc>> {
        let step = chrono::Duration::from_std(step).unwrap();
        let mut runs = Vec::new();
        let mut now = from;
        while now <= to {
            if s.due(now).is_some_and(|due| due <= now) {
                runs.push(now);
                s.ran(now);
            }
            now += step;
        }
        runs
    }

    #[test]
    fn every_runs_its_interval_after_the_previous_start() {
        let t0 = utc(2026, 1, 1, 0, 0, 0);
        let mut s = every(Duration::from_secs(90), t0);
        assert_eq!(s.due(t0), Some(t0 + chrono::Duration::seconds(90)));
        let runs = simulate(
            &mut s,
            t0,
            t0 + chrono::Duration::seconds(300),
            Duration::from_secs(1),
        );
        assert_eq!(
            runs,
            [90, 180, 270].map(|n| t0 + chrono::Duration::seconds(n))
        );
    }

    #[test]
    fn missed_runs_are_caught_up_exactly_once() {
        let t0 = utc(2026, 1, 1, 0, 0, 0);
        let mut s = every(Duration::from_secs(60), t0);
        s.ran(t0);
        // Down for an hour (sixty runs missed), then the daemon looks every
        // ten seconds.
        let back = t0 + chrono::Duration::hours(1);
        let runs = simulate(
            &mut s,
            back,
            back + chrono::Duration::seconds(59),
            Duration::from_secs(10),
        );
        assert_eq!(runs, [back]);
        // Then the rhythm goes on from the catch-up.
        assert_eq!(s.due(back), Some(back + chrono::Duration::seconds(60)));

        // The same for a nightly cron job down over three nights.
        let mut s = cron("0 3 * * *", "UTC", t0);
        s.ran(utc(2026, 1, 1, 3, 0, 0));
        let back = utc(2026, 1, 4, 12, 0, 0);
        let runs = simulate(
            &mut s,
            back,
            back + chrono::Duration::hours(1),
            Duration::from_secs(60),
        );
        assert_eq!(runs, [back]);
        assert_eq!(s.due(back), Some(utc(2026, 1, 5, 3, 0, 0)));
    }

    #[test]
    fn without_catch_up_missed_runs_are_dropped() {
        let t0 = utc(2026, 1, 1, 0, 0, 0);
        let mut rec = record(ScheduleWhen::Every(Duration::from_secs(60)), t0);
        rec.catch_up = false;
        rec.last_run = Some(t0);
        let s = Schedule::from_record(&rec).unwrap();
        let back = t0 + chrono::Duration::seconds(3630);
        // The next run of the old rhythm after now, not one at once.
        assert_eq!(s.due(back), Some(t0 + chrono::Duration::seconds(3660)));
        // A run a little late (the daemon looks once a minute) is on time.
        assert_eq!(
            s.due(t0 + chrono::Duration::seconds(100)),
            Some(t0 + chrono::Duration::seconds(60))
        );

        let mut rec = record(
            ScheduleWhen::Cron {
                expr: "0 3 * * *".into(),
                timezone: Some("UTC".into()),
            },
            t0,
        );
        rec.catch_up = false;
        rec.last_run = Some(utc(2026, 1, 1, 3, 0, 0));
        let s = Schedule::from_record(&rec).unwrap();
        assert_eq!(
            s.due(utc(2026, 1, 4, 12, 0, 0)),
            Some(utc(2026, 1, 5, 3, 0, 0))
        );
    }

    #[test]
    fn a_last_run_in_the_future_counts_as_now() {
        let t0 = utc(2026, 1, 1, 0, 0, 0);
        let mut s = every(Duration::from_secs(600), t0);
        // The clock went back a day after the last run.
        s.ran(t0 + chrono::Duration::days(1));
        assert_eq!(s.due(t0), Some(t0 + chrono::Duration::seconds(600)));
    }

    #[test]
    fn clock_jumps_both_ways_and_suspend() {
        let t0 = utc(2026, 3, 1, 0, 0, 0);
        let mut s = cron("*/15 * * * *", "UTC", t0);
        s.ran(t0);
        // A forward jump of two hours (or waking from a two-hour suspend:
        // the wall clock moved, the monotonic one did not) runs once.
        let jumped = t0 + chrono::Duration::hours(2) + chrono::Duration::seconds(5);
        assert_eq!(
            simulate(&mut s, jumped, jumped, Duration::from_secs(1)),
            [jumped]
        );
        assert_eq!(s.due(jumped), Some(t0 + chrono::Duration::minutes(135)));
        // A backward jump of an hour: the next instant after "now", not a
        // wait until the old last run comes round again.
        let back = jumped - chrono::Duration::hours(1);
        assert_eq!(s.due(back), Some(t0 + chrono::Duration::minutes(75)));
    }

    #[test]
    fn daylight_saving_gap_and_repeated_hour() {
        // Europe/Berlin: 2026-03-29 02:00 CET becomes 03:00 CEST; 2026-10-25
        // 03:00 CEST becomes 02:00 CET.
        let before = utc(2026, 3, 28, 12, 0, 0);
        let mut s = cron("30 2 * * *", "Europe/Berlin", before);
        s.ran(before);
        // 02:30 does not exist that night: it runs at the next valid
        // instant, 03:00 CEST (01:00 UTC), once.
        assert_eq!(s.due(before), Some(utc(2026, 3, 29, 1, 0, 0)));
        let runs = simulate(
            &mut s,
            before,
            utc(2026, 3, 30, 12, 0, 0),
            Duration::from_secs(60),
        );
        assert_eq!(
            runs,
            [utc(2026, 3, 29, 1, 0, 0), utc(2026, 3, 30, 0, 30, 0)]
        );

        // 02:30 happens twice on the autumn night: it runs once.
        let before = utc(2026, 10, 24, 12, 0, 0);
        let mut s = cron("30 2 * * *", "Europe/Berlin", before);
        s.ran(before);
        let runs = simulate(
            &mut s,
            before,
            utc(2026, 10, 25, 12, 0, 0),
            Duration::from_secs(60),
        );
        assert_eq!(runs.len(), 1, "{runs:?}");
    }

    #[test]
    fn jitter_is_a_stable_offset_per_schedule() {
        let jitter = Duration::from_secs(600);
        let a = jitter_offset("nightly", jitter);
        assert_eq!(a, jitter_offset("nightly", jitter), "never re-rolled");
        assert!(a < jitter);
        assert_ne!(a, jitter_offset("hourly", jitter));
        assert_eq!(jitter_offset("nightly", Duration::ZERO), Duration::ZERO);

        let t0 = utc(2026, 1, 1, 0, 0, 0);
        let mut rec = record(
            ScheduleWhen::Cron {
                expr: "0 3 * * *".into(),
                timezone: Some("UTC".into()),
            },
            t0,
        );
        rec.name = "nightly".into();
        rec.jitter = jitter;
        let s = Schedule::from_record(&rec).unwrap();
        let offset = chrono::Duration::from_std(a).unwrap();
        assert_eq!(s.due(t0), Some(utc(2026, 1, 1, 3, 0, 0) + offset));
    }

    #[test]
    fn bad_specifications_are_usage_errors() {
        for expr in ["* * * *", "* * * * * * *", "61 * * * *", "nonsense x y z w"] {
            assert!(
                matches!(parse_cron(expr), Err(ManagerError::Usage(_))),
                "{expr}"
            );
        }
        assert!(parse_cron("0 3 * * mon-fri").is_ok());
        assert!(parse_cron("*/10 0 3 * * *").is_ok(), "seconds first");
        assert!(matches!(
            parse_zone("Mars/Olympus"),
            Err(ManagerError::Usage(_))
        ));
        let t0 = utc(2026, 1, 1, 0, 0, 0);
        assert!(
            Schedule::from_record(&record(ScheduleWhen::Every(Duration::from_millis(10)), t0))
                .is_err()
        );
    }

    #[test]
    fn the_daemon_sleeps_at_most_a_minute() {
        let now = utc(2026, 1, 1, 0, 0, 0);
        assert_eq!(sleep_until_next(now, []), MAX_SLEEP);
        assert_eq!(
            sleep_until_next(
                now,
                [
                    now + chrono::Duration::seconds(5),
                    now + chrono::Duration::hours(1)
                ]
            ),
            Duration::from_secs(5)
        );
        assert_eq!(
            sleep_until_next(now, [now - chrono::Duration::seconds(5)]),
            Duration::ZERO
        );
    }
}
