//! Bytes that should be text: what handlers write to stderr, what commands
//! print, the names file systems hold. None of them is promised to be UTF-8.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `bytes` as text, with every byte that is not part of valid UTF-8 written
/// `\xNN`. Unlike a lossy conversion (which turns every such byte into
/// U+FFFD), two names that differ only there stay distinguishable, and the
/// original bytes can be read back from the log.
pub fn escape_bytes(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_bytes_are_escaped_not_replaced() {
        assert!(matches!(
            escape_bytes("naïve".as_bytes()),
            Cow::Borrowed("naïve")
        ));
        assert_eq!(escape_bytes(b"fifo\xff"), "fifo\\xff");
        assert_ne!(escape_bytes(b"a\xfe"), escape_bytes(b"a\xff"));
        // A truncated multi-byte character, then valid text again.
        assert_eq!(escape_bytes(b"x\xc3 y"), "x\\xc3 y");
    }
}
