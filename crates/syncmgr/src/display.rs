//! Showing a session: the progress view on a terminal (one row per item with
//! status, text and bar, an overall bar, log entries as they come), plain
//! lines when stdout is not a terminal, or newline-delimited JSON events.
//!
//! The engine already coalesces item changes, so each event here is cheap to
//! draw; plain output further prints an item only when its status or text
//! changes, so logs stay readable.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use syncmgr_core::{ItemSnapshot, ItemStatus, SessionEvent, SessionSummary};

use crate::commands::log_entry_line;
use crate::output::{Stdout, counts_json};

/// One of the three ways to show a session.
#[derive(Debug)]
pub enum Display {
    /// `--json`.
    Json,
    /// Plain lines.
    Plain {
        /// Last (status, text) printed per item.
        last: HashMap<(String, String), (ItemStatus, String)>,
    },
    /// The live view.
    Live(Box<Live>),
}

/// State of the live view.
#[derive(Debug)]
pub struct Live {
    multi: MultiProgress,
    overall: ProgressBar,
    rows: HashMap<(String, String), ProgressBar>,
    done: HashMap<(String, String), bool>,
}

fn item_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:<28!} {msg:<40!} [{bar:24}] {pos:>6}/{len:6}")
        .expect("the item template is valid")
        .progress_chars("=> ")
}

/// For items with no known amount yet (pending, indeterminate): no bar, so
/// nothing suggests a progress that was never reported.
fn text_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:<28!} {msg:<40!} {spinner}")
        .expect("the text template is valid")
        .tick_chars("|/-\\ ")
}

fn overall_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:<28!} [{bar:40}] {pos}/{len} items  {elapsed}")
        .expect("the overall template is valid")
        .progress_chars("## ")
}

impl Display {
    /// Picks the view: JSON when asked, the live view on a terminal, plain
    /// lines otherwise.
    pub fn new(json: bool) -> Display {
        if json {
            Display::Json
        } else if std::io::stdout().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
            let overall = multi.add(ProgressBar::new(0));
            overall.set_style(overall_style());
            overall.set_prefix("overall");
            Display::Live(Box::new(Live {
                multi,
                overall,
                rows: HashMap::new(),
                done: HashMap::new(),
            }))
        } else {
            Display::Plain {
                last: HashMap::new(),
            }
        }
    }

    /// Shows one event.
    pub fn show(&mut self, event: &SessionEvent, out: &mut Stdout) -> anyhow::Result<()> {
        match self {
            Display::Json => {
                if let Some(value) = event_json(event) {
                    out.json(&value)?;
                }
            }
            Display::Plain { last } => show_plain(last, event, out)?,
            Display::Live(live) => live.show(event, out)?,
        }
        Ok(())
    }

    /// A note for the person watching (not shown in JSON mode, where stdout is
    /// for events only; it goes to stderr there).
    pub fn note(&mut self, text: &str, out: &mut Stdout) {
        match self {
            Display::Json => crate::output::warn(text),
            Display::Plain { .. } => {
                let _ = writeln!(out, "{text}");
            }
            Display::Live(live) => {
                let _ = live.multi.println(text);
            }
        }
    }
}

fn key(snapshot: &ItemSnapshot) -> (String, String) {
    (snapshot.handler.clone(), snapshot.item.clone())
}

fn show_plain(
    last: &mut HashMap<(String, String), (ItemStatus, String)>,
    event: &SessionEvent,
    out: &mut Stdout,
) -> anyhow::Result<()> {
    match event {
        SessionEvent::Started { session, trigger } => {
            writeln!(out, "session {session} started ({trigger})")?;
        }
        SessionEvent::ItemChanged(s) => {
            let now = (s.status, s.text.clone());
            if last.get(&key(s)) != Some(&now) {
                let amount = match (s.value, s.max) {
                    (Some(v), Some(m)) => format!(" {v}/{m}"),
                    (Some(v), None) => format!(" {v}"),
                    _ => String::new(),
                };
                let text = if s.text.is_empty() {
                    String::new()
                } else {
                    format!(" {}", s.text)
                };
                writeln!(out, "{}/{}: {}{amount}{text}", s.handler, s.item, s.status)?;
                last.insert(key(s), now);
            }
        }
        SessionEvent::Log(entry) => writeln!(out, "log {}", log_entry_line(entry))?,
        SessionEvent::Finished(summary) => writeln!(out, "{}", summary_line(summary))?,
        _ => {}
    }
    Ok(())
}

impl Live {
    fn show(&mut self, event: &SessionEvent, out: &mut Stdout) -> anyhow::Result<()> {
        match event {
            SessionEvent::Started { session, trigger } => {
                let _ = self
                    .multi
                    .println(format!("session {session} started ({trigger})"));
            }
            SessionEvent::ItemChanged(s) => {
                let k = key(s);
                let bar = self.rows.entry(k.clone()).or_insert_with(|| {
                    let bar = self.multi.insert_before(&self.overall, ProgressBar::new(0));
                    bar.set_style(text_style());
                    bar.set_prefix(format!("{}/{}", s.handler, s.name));
                    self.overall.inc_length(1);
                    bar
                });
                match s.max {
                    Some(max) => {
                        if bar.length() != Some(max) {
                            bar.set_style(item_style());
                            bar.set_length(max);
                        }
                        bar.set_position(s.value.unwrap_or(0));
                    }
                    None if s.status == ItemStatus::UpdatingIndeterminate => bar.tick(),
                    None => {}
                }
                let text = if s.text.is_empty() {
                    s.status.to_string()
                } else {
                    format!("{} {}", s.status, s.text)
                };
                bar.set_message(text);
                let terminal = s.status.is_terminal();
                let was = self.done.insert(k, terminal).unwrap_or(false);
                if terminal && !was {
                    self.overall.inc(1);
                }
            }
            SessionEvent::Log(entry) => {
                let _ = self.multi.println(log_entry_line(entry));
            }
            SessionEvent::Finished(summary) => {
                for bar in self.rows.values() {
                    bar.abandon();
                }
                self.overall.abandon();
                writeln!(out, "{}", summary_line(summary))?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The closing line for people.
pub fn summary_line(summary: &SessionSummary) -> String {
    let c = &summary.counts;
    let mut line = format!(
        "session {} {}: {} succeeded, {} failed, {} skipped, {} stopped",
        summary.session, summary.outcome, c.succeeded, c.failed, c.skipped, c.stopped
    );
    if !summary.failed_handlers.is_empty() {
        line.push_str(&format!(
            "; handlers that failed: {}",
            summary.failed_handlers.join(", ")
        ));
    }
    line
}

/// The JSON form of an event (`cli.md`), or `None` for internal ones.
pub fn event_json(event: &SessionEvent) -> Option<Value> {
    Some(match event {
        SessionEvent::Started { session, trigger } => json!({
            "event": "sessionStarted",
            "session": session,
            "trigger": trigger.as_str(),
        }),
        SessionEvent::ItemChanged(s) => {
            let mut v = json!({
                "event": "item",
                "handler": s.handler,
                "item": s.item,
                "name": s.name,
                "status": s.status.as_str(),
            });
            if !s.text.is_empty() {
                v["text"] = json!(s.text);
            }
            if let Some(value) = s.value {
                v["value"] = json!(value);
            }
            if let Some(max) = s.max {
                v["max"] = json!(max);
            }
            v
        }
        SessionEvent::Log(entry) => {
            let e = &entry.entry;
            json!({
                "event": "log",
                "id": entry.id,
                "level": e.level.as_str(),
                "handler": e.handler,
                "item": e.item,
                "text": e.text,
                "actionable": e.actionable,
            })
        }
        SessionEvent::LogDeleted { handler, error_id } => json!({
            "event": "logDeleted",
            "handler": handler,
            "errorId": error_id,
        }),
        SessionEvent::Finished(summary) => json!({
            "event": "sessionFinished",
            "session": summary.session,
            "outcome": summary.outcome.as_str(),
            "counts": counts_json(&summary.counts),
            "items": summary.items.iter().map(|r| json!({
                "handler": r.handler,
                "item": r.item,
                "status": r.status.as_str(),
            })).collect::<Vec<_>>(),
            "failedHandlers": summary.failed_handlers,
        }),
        _ => return None,
    })
}
