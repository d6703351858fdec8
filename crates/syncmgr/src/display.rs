//! Showing a session: the live view on a terminal, plain lines when stdout
//! is not a terminal, or newline-delimited JSON events.
//!
//! The display runs on a thread of its own and takes its events from an
//! [`EventFeed`](syncmgr_core::EventFeed) (see `run.rs`): a terminal that
//! stops reading (Ctrl-S, a pager) stalls this thread only, never the
//! manager.
//!
//! The live view, like cargo's and nextest's, keeps what is done out of the
//! way: each item that ends, and each log entry, is printed once as a line
//! that scrolls up; below them a small area is redrawn in place, at most ten
//! times a second and at least once a second (so the elapsed time and the
//! spinners move while handlers are quiet): the running items (as many as
//! fit) and, always last, the overall line. Its cost does not grow with the
//! number of items finished, only with the lines printed.
//!
//! Every text that came from a handler or a file system is shown through
//! [`escape`]: a name cannot move the cursor or forge a line.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use syncmgr_api::{Counts, Event};
use syncmgr_core::ItemStatus;

use crate::output::Stdout;
use crate::text::escape;

/// Shortest interval between two redraws of the live area.
const FRAME: Duration = Duration::from_millis(100);
/// Most running items shown at once (fewer on a short terminal).
const MAX_ROWS: usize = 10;

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

impl Display {
    /// Picks the view: JSON when asked, the live view on a terminal, plain
    /// lines otherwise.
    pub fn new(json: bool) -> Display {
        if json {
            Display::Json
        } else if std::io::stdout().is_terminal() {
            Display::Live(Box::new(Live::new()))
        } else {
            Display::Plain {
                last: HashMap::new(),
            }
        }
    }

    /// Plain lines, whatever stdout is (a stream of many sessions has no
    /// live view).
    pub fn plain() -> Display {
        Display::Plain {
            last: HashMap::new(),
        }
    }

    /// How long the display thread may wait for an event before it should
    /// call [`tick`](Self::tick).
    pub fn patience(&self) -> Duration {
        match self {
            Display::Live(_) => FRAME,
            _ => Duration::from_secs(3600),
        }
    }

    /// Shows one event (the JSON shape, whether it came from a session in
    /// this process or from the daemon).
    pub fn show(&mut self, event: &Event, out: &mut Stdout) -> anyhow::Result<()> {
        match self {
            Display::Json => out.json(event)?,
            Display::Plain { last } => show_plain(last, event, out)?,
            Display::Live(live) => live.show(event, out)?,
        }
        Ok(())
    }

    /// Time passed without events: the live view redraws (elapsed time,
    /// spinners).
    pub fn tick(&mut self, out: &mut Stdout) -> anyhow::Result<()> {
        if let Display::Live(live) = self {
            live.draw(out, false)?;
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
                live.pending.push_str(text);
                live.pending.push('\n');
                let _ = live.draw(out, true);
            }
        }
    }
}

type Key = (String, String);

/// An item's latest state, as the views keep it.
#[derive(Debug, Clone)]
struct Row {
    handler: String,
    item: String,
    status: ItemStatus,
    text: String,
    value: Option<u64>,
    max: Option<u64>,
}

impl Row {
    /// The row of an `item` event; `None` for other events (and for a
    /// status this version does not know, which it cannot place).
    fn of(event: &Event) -> Option<Row> {
        let Event::Item {
            handler,
            item,
            status,
            text,
            value,
            max,
            ..
        } = event
        else {
            return None;
        };
        Some(Row {
            handler: handler.clone(),
            item: item.clone(),
            status: status.parse().ok()?,
            text: text.clone().unwrap_or_default(),
            value: *value,
            max: *max,
        })
    }

    fn key(&self) -> Key {
        (self.handler.clone(), self.item.clone())
    }
}

/// The item's text after `gap`, escaped; nothing when it has none.
fn text_after(s: &Row, gap: &str) -> String {
    if s.text.is_empty() {
        String::new()
    } else {
        format!("{gap}{}", escape(&s.text))
    }
}

/// `handler/item: status value/max text`, escaped.
fn item_line(s: &Row) -> String {
    let amount = match (s.value, s.max) {
        (Some(v), Some(m)) => format!(" {v}/{m}"),
        (Some(v), None) => format!(" {v}"),
        _ => String::new(),
    };
    format!(
        "{}/{}: {}{amount}{}",
        s.handler,
        escape(&s.item),
        s.status,
        text_after(s, " ")
    )
}

/// The line of an event that is printed once (start, log entry, end), or
/// `None` for item changes and the daemon's own events.
fn event_line(event: &Event) -> Option<String> {
    Some(match event {
        Event::SessionStarted {
            session, trigger, ..
        } => {
            format!("session {session} started ({trigger})")
        }
        Event::Log {
            id,
            time,
            level,
            handler,
            item,
            text,
            actionable,
        } => format!(
            "log {}",
            log_line(
                *id,
                time,
                level,
                handler,
                item.as_deref(),
                text,
                *actionable
            )
        ),
        Event::SessionFinished {
            session,
            outcome,
            counts,
            failed_handlers,
            ..
        } => summary_line(session, outcome, counts, failed_handlers),
        Event::Trigger {
            trigger,
            reason,
            time,
        } => format!("trigger {trigger} fired at {time}: {reason}"),
        Event::Conflict {
            id,
            handler,
            item,
            text,
            ..
        } => format!(
            "conflict #{id} {}: {}  (decide: syncmgr conflicts show {id})",
            escape(&format!("{handler}/{item}")),
            escape(text)
        ),
        Event::ConflictResolved {
            handler,
            item,
            conflict_id,
        } => format!(
            "conflict resolved {}: {}",
            escape(&format!("{handler}/{item}")),
            escape(conflict_id)
        ),
        Event::ConflictRefused {
            handler,
            item,
            reason,
            ..
        } => format!(
            "conflict not resolved {}: {}",
            escape(&format!("{handler}/{item}")),
            escape(reason)
        ),
        Event::Item { .. } | Event::LogDeleted { .. } | Event::Queued { .. } => return None,
    })
}

/// One log entry as a line for people; `time` in RFC 3339 (as the JSON
/// shapes carry it), shown to the second.
pub fn log_line(
    id: i64,
    time: &str,
    level: &str,
    handler: &str,
    item: Option<&str>,
    text: &str,
    actionable: bool,
) -> String {
    let target = match item {
        Some(item) => format!("{handler}/{item}"),
        None => handler.to_owned(),
    };
    let time = chrono::DateTime::parse_from_rfc3339(time).map_or_else(
        |_| time.to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
    );
    format!(
        "#{id} {time} {level:<11} {}: {}{}",
        escape(&target),
        escape(text),
        if actionable {
            format!("  (act on it: syncmgr log show {id})")
        } else {
            String::new()
        }
    )
}

fn show_plain(
    last: &mut HashMap<Key, (ItemStatus, String)>,
    event: &Event,
    out: &mut Stdout,
) -> anyhow::Result<()> {
    if let Some(s) = Row::of(event) {
        let now = (s.status, s.text.clone());
        if last.get(&s.key()) != Some(&now) {
            writeln!(out, "{}", item_line(&s))?;
            last.insert(s.key(), now);
        }
    } else if let Some(line) = event_line(event) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// State of the live view.
#[derive(Debug)]
pub struct Live {
    started: Instant,
    /// Items not finished yet, in the order they were first seen.
    running: BTreeMap<u64, Row>,
    /// Every item seen: its place, and whether it has finished.
    order: HashMap<Key, (u64, bool)>,
    next: u64,
    /// Items seen, and finished, and failed or stopped.
    seen: u64,
    finished: u64,
    troubled: u64,
    /// Lines to print above the area at the next draw.
    pending: String,
    /// Lines of the area on screen now.
    area_lines: usize,
    last_draw: Option<Instant>,
    dirty: bool,
    over: bool,
}

impl Live {
    fn new() -> Live {
        Live {
            started: Instant::now(),
            running: BTreeMap::new(),
            order: HashMap::new(),
            next: 0,
            seen: 0,
            finished: 0,
            troubled: 0,
            pending: String::new(),
            area_lines: 0,
            last_draw: None,
            dirty: true,
            over: false,
        }
    }

    fn show(&mut self, event: &Event, out: &mut Stdout) -> anyhow::Result<()> {
        if let Some(row) = Row::of(event) {
            self.item(row);
        } else if let Some(line) = event_line(event) {
            self.pending.push_str(&line);
            self.pending.push('\n');
            if matches!(event, Event::SessionFinished { .. }) {
                self.over = true;
                return self.draw(out, true);
            }
        } else {
            return Ok(());
        }
        self.dirty = true;
        self.draw(out, false)
    }

    fn item(&mut self, s: Row) {
        let next = self.next;
        let (order, finished) = self.order.entry(s.key()).or_insert((next, false));
        let order = *order;
        if order == next {
            self.next += 1;
            self.seen += 1;
        }
        if s.status.is_terminal() {
            self.running.remove(&order);
            if !*finished {
                *finished = true;
                self.finished += 1;
                if matches!(
                    s.status,
                    ItemStatus::Failed | ItemStatus::Stopped | ItemStatus::Deleted
                ) {
                    self.troubled += 1;
                }
                let _ = writeln!(self.pending, "{}", finished_line(&s));
            }
        } else {
            if *finished {
                // Running again (a retry round): no longer counted as done.
                *finished = false;
                self.finished -= 1;
            }
            self.running.insert(order, s);
        }
    }

    /// Redraws: the pending lines, then the area. Throttled to [`FRAME`]
    /// unless `now` is set.
    fn draw(&mut self, out: &mut Stdout, now: bool) -> anyhow::Result<()> {
        let due = self.last_draw.is_none_or(|t| t.elapsed() >= FRAME);
        if !now && !due {
            return Ok(());
        }
        if !now && !self.dirty && self.pending.is_empty() {
            // Nothing new: still redraw once a second for the clock and
            // spinners.
            if self
                .last_draw
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
            {
                return Ok(());
            }
        }
        let (height, width) = console::Term::stdout().size();
        let width = usize::from(width.max(20));
        let mut buffer = String::new();
        if self.area_lines > 0 {
            // Back to the top of the area, and clear from there down.
            let _ = write!(buffer, "\r\x1b[{}A\x1b[J", self.area_lines);
        } else {
            buffer.push_str("\r\x1b[J");
        }
        buffer.push_str(&self.pending);
        self.pending.clear();
        self.area_lines = 0;
        if !self.over {
            let rows = usize::from(height).saturating_sub(3).clamp(1, MAX_ROWS);
            let spinner =
                ['|', '/', '-', '\\'][(self.started.elapsed().as_millis() / 250 % 4) as usize];
            // Items at work first, then those still waiting, each in the
            // order they were first seen.
            let working = self
                .running
                .values()
                .filter(|s| s.status != ItemStatus::Pending);
            let waiting = self
                .running
                .values()
                .filter(|s| s.status == ItemStatus::Pending);
            for s in working.chain(waiting).take(rows) {
                let line = running_line(s, spinner);
                buffer.push_str(&console::truncate_str(&line, width - 1, "…"));
                buffer.push('\n');
                self.area_lines += 1;
            }
            if self.running.len() > rows {
                let _ = writeln!(buffer, "  … and {} more", self.running.len() - rows);
                self.area_lines += 1;
            }
            let overall = self.overall_line();
            buffer.push_str(&console::truncate_str(&overall, width - 1, "…"));
            buffer.push('\n');
            self.area_lines += 1;
        }
        out.write_all(buffer.as_bytes())?;
        out.flush()?;
        self.last_draw = Some(Instant::now());
        self.dirty = false;
        Ok(())
    }

    fn overall_line(&self) -> String {
        let elapsed = self.started.elapsed().as_secs();
        let clock = format!(
            "{:02}:{:02}:{:02}",
            elapsed / 3600,
            elapsed / 60 % 60,
            elapsed % 60
        );
        let bar = bar(self.finished, self.seen, 30);
        let mut line = format!(
            "overall [{bar}] {}/{} items  {clock}",
            self.finished, self.seen
        );
        if self.troubled > 0 {
            let _ = write!(line, "  ({} failed or stopped)", self.troubled);
        }
        line
    }
}

/// A finished item, as the line left above the live area.
fn finished_line(s: &Row) -> String {
    format!(
        "{:>9}  {}/{}{}",
        s.status.as_str(),
        s.handler,
        escape(&s.item),
        text_after(s, "  ")
    )
}

fn running_line(s: &Row, spinner: char) -> String {
    let progress = match (s.value, s.max) {
        (Some(v), Some(m)) if m > 0 => format!(" [{}] {:>3}%", bar(v, m, 20), v.min(m) * 100 / m),
        _ => String::new(),
    };
    format!(
        "{spinner} {}/{} {}{progress}{}",
        s.handler,
        escape(&s.item),
        s.status,
        text_after(s, " ")
    )
}

/// A bar of `width` cells, `done` of `total` full.
fn bar(done: u64, total: u64, width: usize) -> String {
    let full = if total == 0 {
        0
    } else {
        (done.min(total) as u128 * width as u128 / total as u128) as usize
    };
    format!("{}{}", "#".repeat(full), " ".repeat(width - full))
}

/// The closing line for people.
fn summary_line(session: &str, outcome: &str, c: &Counts, failed_handlers: &[String]) -> String {
    let mut line = format!(
        "session {session} {outcome}: {} succeeded, {} failed, {} skipped, {} stopped",
        c.succeeded, c.failed, c.skipped, c.stopped
    );
    if !failed_handlers.is_empty() {
        line.push_str(&format!(
            "; handlers that failed: {}",
            failed_handlers.join(", ")
        ));
    }
    line
}
