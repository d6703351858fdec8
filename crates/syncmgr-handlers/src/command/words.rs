//! Splitting a command line into words the way a POSIX shell would, without
//! anything else a shell does: no expansion, no globbing, no operators, and
//! never running a shell.
//!
//! Characters a shell would give a meaning to, when they stand unquoted, are
//! refused rather than passed on literally: `rsync a b > log` run without a
//! shell would hand rsync the arguments `>` and `log`, which is never what was
//! meant. Quote them to pass them literally, or run `sh -c '...'` as the
//! program when a shell is wanted.

use super::CommandError;

/// Characters with a shell meaning anywhere in an unquoted word.
const SHELL_SPECIAL: &[char] = &['|', '&', ';', '<', '>', '(', ')', '$', '`', '*', '?', '['];

/// Characters with a shell meaning at the start of an unquoted word
/// (comment, tilde expansion).
const SHELL_SPECIAL_AT_START: &[char] = &['#', '~'];

/// Splits `text` into words: blanks separate words; `'...'` keeps everything
/// literally; `"..."` keeps everything but `\\`, `\"`, `\$`, `` \` `` (which
/// lose their backslash) and a backslash-newline (removed); outside quotes a
/// backslash keeps the next character literally and a backslash-newline is
/// removed. `""` is an empty word.
///
/// Positions in errors count characters from 1.
pub fn split_words(text: &str) -> Result<Vec<String>, CommandError> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word has begun (it may still be empty: `''`).
    let mut started = false;
    let mut chars = text.chars().enumerate().map(|(i, c)| (i + 1, c)).peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            '\'' => {
                started = true;
                loop {
                    match chars.next() {
                        Some((_, '\'')) => break,
                        Some((_, c)) => word.push(c),
                        None => return Err(CommandError::UnterminatedQuote { quote: '\'', at }),
                    }
                }
            }
            '"' => {
                started = true;
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, c @ ('\\' | '"' | '$' | '`'))) => word.push(c),
                            Some((_, '\n')) => {}
                            Some((_, c)) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => {
                                return Err(CommandError::UnterminatedQuote { quote: '"', at });
                            }
                        },
                        Some((_, c)) => word.push(c),
                        None => return Err(CommandError::UnterminatedQuote { quote: '"', at }),
                    }
                }
            }
            '\\' => match chars.next() {
                Some((_, '\n')) => {}
                Some((_, c)) => {
                    started = true;
                    word.push(c);
                }
                None => return Err(CommandError::TrailingBackslash),
            },
            c if SHELL_SPECIAL.contains(&c)
                || (!started && SHELL_SPECIAL_AT_START.contains(&c)) =>
            {
                return Err(CommandError::ShellSyntax { ch: c, at });
            }
            c => {
                started = true;
                word.push(c);
            }
        }
    }
    if started {
        words.push(word);
    }
    Ok(words)
}

/// Renders `argv` for a status text: words that need it are single-quoted so
/// that the text reads back through [`split_words`].
pub(crate) fn join_words(argv: &[String]) -> String {
    let mut out = String::new();
    for (i, word) in argv.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let plain = !word.is_empty()
            && word.chars().all(|c| {
                c.is_alphanumeric()
                    || matches!(c, '-' | '_' | '.' | '/' | ':' | ',' | '=' | '+' | '@' | '%')
            });
        if plain {
            out.push_str(word);
        } else {
            out.push('\'');
            out.push_str(&word.replace('\'', r"'\''"));
            out.push('\'');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<String> {
        split_words(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn error(text: &str) -> String {
        split_words(text).unwrap_err().to_string()
    }

    #[test]
    fn blanks_separate_words() {
        assert_eq!(
            split("rsync -a  src/\tdst/\n"),
            ["rsync", "-a", "src/", "dst/"]
        );
        assert!(split("").is_empty());
        assert!(split("  \t ").is_empty());
    }

    #[test]
    fn quotes() {
        assert_eq!(split("'a b' \"c d\""), ["a b", "c d"]);
        assert_eq!(
            split("pre'fix 'and\" quoted\"post"),
            ["prefix and quotedpost"]
        );
        assert_eq!(split("'' \"\" x"), ["", "", "x"]);
        // Single quotes keep everything, backslashes and specials included.
        assert_eq!(split(r"'a\b $HOME *.jpg > |'"), [r"a\b $HOME *.jpg > |"]);
        // Double quotes: no expansion, `$` and friends are literal.
        assert_eq!(split(r#""$HOME" "`x`" "*.jpg""#), ["$HOME", "`x`", "*.jpg"]);
        // Inside double quotes only \\ \" \$ \` lose the backslash.
        assert_eq!(
            split(r#""a\"b" "c\\d" "e\$f" "g\nh""#),
            ["a\"b", r"c\d", "e$f", r"g\nh"]
        );
        assert_eq!(split("\"a\\\nb\""), ["ab"]);
        // The usual way to put a single quote in a single-quoted word.
        assert_eq!(split(r"'it'\''s'"), ["it's"]);
    }

    #[test]
    fn backslashes() {
        assert_eq!(split(r"a\ b c\$d \*"), ["a b", "c$d", "*"]);
        assert_eq!(split("a \\\nb"), ["a", "b"]);
        assert_eq!(split(r"\'"), ["'"]);
        assert_eq!(error(r"abc\"), "backslash at the end of the command");
    }

    #[test]
    fn unterminated_quotes_say_where_they_began() {
        assert_eq!(
            error("echo 'abc"),
            "unterminated ' quote (opened at character 6)"
        );
        assert_eq!(
            error("a \"bc"),
            "unterminated \" quote (opened at character 3)"
        );
        assert_eq!(
            error("a \"bc\\"),
            "unterminated \" quote (opened at character 3)"
        );
    }

    #[test]
    fn shell_syntax_is_refused() {
        for (text, ch, at) in [
            ("rsync a b > log", '>', 11),
            ("a | b", '|', 3),
            ("a; b", ';', 2),
            ("a && b", '&', 3),
            ("echo $HOME", '$', 6),
            ("echo `date`", '`', 6),
            ("ls *.jpg", '*', 4),
            ("ls a?", '?', 5),
            ("ls [ab]", '[', 4),
            ("(sub)", '(', 1),
            ("ls ~/x", '~', 4),
            ("echo #comment", '#', 6),
        ] {
            let err = error(text);
            assert!(
                err.starts_with(&format!("unquoted {ch:?} at character {at}:")),
                "{text:?}: {err}"
            );
            assert!(err.contains("not run through a shell"), "{err}");
        }
        // Inside a word, '#' and '~' mean nothing to a shell.
        assert_eq!(split("a#b c~ 50%"), ["a#b", "c~", "50%"]);
        // Quoted or escaped, they are literal.
        assert_eq!(split(r"'~/x' \~ '#' \#"), ["~/x", "~", "#", "#"]);
    }

    #[test]
    fn join_reads_back() {
        let argv: Vec<String> = ["rclone", "copy", "My Pictures", "it's", "", "a$b", "--x=1"]
            .map(String::from)
            .to_vec();
        let text = join_words(&argv);
        assert_eq!(text, r"rclone copy 'My Pictures' 'it'\''s' '' 'a$b' --x=1");
        assert_eq!(split(&text), argv);
    }
}
