//! Showing text that came from elsewhere (handlers, file names) to a person.
//!
//! Handler texts and file names may hold any character. Printed as they are,
//! an escape sequence in a file name could clear the screen, move the
//! cursor, or forge a line such as "session ... succeeded"; a newline could
//! split one log line into two. So everything shown on a terminal or in
//! plain lines goes through [`escape`]: control characters (C0, DEL, C1)
//! become visible escapes (`\n`, `\t`, `\x1b`, `\x85`). Backslashes stay
//! as they are (a name that spells `\x1b` reads the same as one holding the
//! byte: harmless, and kinder to the names people really use). JSON output
//! needs none of this (serde escapes control characters), and stays exact.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with control characters made visible (see the module docs).
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Control characters (Unicode's Cc) are C0, DEL and C1: all
            // below U+00A0, so two hex digits always do.
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible() {
        assert!(matches!(escape("plain ü €"), Cow::Borrowed(_)));
        assert_eq!(escape("a\nb\tc\rd"), "a\\nb\\tc\\rd");
        assert_eq!(escape("\x1b[2Jcleared"), "\\x1b[2Jcleared");
        assert_eq!(escape("del\x7f c1\u{9b}"), "del\\x7f c1\\x9b");
        assert!(matches!(escape("back\\slash"), Cow::Borrowed(_)));
        assert_eq!(
            escape("\u{202e}"),
            "\u{202e}",
            "format characters are not controls"
        );
        // A forged line cannot stand on a line of its own.
        let forged = "x\nsession 1 succeeded: 1 succeeded";
        assert!(!escape(forged).contains('\n'));
    }
}
