//! Durations as people write them: one syntax for the command line and the
//! configuration files (and the schedules to come), `humantime`'s: `500ms`,
//! `90s`, `15m`, `1h30m`, `2h 5m`.

use std::time::Duration;

/// Parses a duration with a unit (`90s`, `1h30m`). The error says what was
/// expected.
pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    humantime::parse_duration(trimmed).map_err(|e| {
        format!("invalid duration {text:?} ({e}): write a number with a unit, such as \"90s\", \"15m\" or \"1h30m\"")
    })
}

/// Parses a command-line duration: a plain number is seconds (`--timeout 90`,
/// as the flags were first documented); anything else is [`parse`]d.
pub fn parse_seconds_or_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && trimmed.chars().all(|c| c.is_ascii_digit() || c == '.')
    {
        return trimmed
            .parse::<f64>()
            .ok()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .ok_or_else(|| format!("invalid duration {text:?}"));
    }
    parse(text)
}

/// Writes a duration in the largest unit that is exact (`1h`, `90s`,
/// `1500ms`), which [`parse`] reads back.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".to_owned()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_syntax_round_trips() {
        for (text, ms) in [
            ("500ms", 500),
            ("2s", 2000),
            ("10m", 600_000),
            ("1h", 3_600_000),
            ("1500ms", 1500),
        ] {
            assert_eq!(parse(text), Ok(Duration::from_millis(ms)), "{text}");
            assert_eq!(format(Duration::from_millis(ms)), text);
        }
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse(" 2h 5m "), Ok(Duration::from_secs(7500)));
        assert_eq!(format(Duration::ZERO), "0s");
        for bad in [
            "",
            "2",
            "s",
            "-1s",
            "2sec x",
            "1.5.5s",
            "99999999999999999999h",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("90s"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_command_line_also_takes_plain_seconds() {
        assert_eq!(parse_seconds_or_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse_seconds_or_duration("0.5"),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(
            parse_seconds_or_duration(".25"),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            parse_seconds_or_duration("1m30s"),
            Ok(Duration::from_secs(90))
        );
        for bad in ["1.2.3", "nan", "-5", "inf", "1e400"] {
            assert!(parse_seconds_or_duration(bad).is_err(), "{bad:?}");
        }
    }
}
