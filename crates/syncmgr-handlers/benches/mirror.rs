//! The folder mirror against `rsync -a`, side by side on the same data,
//! process for process: what is timed is the command a user runs,
//! `syncmgr sync` (its start, the store, the session, the handler, the
//! summary; stdout to /dev/null), against the `rsync` process.
//!
//! Run with `cargo bench -p syncmgr-handlers --bench mirror` (rsync must be
//! installed: `apt-get install -y rsync`; the bench fails without it). It
//! builds the `syncmgr` binary (release), generates a tree in a temporary
//! folder (by default 10,000 files of 1–64 KiB in nested folders plus 3 files
//! of 100 MiB) and times, for the mirror without and with `delete` against
//! `rsync -a` and `rsync -a --delete`: the first copy into an empty target, a
//! re-sync with nothing changed, and a re-sync after 1 % of the files changed
//! (and, for both, 0.5 % removed and 0.5 % added). Each tool has its own
//! target; the order alternates between rounds; before each timing
//! everything written is flushed (`sync`), so that no tool pays for
//! another's write-back, and the source is read once, so that each starts
//! with it in the page cache; the table shows the median of the rounds.
//!
//! Knobs (environment): `MIRROR_BENCH_FILES` (10000), `MIRROR_BENCH_BIG_MIB`
//! (100), `MIRROR_BENCH_BIG_FILES` (3), `MIRROR_BENCH_ROUNDS` (3),
//! `MIRROR_BENCH_DIR` (the system's temporary folder). A quick run:
//! `MIRROR_BENCH_FILES=1000 MIRROR_BENCH_BIG_MIB=8 MIRROR_BENCH_ROUNDS=1`.

// The table on stderr is what a benchmark is for.
#![allow(clippy::print_stderr)]

use std::fs;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small, fast, deterministic generator (xorshift64*), so that every run
/// makes the same tree.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// The relative path of small file `n`: 20 × 10 folders, two levels deep.
fn small_path(n: u64) -> PathBuf {
    PathBuf::from(format!(
        "d{:02}/e{:02}/file {n:05}.dat",
        n % 20,
        (n / 20) % 10
    ))
}

fn write_small(root: &Path, n: u64, rng: &mut Rng, buf: &mut Vec<u8>) {
    let size = 1024 + (rng.next() % (63 * 1024 + 1)) as usize;
    buf.resize(size, 0);
    rng.fill(buf);
    let path = root.join(small_path(n));
    fs::write(&path, buf).expect("write a small file");
}

fn generate(root: &Path, files: u64, big_files: u64, big_mib: u64) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for d in 0..20 {
        for e in 0..10 {
            fs::create_dir_all(root.join(format!("d{d:02}/e{e:02}"))).expect("mkdir");
        }
    }
    let mut buf = Vec::new();
    for n in 0..files {
        write_small(root, n, &mut rng, &mut buf);
    }
    let mut chunk = vec![0; 1 << 20];
    for b in 0..big_files {
        let mut file = fs::File::create(root.join(format!("big {b}.bin"))).expect("create");
        for _ in 0..big_mib {
            rng.fill(&mut chunk);
            file.write_all(&chunk).expect("write a big file");
        }
    }
}

/// Rewrites 1 % of the small files, removes 0.5 % and adds 0.5 % (new
/// numbers past the end), choosing other files each round.
fn mutate(root: &Path, files: u64, round: u64, next_new: &mut u64) {
    let mut rng = Rng(0x1234_5678 + round);
    let mut buf = Vec::new();
    let step = 100;
    for n in (round % step..files).step_by(step as usize) {
        if root.join(small_path(n)).exists() {
            write_small(root, n, &mut rng, &mut buf);
        }
    }
    for n in ((round + 50) % (2 * step)..files).step_by(2 * step as usize) {
        let _ = fs::remove_file(root.join(small_path(n)));
        write_small(root, *next_new, &mut rng, &mut buf);
        *next_new += 1;
    }
}

/// Puts both tools on equal terms before a timing: nothing dirty waiting
/// for write-back (`sync`), and the source read once so that it is in the
/// page cache (the machine may page out idle cache within seconds, which
/// otherwise decides more than the tools do).
fn prepare(source: &Path) {
    let status = Command::new("sync").status().expect("run sync");
    assert!(status.success(), "sync failed");
    let mut buf = vec![0; 1 << 20];
    for entry in walkdir::WalkDir::new(source) {
        let entry = entry.expect("walk the source");
        if entry.file_type().is_file() {
            let mut file = fs::File::open(entry.path()).expect("open");
            while file.read(&mut buf).expect("read") > 0 {}
        }
    }
}

/// CPU time (user + system) of this process and of its waited-for children
/// so far, from `/proc/self/stat` (Linux; zero elsewhere). The machine is
/// shared and noisy: CPU time says what a tool costs when wall time wobbles.
fn cpu() -> (Duration, Duration) {
    let Ok(stat) = fs::read_to_string("/proc/self/stat") else {
        return (Duration::ZERO, Duration::ZERO);
    };
    // Fields after the command name (which may hold spaces): state is the
    // 3rd field of the line, utime the 14th, stime, cutime, cstime follow.
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    // USER_HZ is 100 on Linux.
    let ticks = |i: usize| fields.get(i).copied().unwrap_or(0);
    let own = Duration::from_millis((ticks(11) + ticks(12)) * 10);
    let children = Duration::from_millis((ticks(13) + ticks(14)) * 10);
    (own, children)
}

/// One timing.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Duration,
}

fn time_rsync(source: &Path, target: &Path, delete: bool) -> Sample {
    prepare(source);
    let mut command = Command::new("rsync");
    command.arg("-a");
    if delete {
        command.arg("--delete");
    }
    // Trailing slashes: the contents of source into target.
    command.arg(format!("{}/", source.display()));
    command.arg(format!("{}/", target.display()));
    let (_, cpu_before) = cpu();
    let started = Instant::now();
    let status = command.status().expect("run rsync");
    let wall = started.elapsed();
    let (_, cpu_after) = cpu();
    assert!(status.success(), "rsync failed");
    Sample {
        wall,
        cpu: cpu_after.saturating_sub(cpu_before),
    }
}

/// The `syncmgr` binary of this profile (built here; a no-op when fresh).
fn syncmgr_binary() -> PathBuf {
    let profile = syncmgr_testkit::test_profile_dir();
    let binary = profile.join("syncmgr");
    syncmgr_testkit::cargo_build(&profile, &["-p", "syncmgr", "--bin", "syncmgr"], &binary);
    binary
}

/// Registers (or updates) the folder handler `bench` in `home`.
fn register(syncmgr: &Path, home: &Path, source: &Path, target: &Path, delete: bool) {
    let mut command = Command::new(syncmgr);
    command
        .env("SYNCMGR_HOME", home)
        .args(["register", "bench", "--folder"])
        .arg(source)
        .arg(target);
    if delete {
        command.arg("--delete");
    }
    let out = command.output().expect("run syncmgr register");
    assert!(
        out.status.success(),
        "register failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Times one `syncmgr sync` of the registration; also returns the
/// handler's own time (from the totals in `log --json`).
fn time_ours(syncmgr: &Path, home: &Path, source: &Path) -> (Sample, Duration) {
    prepare(source);
    let (_, cpu_before) = cpu();
    let started = Instant::now();
    let status = Command::new(syncmgr)
        .env("SYNCMGR_HOME", home)
        .arg("sync")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run syncmgr sync");
    let wall = started.elapsed();
    let (_, cpu_after) = cpu();
    assert!(status.success(), "syncmgr sync failed: {status}");
    // The handler's own time, from the last totals entry ("... in 0.123 s").
    let log = Command::new(syncmgr)
        .env("SYNCMGR_HOME", home)
        .args(["log", "--json", "--level", "information"])
        .output()
        .expect("run syncmgr log");
    let entries: serde_json::Value = serde_json::from_slice(&log.stdout).expect("log --json");
    let handler = entries
        .as_array()
        .and_then(|all| {
            all.iter().rev().find_map(|e| {
                e["text"]
                    .as_str()?
                    .rsplit_once(" in ")?
                    .1
                    .strip_suffix(" s")?
                    .parse()
                    .ok()
            })
        })
        .map_or(Duration::ZERO, Duration::from_secs_f64);
    let sample = Sample {
        wall,
        cpu: cpu_after.saturating_sub(cpu_before),
    };
    (sample, handler)
}

fn median(samples: &[Duration]) -> f64 {
    let mut samples = samples.to_vec();
    samples.sort();
    samples
        .get(samples.len() / 2)
        .map_or(0.0, Duration::as_secs_f64)
}

#[derive(Default)]
struct Row {
    ours: Vec<Sample>,
    /// The part of `ours` spent in the handler itself.
    handler: Vec<Duration>,
    rsync: Vec<Sample>,
}

impl Row {
    fn wall(samples: &[Sample]) -> Vec<Duration> {
        samples.iter().map(|s| s.wall).collect()
    }

    fn cpu(samples: &[Sample]) -> Vec<Duration> {
        samples.iter().map(|s| s.cpu).collect()
    }
}

fn main() {
    let files = knob("MIRROR_BENCH_FILES", 10_000);
    let big_mib = knob("MIRROR_BENCH_BIG_MIB", 100);
    let big_files = knob("MIRROR_BENCH_BIG_FILES", 3);
    let rounds = knob("MIRROR_BENCH_ROUNDS", 3).max(1);
    let have_rsync = Command::new("rsync")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        have_rsync,
        "rsync, the baseline, is not installed: apt-get install -y rsync"
    );
    let syncmgr = syncmgr_binary();
    let base = std::env::var_os("MIRROR_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = tempfile::tempdir_in(base).expect("temporary folder");
    let source = dir.path().join("source");
    let started = Instant::now();
    generate(&source, files, big_files, big_mib);
    eprintln!(
        "generated {files} files of 1-64 KiB and {big_files} of {big_mib} MiB in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let home = dir.path().join("home");
    fs::create_dir(&home).expect("mkdir home");
    fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod home");

    let scenarios = ["first copy", "no-change re-sync", "1 % changed"];
    let mut table: Vec<(String, Row)> = Vec::new();
    let mut next_new = files;
    let mut round_no = 0;
    let ours_target = dir.path().join("target-ours");
    let rsync_target = dir.path().join("target-rsync");
    for delete in [false, true] {
        register(&syncmgr, &home, &source, &ours_target, delete);
        let mut rows: Vec<Row> = scenarios.iter().map(|_| Row::default()).collect();
        for round in 0..rounds {
            round_no += 1;
            // Alternate which tool goes first.
            let ours_first = round % 2 == 0;
            let measure = |row: &mut Row, fresh: bool| {
                let mut time_one = |ours: bool| {
                    let target = if ours { &ours_target } else { &rsync_target };
                    if fresh && target.exists() {
                        // Right before the tool's own timing: removing a
                        // large tree costs the next writer (freed memory and
                        // blocks go back to the host), so each pays for its own.
                        fs::remove_dir_all(target).expect("remove a target");
                    }
                    if ours {
                        let (sample, handler) = time_ours(&syncmgr, &home, &source);
                        row.ours.push(sample);
                        row.handler.push(handler);
                    } else {
                        row.rsync.push(time_rsync(&source, target, delete));
                    }
                };
                time_one(ours_first);
                time_one(!ours_first);
            };
            measure(&mut rows[0], true);
            measure(&mut rows[1], false);
            mutate(&source, files, round_no, &mut next_new);
            measure(&mut rows[2], false);
        }
        for (name, row) in scenarios.iter().zip(rows) {
            let name = if delete {
                format!("{name}, delete")
            } else {
                (*name).to_owned()
            };
            table.push((name, row));
        }
    }

    eprintln!(
        "\nmedian of {rounds} round(s); ours = `syncmgr sync` of a folder registration, rsync = rsync -a [--delete]; cpu = of the process and its children"
    );
    eprintln!(
        "{:<26} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>7}",
        "scenario", "ours", "rsync", "ratio", "handler", "ours cpu", "rsync cpu", "ratio"
    );
    let show = |samples: &[Duration]| {
        samples
            .iter()
            .map(|d| format!("{:.3}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (name, row) in &table {
        let ours = median(&Row::wall(&row.ours));
        let rsync = median(&Row::wall(&row.rsync));
        let handler = median(&row.handler);
        let ours_cpu = median(&Row::cpu(&row.ours));
        let rsync_cpu = median(&Row::cpu(&row.rsync));
        let ratio = |a: f64, b: f64| {
            if b > 0.0 {
                format!("{:.2}", a / b)
            } else {
                "-".to_owned()
            }
        };
        eprintln!(
            "{name:<26} {ours:>9.3} {rsync:>9.3} {:>7} {handler:>9.3} {ours_cpu:>9.2} {rsync_cpu:>9.2} {:>7}",
            ratio(ours, rsync),
            ratio(ours_cpu, rsync_cpu),
        );
    }
    eprintln!("\nwall times of each round, in order (s):");
    for (name, row) in &table {
        eprintln!(
            "{name:<26} ours {} | rsync {}",
            show(&Row::wall(&row.ours)),
            show(&Row::wall(&row.rsync))
        );
    }
}
