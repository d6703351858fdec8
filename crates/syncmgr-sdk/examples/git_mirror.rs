//! A realistic handler: keeps bare mirrors of a set of git repositories up
//! to date with `git fetch`, one item per repository.
//!
//! ```text
//! cargo build -p syncmgr-sdk --examples
//! syncmgr register git -- target/debug/examples/git_mirror --dir ~/mirrors \
//!     https://github.com/rust-lang/log.git serde=https://github.com/serde-rs/serde.git
//! syncmgr sync git --json
//! ```
//!
//! Usage: `git_mirror --dir DIR [--jobs N] [--git PROGRAM] [ID=]URL...`.
//! Each repository is mirrored to `DIR/<id>.git` (the id defaults to the
//! last part of the URL without `.git`). A new mirror is fetched into a
//! temporary directory and renamed into place only once complete.
//!
//! What it shows of the SDK:
//!
//! - progress parsed from `git fetch --progress` on stderr, on a thread of
//!   its own that reports through a clone of the item's `Progress`
//!   ("Receiving objects" is the first 80 % of the bar, "Resolving deltas"
//!   the rest, the remote's phases are shown as text);
//! - cancel: the item's cancel state (a `cancelItem`/`cancelAll` answer or a
//!   `setItemStatus` from the manager) kills the git process at once;
//! - failures: a failed fetch is an actionable error entry (`fetch-<id>`);
//!   `syncmgr log show` on it reaches `show_error`, which asks for a retry;
//! - `max_parallel`: up to `--jobs` repositories (default 2) at once;
//! - `prepare`: checks that git runs before any item starts;
//! - `last_update`: the time of the mirror's last fetch.

use std::collections::HashSet;
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use syncmgr_sdk::{
    HandlerError, HandlerInfo, InitContext, Item, ItemOutcome, Manager, Progress, SyncHandler,
    Update,
};

/// One repository to mirror.
#[derive(Debug, Clone)]
struct Repo {
    id: String,
    url: String,
}

struct GitMirror {
    dir: PathBuf,
    git: String,
    jobs: usize,
    repos: Vec<Repo>,
}

impl GitMirror {
    fn repo(&self, id: &str) -> Result<&Repo, HandlerError> {
        self.repos
            .iter()
            .find(|r| r.id == id)
            .ok_or_else(|| HandlerError::new(format!("no repository {id:?}")))
    }

    fn mirror_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.git"))
    }

    /// `git <args>`, with no terminal prompt and messages in English (they
    /// are parsed); stderr is piped for the progress, stdin and stdout unused.
    fn git(&self) -> Command {
        let mut cmd = Command::new(&self.git);
        cmd.env("GIT_TERMINAL_PROMPT", "0")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }
}

impl SyncHandler for GitMirror {
    fn info(&self) -> HandlerInfo {
        HandlerInfo::new("Git mirrors")
    }

    fn items(&mut self, _ctx: &InitContext) -> Result<Vec<Item>, HandlerError> {
        Ok(self
            .repos
            .iter()
            .map(|repo| {
                let item = Item::new(&repo.id, format!("{} ({})", repo.id, repo.url));
                // FETCH_HEAD is rewritten by every successful fetch.
                let fetched = self.mirror_path(&repo.id).join("FETCH_HEAD");
                match fs::metadata(fetched).and_then(|m| m.modified()) {
                    Ok(when) => item.last_update(when),
                    Err(_) => item,
                }
            })
            .collect())
    }

    fn prepare(&mut self, _items: &[String], _manager: &Manager) -> Result<(), HandlerError> {
        let status = Command::new(&self.git)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .map_err(|e| HandlerError::from(e).context(format!("cannot run {}", self.git)))?;
        if !status.success() {
            return Err(HandlerError::new(format!(
                "{} --version: {status}",
                self.git
            )));
        }
        fs::create_dir_all(&self.dir)
            .map_err(|e| HandlerError::from(e).context(self.dir.display()))?;
        Ok(())
    }

    fn sync_item(&self, item: &str, progress: &Progress) -> Result<ItemOutcome, HandlerError> {
        let repo = self.repo(item)?;
        let target = self.mirror_path(item);
        let fresh = !target.exists();
        // A new mirror is fetched next to its place and renamed when complete,
        // so an interrupted first fetch never leaves a half mirror behind.
        let work = if fresh {
            let tmp = self.dir.join(format!(".{item}.git.tmp"));
            let _ = fs::remove_dir_all(&tmp);
            let init = self
                .git()
                .args(["init", "--bare", "--quiet"])
                .arg(&tmp)
                .output()?;
            if !init.status.success() {
                return Err(HandlerError::new(format!(
                    "git init: {}",
                    last_lines(&String::from_utf8_lossy(&init.stderr))
                )));
            }
            tmp
        } else {
            target.clone()
        };

        progress.report(Update::progress(0, PERMILLE).text(format!("fetching {}", repo.url)));
        // Every ref of the remote, as in `git clone --mirror`. The fetch
        // rewrites FETCH_HEAD, which dates it (`last_update`).
        let mut fetch = self.git();
        fetch
            .arg("--git-dir")
            .arg(&work)
            .args(["fetch", "--prune", "--progress"])
            .arg(&repo.url)
            .arg("+refs/*:refs/*");
        match run_fetch(fetch, progress) {
            Ok(updated) => {
                progress.report(Update::progress(PERMILLE, PERMILLE));
                if fresh {
                    fs::rename(&work, &target)?;
                }
                let text = match updated {
                    0 => "up to date".to_owned(),
                    1 => "1 ref updated".to_owned(),
                    n => format!("{n} refs updated"),
                };
                Ok(ItemOutcome::succeeded().with_text(text))
            }
            Err(e) => {
                if fresh {
                    let _ = fs::remove_dir_all(&work);
                }
                if e.is_cancelled() {
                    return Ok(ItemOutcome::stopped().with_text("fetch cancelled"));
                }
                Err(e
                    .context(format!("fetching {}", repo.url))
                    .actionable(format!("fetch-{item}")))
            }
        }
    }

    fn show_error(&mut self, error_id: &str) -> Vec<String> {
        // A real handler could show a dialog (credentials, a new URL) here;
        // this one says what it retries (stderr is kept in the log).
        match error_id.strip_prefix("fetch-") {
            Some(id) if self.repos.iter().any(|r| r.id == id) => {
                let _ = writeln!(io::stderr(), "retrying the fetch of {id}");
                vec![id.to_owned()]
            }
            _ => Vec::new(),
        }
    }

    fn max_parallel(&self) -> usize {
        self.jobs
    }
}

/// The progress bar's scale: per mille of the whole fetch.
const PERMILLE: u64 = 1000;

/// Runs one `git fetch`, reporting its progress; returns how many refs it
/// updated. A cancel kills git and returns `HandlerError::cancelled()`.
fn run_fetch(mut fetch: Command, progress: &Progress) -> Result<usize, HandlerError> {
    let mut child = fetch
        .spawn()
        .map_err(|e| HandlerError::from(e).context("cannot start git"))?;
    let stderr = child.stderr.take().expect("stderr is piped");
    // The parser reports from its own thread, through a clone of `progress`.
    let reporter = progress.clone();
    let (parsed_tx, parsed_rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = parsed_tx.send(parse_stderr(stderr, &reporter));
    });
    let status = wait_or_kill(&mut child, progress)?;
    if progress.is_cancelled() {
        // Not waiting for the parser: a helper of git (ssh, a credential
        // helper) may hold stderr open a little longer. It stops reporting
        // and ends with the pipe.
        return Err(HandlerError::cancelled());
    }
    // git exited: its stderr is at its end, the parser is done.
    let parsed = parsed_rx.recv().unwrap_or_default();
    if !status.success() {
        return Err(HandlerError::new(format!(
            "git fetch {status}: {}",
            last_lines(&parsed.messages)
        )));
    }
    Ok(parsed.updated_refs)
}

/// Waits for git to exit, killing it as soon as the item is cancelled.
fn wait_or_kill(child: &mut Child, progress: &Progress) -> io::Result<std::process::ExitStatus> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        // Wakes at once on a cancel; otherwise checks the child again.
        if progress.wait_cancelled(Duration::from_millis(50)) {
            let _ = child.kill();
            return child.wait();
        }
    }
}

/// What `git fetch` said besides its progress.
#[derive(Debug, Default)]
struct Parsed {
    /// Lines that were not progress (errors, ref updates).
    messages: String,
    /// Ref update lines (`   1a2b..3c4d  main -> main`).
    updated_refs: usize,
}

/// Reads git's stderr: progress updates end in `\r`, other lines in `\n`.
fn parse_stderr(stderr: impl Read, progress: &Progress) -> Parsed {
    let mut parsed = Parsed::default();
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    let mut last = None;
    let mut byte = [0u8; 1];
    // Byte by byte through a BufReader: cheap, and splits on both \r and \n.
    while matches!(reader.read(&mut byte), Ok(1)) {
        if byte[0] != b'\r' && byte[0] != b'\n' {
            line.push(byte[0]);
            continue;
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        line.clear();
        match phase(&text) {
            Some((key, value, text)) => {
                // git repeats a line for every object; report each phase at
                // most once per percent.
                if last.as_ref() != Some(&key) && !progress.is_cancelled() {
                    last = Some(key);
                    // Posted, not reported: this thread must keep reading
                    // git's output. The answer's cancel is acted on by
                    // `wait_or_kill` (the cancel state it reads is the same).
                    let _ = progress.post(Update::progress(value, PERMILLE).text(text));
                }
            }
            None if text.trim().is_empty() => {}
            None => {
                if text.contains(" -> ") {
                    parsed.updated_refs += 1;
                }
                parsed.messages.push_str(&text);
                parsed.messages.push('\n');
            }
        }
    }
    parsed
}

/// Parses a progress line such as `Receiving objects:  45% (123/273), 1.20
/// MiB | 1.10 MiB/s` into its phase and percent, a position on the bar and a
/// status text.
fn phase(line: &str) -> Option<((String, u64), u64, String)> {
    let line = line.strip_prefix("remote: ").unwrap_or(line).trim();
    let (name, rest) = line.split_once(": ")?;
    let open = rest.find('(')?;
    let close = open + rest[open..].find(')')?;
    let (done, total) = rest[open + 1..close].split_once('/')?;
    let (done, total): (u64, u64) = (done.trim().parse().ok()?, total.trim().parse().ok()?);
    let share = |weight: u64| done.min(total) * weight / total.max(1);
    let value = match name {
        // "Unpacking" instead of "Receiving" for small fetches.
        "Receiving objects" | "Unpacking objects" => share(800),
        "Resolving deltas" => 800 + share(200),
        // The remote's counting and compressing: no position yet.
        _ => 0,
    };
    let detail = rest[close + 1..]
        .trim_start_matches(',')
        .trim()
        .trim_end_matches(", done.");
    let mut text = format!("{name} {done}/{total}");
    if !detail.is_empty() {
        text.push_str(", ");
        text.push_str(detail);
    }
    Some(((name.to_owned(), share(100)), value, text))
}

/// The last three non-empty lines of git's messages (the `fatal:` is there).
fn last_lines(messages: &str) -> String {
    let lines: Vec<&str> = messages.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(3);
    match lines[start..].join("; ") {
        s if s.is_empty() => "no message".to_owned(),
        s => s,
    }
}

/// The item id of a URL: its last part without `.git`, in `[A-Za-z0-9._-]`.
fn id_of(url: &str) -> String {
    let last = url
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or(url);
    let base = last.strip_suffix(".git").unwrap_or(last);
    let id: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(60)
        .collect();
    if id.is_empty() || id.starts_with('.') {
        format!("repo{id}")
    } else {
        id
    }
}

fn parse_args() -> Result<GitMirror, String> {
    let mut dir = None;
    let mut git = "git".to_owned();
    let mut jobs = 2;
    let mut repos: Vec<Repo> = Vec::new();
    let mut seen = HashSet::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => dir = args.next().map(PathBuf::from),
            "--git" => git = args.next().ok_or("--git needs a program")?,
            "--jobs" => {
                jobs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or("--jobs needs a positive number")?;
            }
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            spec => {
                let (id, url) = match spec.split_once('=') {
                    Some((id, url)) if !id.contains('/') && !id.contains(':') => {
                        (id.to_owned(), url.to_owned())
                    }
                    _ => (id_of(spec), spec.to_owned()),
                };
                if !seen.insert(id.clone()) {
                    return Err(format!(
                        "two repositories are called {id:?}; name one ID=URL"
                    ));
                }
                repos.push(Repo { id, url });
            }
        }
    }
    let dir = dir.ok_or("--dir DIR is required")?;
    Ok(GitMirror {
        dir,
        git,
        jobs,
        repos,
    })
}

fn main() -> ExitCode {
    let handler = match parse_args() {
        Ok(handler) => handler,
        Err(e) => {
            let _ = writeln!(
                io::stderr(),
                "git_mirror: {e}\nusage: git_mirror --dir DIR [--jobs N] [--git PROGRAM] [ID=]URL..."
            );
            return ExitCode::from(2);
        }
    };
    match syncmgr_sdk::serve(handler) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr(), "git_mirror: {e}");
            ExitCode::FAILURE
        }
    }
}
