//! Test support shared by the workspace's tests and benchmarks: [`RawPeer`],
//! the least a manager could do, used as the baseline the real manager and
//! the SDKs are measured against; building workspace binaries from a test
//! ([`cargo_build`], [`build_test_handler`]); hermetic [`git`]; private
//! D-Bus buses with mock services ([`dbus`]); a bare HTTP client for the
//! dashboard ([`http`]). (The scripted
//! handler itself is the `syncmgr-test-handler` binary of this package.)

pub mod dbus;
pub mod http;
mod support;

pub use support::{build_test_handler, cargo_build, git, test_profile_dir};

use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::process::{Child, ChildStdin, ChildStdout, ExitStatus};

use serde::Deserialize;
use serde_json::value::RawValue;

/// A minimal manager for a one-item handler: it parses each line's envelope
/// with serde_json and echoes `continue` for every `progress` request,
/// batching its writes until its input runs dry. No engine, no tasks, one
/// thread.
#[derive(Debug)]
pub struct RawPeer {
    w: BufWriter<ChildStdin>,
    r: BufReader<ChildStdout>,
    line: String,
    next_id: u64,
    answered: u64,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Option<&'a str>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

impl RawPeer {
    /// The whole life of a one-item handler (`child`, with piped stdin and
    /// stdout): the lifecycle requests with item `a`, every `progress` it
    /// sends meanwhile, `shutdown`, then its exit. Returns how many
    /// `progress` requests were answered, and the exit status.
    pub fn serve(child: &mut Child) -> io::Result<(u64, ExitStatus)> {
        let taken = |what| io::Error::other(format!("the child's {what} is not piped"));
        let mut peer = RawPeer {
            w: BufWriter::with_capacity(
                64 * 1024,
                child.stdin.take().ok_or_else(|| taken("stdin"))?,
            ),
            r: BufReader::with_capacity(
                64 * 1024,
                child.stdout.take().ok_or_else(|| taken("stdout"))?,
            ),
            line: String::with_capacity(256),
            next_id: 0,
            answered: 0,
        };
        peer.call(
            "initialize",
            r#"{"protocolVersion":1,"event":"manual","mayBotherUser":true,"settingsOnly":false,"cookie":null}"#,
        )?;
        peer.call("getHandlerInfo", "{}")?;
        peer.call("enumItems", "{}")?;
        peer.call("prepareForSync", r#"{"items":["a"]}"#)?;
        peer.call("synchronize", "{}")?;
        writeln!(
            peer.w,
            r#"{{"jsonrpc":"2.0","method":"shutdown","params":{{}}}}"#
        )?;
        peer.w.flush()?;
        let answered = peer.answered;
        drop(peer);
        Ok((answered, child.wait()?))
    }

    /// Sends a request and serves the child until its response comes.
    fn call(&mut self, method: &str, params: &str) -> io::Result<()> {
        self.next_id += 1;
        let id = self.next_id.to_string();
        writeln!(
            self.w,
            r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#
        )?;
        loop {
            if self.r.buffer().is_empty() {
                self.w.flush()?;
            }
            self.line.clear();
            if self.r.read_line(&mut self.line)? == 0 {
                return Err(io::Error::other(format!(
                    "the handler closed its stdout during {method}"
                )));
            }
            let msg: Envelope<'_> = serde_json::from_str(&self.line)?;
            match (msg.method, msg.id) {
                (Some("progress"), Some(rid)) => {
                    self.w.write_all(br#"{"jsonrpc":"2.0","id":"#)?;
                    self.w.write_all(rid.get().as_bytes())?;
                    self.w
                        .write_all(b",\"result\":{\"action\":\"continue\"}}\n")?;
                    self.answered += 1;
                }
                (Some(other), _) => {
                    return Err(io::Error::other(format!(
                        "unexpected {other} from the handler"
                    )));
                }
                (None, Some(rid)) if rid.get() == id => {
                    if msg.error.is_some() {
                        return Err(io::Error::other(format!(
                            "{method} failed: {}",
                            self.line.trim_end()
                        )));
                    }
                    return Ok(());
                }
                (None, _) => {}
            }
        }
    }
}

/// The environment variable that lists tools (comma-separated, or `all`)
/// whose tests may be skipped when the tool is missing. Unset, a missing
/// tool fails the test that needs it: a check that silently does not run
/// proves nothing. `scripts/test` installs every tool, so nobody needs it
/// there.
pub const SKIP_TOOLS_VAR: &str = "SYNCMGR_TEST_SKIP_TOOLS";

/// Whether the external `tool` (`python3`, `jq`, `git`, ...) runs
/// (`tool --version`). A missing tool panics, naming the tool and the way
/// out, unless [`SKIP_TOOLS_VAR`] lists it: then this says so on stderr and
/// returns `false`, and the caller returns early.
#[allow(clippy::print_stderr)] // libtest captures it; shown with the skip
pub fn require_tool(tool: &str) -> bool {
    let runs = std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if runs {
        return true;
    }
    let allowed = std::env::var(SKIP_TOOLS_VAR).unwrap_or_default();
    if allowed
        .split(',')
        .map(str::trim)
        .any(|t| t == tool || t == "all")
    {
        eprintln!("skipping: {tool} is not installed and {SKIP_TOOLS_VAR} allows it");
        return false;
    }
    panic!(
        "this test needs {tool}, which is not installed: run `scripts/test` (it installs what the tests need), install {tool}, or set {SKIP_TOOLS_VAR}={tool} to skip the tests that need it"
    );
}
