//! Reading progress out of a program's output: splitting the byte stream into
//! lines (carriage returns count as line ends, since progress displays redraw
//! with them), cleaning terminal codes off, and the per-tool parsers.
//!
//! Every parser is a pure function from one cleaned line to a [`Line`].
//! Amounts are always a percentage (`value` of `max` 100): none of these tools
//! gives a total that holds still or is exact in bytes (rsync's total grows
//! during incremental recursion, rclone's sizes are rounded and its total grows
//! as it lists, git counts objects per phase), and a percentage keeps the bars
//! of all items comparable.
//!
//! - `none`: every line is a message.
//! - `percent`: a line with a percentage (`NN%` or `NN.N%`, the last one on
//!   the line, 0 to 100) is progress; others are messages.
//! - `rsync` (`--info=progress2`): `BYTES PCT% RATE/s ETA [(xfr#N, to-chk=A/B)]`
//!   is progress at PCT, rsync's percentage of the bytes of the file list
//!   known so far. rsync reports 0% throughout a run that has nothing to
//!   transfer; the text still shows `to-chk` counting down. With `--progress`
//!   instead, the same lines are per file.
//! - `rclone` (`--progress`, `--stats-one-line`, or stats in the log):
//!   `DONE UNIT / TOTAL UNIT, PCT%, ...` anywhere in the line (the last such
//!   one: on a pipe rclone's redraws run together) is progress; `-` for PCT
//!   is progress without an amount. The rest of a `--progress` block (the
//!   file and check counts, elapsed time, the per-file lines) is noise, and
//!   `ERROR :` log lines are problems wherever they appear, since `--progress`
//!   moves the log to stdout.
//! - `git` (`--progress`): `[remote: ]Phase name: PCT% (A/B)...` is progress at
//!   PCT *of that phase*, and the text names the phase; so the bar fills once
//!   per phase (counting, compressing, receiving, resolving). A phase line
//!   without a percentage (`Enumerating objects: 404, done.`) is progress
//!   without an amount.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::CommandError;

/// The longest line kept, in bytes. A longer one is cut into pieces of this
/// size (not dropped: some tools redraw with terminal codes only, and on a
/// pipe all their updates run together on one endless line).
pub const LINE_MAX: usize = 4000;

/// How progress is read from an item's output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgressParser {
    /// No progress; lines only update the status text.
    None,
    /// The last percentage on a line.
    #[default]
    Percent,
    /// rsync `--info=progress2`.
    Rsync,
    /// rclone `--progress` / `--stats-one-line`.
    Rclone,
    /// git `--progress`.
    Git,
}

impl ProgressParser {
    /// Every parser, in documentation order.
    pub const ALL: &'static [ProgressParser] = &[
        ProgressParser::None,
        ProgressParser::Percent,
        ProgressParser::Rsync,
        ProgressParser::Rclone,
        ProgressParser::Git,
    ];

    /// The name used in the TOML file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ProgressParser::None => "none",
            ProgressParser::Percent => "percent",
            ProgressParser::Rsync => "rsync",
            ProgressParser::Rclone => "rclone",
            ProgressParser::Git => "git",
        }
    }

    /// What one cleaned line (see [`clean_line`]) is.
    pub fn classify(self, line: &str) -> Line<'_> {
        match self {
            ProgressParser::None => Line::Message(line),
            ProgressParser::Percent => percent(line),
            ProgressParser::Rsync => rsync(line),
            ProgressParser::Rclone => rclone(line),
            ProgressParser::Git => git(line),
        }
    }
}

impl fmt::Display for ProgressParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProgressParser {
    type Err = CommandError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProgressParser::ALL
            .iter()
            .copied()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| CommandError::UnknownParser(s.to_owned()))
    }
}

/// What a line of output is, to a parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// A progress report: `text` is what to show, `percent` the amount done
    /// (0 to 100) when the line gives one.
    Progress {
        /// The part of the line worth showing.
        text: &'a str,
        /// Percent done, if the line says.
        percent: Option<u8>,
    },
    /// Part of the tool's progress display that adds nothing: neither shown
    /// nor logged.
    Noise,
    /// An ordinary line: shown as the status text, and kept in the results log
    /// when it came on standard error.
    Message(&'a str),
    /// A line reporting a problem: kept in the log whichever stream it came on.
    Problem(&'a str),
}

/// The generic parser: the last `NN%` or `NN.N%` of the line, if any is
/// between 0 and 100.
pub fn percent(line: &str) -> Line<'_> {
    match last_percent(line) {
        Some(p) => Line::Progress {
            text: line,
            percent: Some(p),
        },
        None => Line::Message(line),
    }
}

/// rsync `--info=progress2` (and `--progress`) lines.
pub fn rsync(line: &str) -> Line<'_> {
    let mut tokens = line.split_ascii_whitespace();
    let (Some(bytes), Some(pct), Some(rate)) = (tokens.next(), tokens.next(), tokens.next()) else {
        return Line::Message(line);
    };
    // BYTES is `1,238,099`, or `1.24M` with --human-readable.
    let size_like = bytes.starts_with(|c: char| c.is_ascii_digit())
        && bytes
            .trim_end_matches(['K', 'M', 'G', 'T', 'P'])
            .chars()
            .all(|c| c.is_ascii_digit() || c == ',' || c == '.');
    match percent_token(pct) {
        Some(p) if size_like && rate.ends_with("/s") => Line::Progress {
            text: line,
            percent: Some(p),
        },
        _ => Line::Message(line),
    }
}

/// The start of each line of an rclone `--progress` block other than the
/// bytes line, and of the headings above its per-file lines.
const RCLONE_BLOCK: &[&str] = &[
    "Transferred:",
    "Checks:",
    "Deleted:",
    "Renamed:",
    "Errors:",
    "Elapsed time:",
    "Checking:",
    "Transferring:",
    "Server Side Copies:",
    "Server Side Moves:",
    "* ",
];

/// rclone's stats, in any of their forms.
pub fn rclone(line: &str) -> Line<'_> {
    if let Some((start, percent)) = rclone_bytes(line) {
        // Show the stats from their label when there is one: on a pipe the
        // block's last line and the next block's first run together.
        let text = match line[..start].rfind("Transferred:") {
            Some(label) => &line[label..],
            None => &line[start..],
        };
        return Line::Progress { text, percent };
    }
    if line.contains("ERROR : ") {
        return Line::Problem(line);
    }
    if RCLONE_BLOCK.iter().any(|p| line.starts_with(p)) {
        return Line::Noise;
    }
    Line::Message(line)
}

/// Finds the last `DONE UNIT / TOTAL UNIT, PCT%` (or `, -`) of a line: the
/// byte index where DONE starts, and PCT. Units are required on the total, so
/// the file-count line (`Transferred: 2 / 10, 20%`) does not match.
fn rclone_bytes(line: &str) -> Option<(usize, Option<u8>)> {
    let mut found = None;
    for (slash, _) in line.match_indices(" / ") {
        let (before, after) = (&line[..slash], &line[slash + 3..]);
        // TOTAL UNIT, then ", PCT%" or ", -".
        let Some((total, rest)) = after.split_once(", ") else {
            continue;
        };
        if !sized(total) {
            continue;
        }
        let pct_text = rest.split(',').next().unwrap_or("").trim();
        let pct = if pct_text == "-" {
            None
        } else {
            match percent_token(pct_text) {
                Some(p) => Some(p),
                None => continue,
            }
        };
        // DONE UNIT: "1.234 MiB" (now) or "1.234M" (rclone before 1.5x).
        let Some(start) = done_start(before) else {
            continue;
        };
        found = Some((start, pct));
    }
    found
}

/// `10 MiB`, `1.234 GiB`, `0 B`, `100.000 MBytes`, `1.5M`.
fn sized(text: &str) -> bool {
    let text = text.trim();
    let (number, unit) = match text.split_once(' ') {
        Some((n, u)) => (n, u),
        None => {
            let split = text
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(text.len());
            text.split_at(split)
        }
    };
    is_decimal(number) && !unit.is_empty() && unit.chars().all(|c| c.is_ascii_alphabetic())
}

/// Where the `DONE UNIT` ending `before` starts.
fn done_start(before: &str) -> Option<usize> {
    let trimmed = before.trim_end();
    let unit_start = trimmed
        .rfind(|c: char| !c.is_ascii_alphabetic())
        .map_or(0, |i| i + 1);
    let unit = &trimmed[unit_start..];
    if unit.is_empty() {
        return None;
    }
    let number_end = trimmed[..unit_start].trim_end().len();
    let number_start = trimmed[..number_end]
        .rfind(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or(0, |i| i + 1);
    is_decimal(&trimmed[number_start..number_end]).then_some(number_start)
}

/// git `--progress` lines.
pub fn git(line: &str) -> Line<'_> {
    let body = line.strip_prefix("remote: ").unwrap_or(line);
    let Some((phase, rest)) = body.split_once(':') else {
        return Line::Message(line);
    };
    // Phases are capitalized words ("Receiving objects"); git's own messages
    // are lower case ("fatal:", "warning:", "hint:").
    let is_phase = phase.starts_with(|c: char| c.is_ascii_uppercase())
        && phase
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-');
    let rest = rest.trim_start();
    if !is_phase || !rest.starts_with(|c: char| c.is_ascii_digit()) {
        return Line::Message(line);
    }
    // "45% (450/1000), 1.20 MiB | 2.00 MiB/s" or "404, done."
    let first = rest.split([' ', ',']).next().unwrap_or("");
    if first.ends_with('%') {
        match percent_token(first) {
            Some(p) => Line::Progress {
                text: line,
                percent: Some(p),
            },
            None => Line::Message(line),
        }
    } else if first.chars().all(|c| c.is_ascii_digit()) {
        Line::Progress {
            text: line,
            percent: None,
        }
    } else {
        Line::Message(line)
    }
}

/// `44%` or `12.5%`, 0 to 100, as whole percent (rounded down).
fn percent_token(token: &str) -> Option<u8> {
    let number = token.strip_suffix('%')?;
    if !is_decimal(number) {
        return None;
    }
    whole_percent(number)
}

fn is_decimal(text: &str) -> bool {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, "0"));
    !whole.is_empty()
        && !fraction.is_empty()
        && whole.chars().all(|c| c.is_ascii_digit())
        && fraction.chars().all(|c| c.is_ascii_digit())
}

fn whole_percent(number: &str) -> Option<u8> {
    let whole = number.split('.').next()?;
    let value: u32 = whole.parse().ok()?;
    let exact_hundred = value == 100
        && number
            .split('.')
            .nth(1)
            .is_none_or(|f| f.bytes().all(|b| b == b'0'));
    match value {
        0..=99 => u8::try_from(value).ok(),
        100 if exact_hundred => Some(100),
        _ => None,
    }
}

/// The last percentage between 0 and 100 on a line.
fn last_percent(line: &str) -> Option<u8> {
    let bytes = line.as_bytes();
    let mut best = None;
    for (i, _) in line.match_indices('%') {
        // Walk back over DIGITS[.DIGITS].
        let mut start = i;
        while start > 0 && bytes[start - 1].is_ascii_digit() {
            start -= 1;
        }
        if start == i {
            continue;
        }
        if start >= 2 && bytes[start - 1] == b'.' && bytes[start - 2].is_ascii_digit() {
            start -= 1;
            while start > 0 && bytes[start - 1].is_ascii_digit() {
                start -= 1;
            }
        }
        // "v2%" or "x50%" is not a percentage; "..........100%" (wget) is.
        if start > 0 && bytes[start - 1].is_ascii_alphabetic() {
            continue;
        }
        if let Some(p) = whole_percent(&line[start..i]) {
            best = Some(p);
        }
    }
    best
}

/// Splits a byte stream into lines at `\n` and `\r`, cutting lines longer
/// than [`LINE_MAX`] into pieces. Lines come out as raw text; pass them
/// through [`clean_line`].
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Takes the next bytes of the stream; appends the lines they complete.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<String>) {
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                if !self.buf.is_empty() {
                    out.push(syncmgr_core::text::escape_bytes(&self.buf).into_owned());
                    self.buf.clear();
                }
            } else {
                self.buf.push(b);
                if self.buf.len() >= LINE_MAX {
                    self.cut(out);
                }
            }
        }
    }

    /// The stream ended: the unterminated last line, if any.
    pub fn finish(&mut self, out: &mut Vec<String>) {
        if !self.buf.is_empty() {
            out.push(syncmgr_core::text::escape_bytes(&self.buf).into_owned());
            self.buf.clear();
        }
    }

    /// Emits the buffer's first piece, cut at a UTF-8 boundary.
    fn cut(&mut self, out: &mut Vec<String>) {
        let mut end = self.buf.len();
        // Do not split a multi-byte character (continuation bytes are 10xxxxxx)
        // unless the buffer is nothing but continuation bytes.
        while end > 1 && self.buf[end - 1] & 0xC0 == 0x80 {
            end -= 1;
        }
        if end > 1 && self.buf[end - 1] >= 0xC0 {
            end -= 1;
        }
        if end <= 1 {
            end = self.buf.len();
        }
        out.push(syncmgr_core::text::escape_bytes(&self.buf[..end]).into_owned());
        self.buf.drain(..end);
    }
}

/// Removes terminal escape sequences (colours, cursor movement, titles) and
/// other control characters (a tab becomes a space), and trims.
pub fn clean_line(raw: &str) -> Cow<'_, str> {
    if !raw.chars().any(char::is_control) {
        return Cow::Borrowed(raw.trim());
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC (a title): up to BEL or ESC \.
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            chars.next_if_eq(&'\\');
                            break;
                        }
                    }
                }
                // A two-character sequence (ESC 7, ESC =, ...).
                _ => {}
            },
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    let trimmed = out.trim();
    Cow::Owned(if trimmed.len() == out.len() {
        out
    } else {
        trimmed.to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixture's recorded output: everything after its `--- output ---` line.
    fn fixture(text: &str) -> &str {
        let marker = "--- output ---\n";
        let at = text.find(marker).expect("fixture marker");
        &text[at + marker.len()..]
    }

    /// Runs `output` through the splitter, the cleaner and `parser`.
    fn parse_all(parser: ProgressParser, output: &str) -> Vec<(String, Kind)> {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        // Feed in small chunks, as a pipe would deliver them.
        for chunk in output.as_bytes().chunks(7) {
            splitter.feed(chunk, &mut lines);
        }
        splitter.finish(&mut lines);
        lines
            .iter()
            .map(|raw| clean_line(raw))
            .filter(|l| !l.is_empty())
            .map(|l| {
                let kind = match parser.classify(&l) {
                    Line::Progress { text, percent } => Kind::Progress(text.to_owned(), percent),
                    Line::Noise => Kind::Noise,
                    Line::Message(_) => Kind::Message,
                    Line::Problem(_) => Kind::Problem,
                };
                (l.into_owned(), kind)
            })
            .collect()
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Kind {
        Progress(String, Option<u8>),
        Noise,
        Message,
        Problem,
    }

    fn percents(parsed: &[(String, Kind)]) -> Vec<u8> {
        parsed
            .iter()
            .filter_map(|(_, k)| match k {
                Kind::Progress(_, Some(p)) => Some(*p),
                _ => None,
            })
            .collect()
    }

    fn messages(parsed: &[(String, Kind)]) -> Vec<&str> {
        parsed
            .iter()
            .filter(|(_, k)| *k == Kind::Message)
            .map(|(l, _)| l.as_str())
            .collect()
    }

    #[test]
    fn parser_names() {
        for p in ProgressParser::ALL {
            assert_eq!(p.as_str().parse::<ProgressParser>().unwrap(), *p);
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        assert_eq!(ProgressParser::default(), ProgressParser::Percent);
        assert_eq!(
            "Git".parse::<ProgressParser>().unwrap_err().to_string(),
            "unknown parser \"Git\" (expected one of: none, percent, rsync, rclone, git)"
        );
    }

    #[test]
    fn rsync_recorded_progress2() {
        let parsed = parse_all(
            ProgressParser::Rsync,
            fixture(include_str!(
                "../../tests/fixtures/command/rsync-progress2.txt"
            )),
        );
        let p = percents(&parsed);
        // Run 1 starts at 0% and reaches 100%; every run's percentages only grow.
        assert_eq!(p[0], 0);
        assert!(p.contains(&44) || p.contains(&43), "{p:?}");
        assert!(p.iter().filter(|&&x| x == 100).count() >= 4, "{p:?}");
        assert_eq!(
            parsed[1],
            (
                "300,000   1%  254.85MB/s    0:00:00 (xfr#1, to-chk=13/15)".to_owned(),
                Kind::Progress(
                    "300,000   1%  254.85MB/s    0:00:00 (xfr#1, to-chk=13/15)".to_owned(),
                    Some(1)
                )
            )
        );
        // The -v run's file names and summary are messages; so is nothing else.
        let m = messages(&parsed);
        assert_eq!(
            m,
            [
                "sending incremental file list",
                "created directory rs/dstv",
                "./",
                "f1",
                "f10",
                "f11",
                "f12",
                "f2",
                "f3",
                "f4",
                "f5",
                "f6",
                "f7",
                "f8",
                "f9",
                "sub/",
                "sub/x",
                "sent 23,406,497 bytes  received 304 bytes  46,813,602.00 bytes/sec",
                "total size is 23,400,003  speedup is 1.00",
            ]
        );
        // --human-readable and incremental recursion (ir-chk) still parse.
        assert!(
            parsed.iter().any(|(l, k)| l.contains("ir-chk=")
                && l.contains('K')
                && matches!(k, Kind::Progress(_, Some(_)))),
            "{parsed:?}"
        );
        assert!(
            parsed
                .iter()
                .all(|(_, k)| *k != Kind::Noise && *k != Kind::Problem)
        );
    }

    #[test]
    fn rsync_recorded_error() {
        let parsed = parse_all(
            ProgressParser::Rsync,
            fixture(include_str!("../../tests/fixtures/command/rsync-error.txt")),
        );
        assert_eq!(percents(&parsed), [10, 100, 100]);
        assert_eq!(
            messages(&parsed),
            [
                "rsync: [sender] link_stat \"/tmp/rs/nonexist\" failed: No such file or directory (2)",
                "rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1347) [sender=3.2.7]"
            ]
        );
    }

    #[test]
    fn rsync_lines() {
        let line = "1,238,099  44%   11.79MB/s    0:00:00 (xfr#3, to-chk=7/11)";
        assert_eq!(
            rsync(line),
            Line::Progress {
                text: line,
                percent: Some(44)
            }
        );
        assert_eq!(
            rsync("1.24M 100% 1.00MB/s 0:00:01").into_percent(),
            Some(100)
        );
        for line in [
            "sent 1,234 bytes  received 56 bytes  2,580.00 bytes/sec",
            "f1",
            "12 50% of",
            "a 50% 1MB/s",
        ] {
            assert_eq!(rsync(line), Line::Message(line));
        }
    }

    #[test]
    fn rclone_recorded_progress_blocks() {
        let parsed = parse_all(
            ProgressParser::Rclone,
            fixture(include_str!(
                "../../tests/fixtures/command/rclone-progress.txt"
            )),
        );
        assert_eq!(percents(&parsed), [12, 65, 100]);
        let texts: Vec<&str> = parsed
            .iter()
            .filter_map(|(_, k)| match k {
                Kind::Progress(t, _) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            texts,
            [
                "Transferred:              0 B / 0 B, -, 0 B/s, ETA -",
                // The block's last line ran into the next one's first.
                "Transferred:        1.250 MiB / 10 MiB, 12%, 1.250 MiB/s, ETA 7s",
                "Transferred:        6.500 MiB / 10 MiB, 65%, 2.100 MiB/s, ETA 1s",
                "Transferred:           10 MiB / 10 MiB, 100%, 2.500 MiB/s, ETA 0s",
            ]
        );
        let problems: Vec<&str> = parsed
            .iter()
            .filter(|(_, k)| *k == Kind::Problem)
            .map(|(l, _)| l.as_str())
            .collect();
        assert_eq!(
            problems,
            [
                "2024/06/01 10:00:03 ERROR : photo3.jpg: Failed to copy: googleapi: Error 403: Rate Limit Exceeded, rateLimitExceeded"
            ]
        );
        assert_eq!(
            messages(&parsed),
            [
                "2024/06/01 10:00:05 Failed to copy: googleapi: Error 403: Rate Limit Exceeded, rateLimitExceeded"
            ]
        );
        // Counts, per-file lines, elapsed time: noise.
        assert!(
            parsed
                .iter()
                .any(|(l, k)| l.starts_with("* ") && *k == Kind::Noise)
        );
        assert!(parsed.contains(&("Transferred:            1 / 3, 33%".to_owned(), Kind::Noise)));
    }

    #[test]
    fn rclone_recorded_one_line_stats() {
        let parsed = parse_all(
            ProgressParser::Rclone,
            fixture(include_str!(
                "../../tests/fixtures/command/rclone-stats-one-line.txt"
            )),
        );
        // The log form, then the run-on --progress form (the last of the line).
        assert_eq!(percents(&parsed), [0, 12, 55, 100, 49]);
        let (last, kind) = parsed.last().unwrap();
        assert!(last.starts_with("1.234 MiB / 10 MiB, 12%"), "{last}");
        assert_eq!(
            *kind,
            Kind::Progress(
                "4.936 MiB / 10 MiB, 49%, 2.000 MiB/s, ETA 2s".to_owned(),
                Some(49)
            )
        );
        assert_eq!(
            parsed[1].1,
            Kind::Progress(
                "1.234 MiB / 10 MiB, 12%, 1.234 MiB/s, ETA 7s (xfr#0/3)".to_owned(),
                Some(12)
            )
        );
        let m = messages(&parsed);
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].ends_with("photo1.jpg: Copied (new)"));
        assert!(
            parsed
                .iter()
                .any(|(l, k)| l.contains("permission denied") && *k == Kind::Problem)
        );
    }

    #[test]
    fn rclone_lines() {
        // rclone before 1.5x: "100.000M / 100.000 MBytes".
        let line = "Transferred:      50.000M / 100.000 MBytes, 50%, 10.000 MBytes/s, ETA 5s";
        assert_eq!(
            rclone(line),
            Line::Progress {
                text: line,
                percent: Some(50)
            }
        );
        assert_eq!(rclone("Transferred: 2 / 10, 20%"), Line::Noise);
        assert_eq!(rclone("Checks: 2 / 2, 100%"), Line::Noise);
        assert_eq!(
            rclone("copied 1 / 2, 50%"),
            Line::Message("copied 1 / 2, 50%")
        );
    }

    /// "remote: Counting objects" of "remote: Counting objects:  45% (1/2)".
    fn git_phase(line: &str) -> String {
        let (prefix, body) = match line.strip_prefix("remote: ") {
            Some(body) => ("remote: ", body),
            None => ("", line),
        };
        format!("{prefix}{}", body.split(':').next().unwrap_or(""))
    }

    #[test]
    fn git_recorded_clone() {
        let parsed = parse_all(
            ProgressParser::Git,
            fixture(include_str!("../../tests/fixtures/command/git-clone.txt")),
        );
        assert_eq!(
            messages(&parsed),
            [
                "Cloning into 'gdst2'...",
                "remote: Total 456 (delta 152), reused 0 (delta 0), pack-reused 0 (from 0)",
            ]
        );
        // Each phase climbs to 100 and the next starts again from 0.
        let phases: Vec<(String, u8)> = parsed
            .iter()
            .filter_map(|(l, k)| match k {
                Kind::Progress(_, Some(p)) => Some((git_phase(l), *p)),
                _ => None,
            })
            .collect();
        let mut finished = Vec::new();
        for w in phases.windows(2) {
            if w[0].0 == w[1].0 {
                assert!(w[1].1 >= w[0].1, "{w:?}");
            } else {
                assert_eq!(w[0].1, 100, "{w:?}");
                assert!(w[1].1 <= 1, "{w:?}");
                finished.push(w[0].0.as_str());
            }
        }
        assert_eq!(
            finished,
            [
                "remote: Counting objects",
                "remote: Compressing objects",
                "Receiving objects"
            ]
        );
        assert_eq!(
            phases.last().unwrap(),
            &("Resolving deltas".to_owned(), 100)
        );
        let (last, _) = parsed.last().unwrap();
        assert_eq!(last, "Resolving deltas: 100% (152/152), done.");
        // The remote's padding is trimmed; a phase without a percentage is
        // progress without an amount.
        let enumerating = "remote: Enumerating objects: 456, done.";
        assert_eq!(
            parsed[1],
            (
                enumerating.to_owned(),
                Kind::Progress(enumerating.to_owned(), None)
            )
        );
        let received = "Receiving objects: 100% (456/456), 923.22 KiB | 15.92 MiB/s, done.";
        assert!(
            parsed.contains(&(
                received.to_owned(),
                Kind::Progress(received.to_owned(), Some(100))
            )),
            "{parsed:?}"
        );
    }

    #[test]
    fn git_recorded_fetch_and_push() {
        let fetch = parse_all(
            ProgressParser::Git,
            fixture(include_str!("../../tests/fixtures/command/git-fetch.txt")),
        );
        let m = messages(&fetch);
        assert!(m.contains(&"From file:///tmp/gsrc"), "{m:?}");
        assert!(
            m.iter().any(|l| l.contains("master     -> origin/master")),
            "{m:?}"
        );
        assert_eq!(percents(&fetch).last(), Some(&100));

        let push = parse_all(
            ProgressParser::Git,
            fixture(include_str!("../../tests/fixtures/command/git-push.txt")),
        );
        assert!(
            push.iter()
                .any(|(l, k)| l.starts_with("Writing objects: 100%")
                    && matches!(k, Kind::Progress(_, Some(100))))
        );
        assert!(push.iter().any(|(l, k)| l.starts_with("Delta compression using up to") && *k == Kind::Message));
        assert!(messages(&push).contains(&"To /tmp/gbare"));
    }

    #[test]
    fn git_lines() {
        let line = "Receiving objects:  45% (450/1000), 1.20 MiB | 2.00 MiB/s";
        assert_eq!(
            git(line),
            Line::Progress {
                text: line,
                percent: Some(45)
            }
        );
        let line = "Resolving deltas: 100% (300/300), done.";
        assert_eq!(git(line).into_percent(), Some(100));
        for line in [
            "fatal: repository 'x' does not exist",
            "warning: 3 objects",
            "hint: use --force",
            "Already up to date.",
        ] {
            assert_eq!(git(line), Line::Message(line));
        }
    }

    #[test]
    fn percent_recorded_samples() {
        let parsed = parse_all(
            ProgressParser::Percent,
            fixture(include_str!(
                "../../tests/fixtures/command/percent-samples.txt"
            )),
        );
        // wget dots (including "..........100%"), restic, tqdm, a script; 150% is not one.
        assert_eq!(
            percents(&parsed),
            [0, 49, 100, 0, 34, 100, 0, 45, 100, 10, 20]
        );
        assert!(
            parsed
                .iter()
                .any(|(l, k)| l == "copying 150%" && *k == Kind::Message)
        );
        assert!(messages(&parsed).contains(&"Syncing contacts/default"));
    }

    #[test]
    fn percent_lines() {
        assert_eq!(percent("50% then 75% done").into_percent(), Some(75));
        assert_eq!(percent("12.5%").into_percent(), Some(12));
        assert_eq!(percent("99.99%").into_percent(), Some(99));
        assert_eq!(percent("100.0%").into_percent(), Some(100));
        assert_eq!(percent("100.5%").into_percent(), None);
        assert_eq!(percent("50% and 101%").into_percent(), Some(50));
        assert_eq!(percent("x50% v2%").into_percent(), None);
        assert_eq!(percent("%20 encoded").into_percent(), None);
        assert_eq!(percent(".5%").into_percent(), Some(5));
        assert_eq!(percent("(7%)").into_percent(), Some(7));
        assert_eq!(ProgressParser::None.classify("50%"), Line::Message("50%"));
    }

    #[test]
    fn splitter_handles_cr_crlf_and_long_lines() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        s.feed(b"10%\r20", &mut out);
        s.feed(b"%\r\n\nlast", &mut out);
        assert_eq!(out, ["10%", "20%"]);
        s.finish(&mut out);
        assert_eq!(out, ["10%", "20%", "last"]);

        // A run-on line is cut into pieces, not dropped, at a character boundary.
        let mut out = Vec::new();
        let long = "é".repeat(LINE_MAX);
        s.feed(long.as_bytes(), &mut out);
        s.finish(&mut out);
        assert!(
            out.iter()
                .all(|l| l.len() <= LINE_MAX && !l.contains("\\x")),
            "{:?}",
            out.iter().map(String::len).collect::<Vec<_>>()
        );
        assert_eq!(out.concat(), long);

        let mut out = Vec::new();
        s.feed(b"bad \xff\xfe bytes\n", &mut out);
        // Kept distinguishable: escaped, not replaced by U+FFFD.
        assert_eq!(out, ["bad \\xff\\xfe bytes"]);
    }

    #[test]
    fn cleaning() {
        assert_eq!(clean_line("  plain  "), "plain");
        assert_eq!(
            clean_line("\u{1b}[2K\u{1b}[1A\u{1b}[1Gstats\u{1b}[0m"),
            "stats"
        );
        assert_eq!(clean_line("\u{1b}]0;ETA: 5s\u{7}title gone"), "title gone");
        assert_eq!(clean_line("\u{1b}]0;x\u{1b}\\after"), "after");
        assert_eq!(
            clean_line("Transferred:   \t  1 MiB"),
            "Transferred:      1 MiB"
        );
        assert_eq!(clean_line("remote: x\u{1b}[K"), "remote: x");
        assert_eq!(clean_line("bell\u{7}\u{8}"), "bell");
    }

    impl Line<'_> {
        fn into_percent(self) -> Option<u8> {
            match self {
                Line::Progress { percent, .. } => percent,
                _ => None,
            }
        }
    }
}
