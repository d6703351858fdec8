//! The command handler's configuration: its serde form (stored as JSON with
//! the registration, written by users as TOML), validation, and the command
//! line form `ITEM=PROGRAM [ARG...]`.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use syncmgr_core::model::validate_id;

use super::CommandError;
use super::parsers::ProgressParser;
use super::words::split_words;

/// How long a command gets after SIGINT before SIGTERM, and after SIGTERM
/// before SIGKILL, unless the configuration says otherwise. Together they stay
/// below the session's default grace period (5 s), so the engine never has to
/// end the handler for a command that ignores the polite signals.
pub const DEFAULT_SIGNAL_GRACE: Duration = Duration::from_secs(2);

/// A command handler's configuration: its items, and how it stops them.
///
/// Serialized field names are the TOML file's keys (see the module docs of
/// [`crate::command`]); the same document, as JSON, is what a registration
/// stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// The items, in the order they run. TOML: `[[item]]` tables.
    #[serde(rename = "item", default)]
    pub items: Vec<CommandItem>,
    /// How long a cancelled command gets after SIGINT before SIGTERM.
    #[serde(default = "default_grace", with = "duration_text")]
    pub sigint_grace: Duration,
    /// How long a cancelled command gets after SIGTERM before SIGKILL.
    #[serde(default = "default_grace", with = "duration_text")]
    pub sigterm_grace: Duration,
}

/// One item: a program run with its arguments, no shell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandItem {
    /// The item's id (stable: stored choices and the results log name it).
    pub id: String,
    /// What the progress view shows; the id when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The program and its arguments. A program without a slash is looked up
    /// in `PATH`.
    pub argv: Vec<String>,
    /// How progress is read from the program's output.
    #[serde(default)]
    pub parser: ProgressParser,
    /// The working directory (absolute); the manager's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// Variables added to (or replacing some of) the inherited environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Whether the item is synced when the user made no choice for it.
    #[serde(default = "yes")]
    pub checked: bool,
    /// A limit on the run's wall-clock time: past it the command is stopped
    /// like a cancelled one and the item fails. None when absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_text::option"
    )]
    pub timeout: Option<Duration>,
}

fn default_grace() -> Duration {
    DEFAULT_SIGNAL_GRACE
}

fn yes() -> bool {
    true
}

impl Default for CommandConfig {
    fn default() -> Self {
        CommandConfig {
            items: Vec::new(),
            sigint_grace: DEFAULT_SIGNAL_GRACE,
            sigterm_grace: DEFAULT_SIGNAL_GRACE,
        }
    }
}

impl CommandItem {
    /// An item with the defaults: the `percent` parser, checked, no name,
    /// working directory, environment or timeout.
    pub fn new(id: impl Into<String>, argv: Vec<String>) -> Self {
        CommandItem {
            id: id.into(),
            name: None,
            argv,
            parser: ProgressParser::default(),
            cwd: None,
            env: BTreeMap::new(),
            checked: true,
            timeout: None,
        }
    }

    /// The name the progress view shows.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    fn check(&self) -> Result<(), String> {
        validate_id(&self.id)?;
        if let Some(name) = &self.name
            && name.trim().is_empty()
        {
            return Err("name is empty".to_owned());
        }
        match self.argv.first() {
            None => return Err("argv is empty: it needs at least the program".to_owned()),
            Some(program) if program.is_empty() => {
                return Err("argv[0] (the program) is empty".to_owned());
            }
            Some(_) => {}
        }
        if let Some(i) = self.argv.iter().position(|a| a.contains('\0')) {
            return Err(format!("argv[{i}] contains a NUL character"));
        }
        if let Some(cwd) = &self.cwd
            && !cwd.is_absolute()
        {
            // Relative to what? The manager may run from anywhere (a
            // scheduler, a service), so only an absolute path means one thing.
            return Err(format!(
                "cwd {:?} is not an absolute path",
                cwd.display().to_string()
            ));
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(format!(
                    "env key {key:?} is not a variable name (empty, or has '=' or NUL)"
                ));
            }
            if value.contains('\0') {
                return Err(format!("env {key:?} has a NUL character in its value"));
            }
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err("timeout is zero".to_owned());
        }
        Ok(())
    }
}

impl CommandConfig {
    /// Reads and validates the TOML file form.
    ///
    /// Syntax errors, unknown keys and wrong types come with toml's line and
    /// column; validation errors name the item.
    pub fn from_toml(text: &str) -> Result<Self, CommandError> {
        let config: CommandConfig = toml::from_str(text)
            .map_err(|e| CommandError::Toml(e.to_string().trim().to_owned()))?;
        config.validate()?;
        Ok(config)
    }

    /// Builds and validates the configuration from the command line's
    /// repeated `--command 'ITEM=PROGRAM [ARG...]'` and `--parser ITEM=KIND`
    /// values (see the module docs of [`crate::command`]).
    pub fn from_cli<C, P>(commands: &[C], parsers: &[P]) -> Result<Self, CommandError>
    where
        C: AsRef<str>,
        P: AsRef<str>,
    {
        let mut config = CommandConfig::default();
        for arg in commands {
            config.items.push(parse_command_arg(arg.as_ref())?);
        }
        let mut chosen = HashSet::new();
        for arg in parsers {
            let (id, parser) = parse_parser_arg(arg.as_ref())?;
            if !chosen.insert(id.clone()) {
                return Err(CommandError::Argument {
                    flag: "--parser",
                    arg: arg.as_ref().to_owned(),
                    reason: format!("item {id:?} has a parser already"),
                });
            }
            match config.items.iter_mut().find(|i| i.id == id) {
                Some(item) => item.parser = parser,
                None => {
                    return Err(CommandError::Argument {
                        flag: "--parser",
                        arg: arg.as_ref().to_owned(),
                        reason: format!("no --command defines item {id:?}"),
                    });
                }
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: at least one item, ids valid and unique,
    /// a program in every argv, an absolute `cwd`, sane environment names.
    pub fn validate(&self) -> Result<(), CommandError> {
        if self.items.is_empty() {
            return Err(CommandError::NoItems);
        }
        let mut seen = HashSet::new();
        for item in &self.items {
            item.check().map_err(|reason| CommandError::Item {
                id: item.id.clone(),
                reason,
            })?;
            if !seen.insert(item.id.as_str()) {
                return Err(CommandError::DuplicateId(item.id.clone()));
            }
        }
        Ok(())
    }
}

/// Parses one `--command` value, `ITEM=PROGRAM [ARG...]`: the id is
/// everything before the first `=` (no spaces or quotes in it), the rest is
/// split into words by [`split_words`].
pub fn parse_command_arg(arg: &str) -> Result<CommandItem, CommandError> {
    let bad = |reason: String| CommandError::Argument {
        flag: "--command",
        arg: arg.to_owned(),
        reason,
    };
    let Some((id, command)) = arg.split_once('=') else {
        return Err(bad("expected ITEM=PROGRAM [ARG...]".to_owned()));
    };
    if id.is_empty() {
        return Err(bad("the item id before '=' is empty".to_owned()));
    }
    // A space or a quote before the first '=' means the id was probably
    // forgotten (`rsync -a --info=progress2 ...`): say so rather than invent
    // an item called "rsync -a --info".
    if id
        .chars()
        .any(|c| c.is_whitespace() || c == '\'' || c == '"')
    {
        return Err(bad(format!(
            "{id:?} is not an item id (expected ITEM=PROGRAM [ARG...]; ids with \
             spaces need the TOML form)"
        )));
    }
    let argv = split_words(command).map_err(|e| bad(e.to_string()))?;
    if argv.is_empty() {
        return Err(bad(format!("no program after {id}=")));
    }
    Ok(CommandItem::new(id, argv))
}

/// Parses one `--parser` value, `ITEM=KIND`.
pub fn parse_parser_arg(arg: &str) -> Result<(String, ProgressParser), CommandError> {
    let bad = |reason: String| CommandError::Argument {
        flag: "--parser",
        arg: arg.to_owned(),
        reason,
    };
    let Some((id, kind)) = arg.split_once('=') else {
        return Err(bad("expected ITEM=KIND".to_owned()));
    };
    if id.is_empty() {
        return Err(bad("the item id before '=' is empty".to_owned()));
    }
    let parser = kind.parse().map_err(|e: CommandError| bad(e.to_string()))?;
    Ok((id.to_owned(), parser))
}

/// Durations in the project's one syntax (`syncmgr_core::duration`:
/// `"500ms"`, `"90s"`, `"1h30m"`), as TOML strings.
pub(crate) mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) use syncmgr_core::duration::{format, parse};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    pub(crate) mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        pub(crate) fn serialize<S: Serializer>(
            d: &Option<Duration>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Duration>, D::Error> {
            let text = String::deserialize(d)?;
            super::parse(&text)
                .map(Some)
                .map_err(serde::de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
# Top-level keys come before the first [[item]].
sigint_grace = "500ms"
sigterm_grace = "1s"

[[item]]
id = "mail"
name = "Mail (mbsync)"
argv = ["mbsync", "-a"]
parser = "none"

[[item]]
id = "photos"
argv = ["rclone", "copy", "--progress", "/home/me/Pictures", "gdrive:Pictures"]
parser = "rclone"
checked = false
timeout = "2h"
env = { RCLONE_CONFIG = "/home/me/.config/rclone/rclone.conf" }

[[item]]
id = "notes"
argv = ["git", "pull", "--progress"]
cwd = "/home/me/notes"
parser = "git"
"#;

    #[test]
    fn toml_form_reads_every_field() {
        let config = CommandConfig::from_toml(GOOD).unwrap();
        assert_eq!(config.sigint_grace, Duration::from_millis(500));
        assert_eq!(config.sigterm_grace, Duration::from_secs(1));
        let [mail, photos, notes] = &config.items[..] else {
            panic!("three items: {config:?}");
        };
        assert_eq!(mail.display_name(), "Mail (mbsync)");
        assert_eq!(mail.parser, ProgressParser::None);
        assert!(mail.checked);
        assert_eq!(photos.display_name(), "photos");
        assert_eq!(photos.parser, ProgressParser::Rclone);
        assert!(!photos.checked);
        assert_eq!(photos.timeout, Some(Duration::from_secs(7200)));
        assert_eq!(
            photos.env["RCLONE_CONFIG"],
            "/home/me/.config/rclone/rclone.conf"
        );
        assert_eq!(
            notes.cwd.as_deref(),
            Some(std::path::Path::new("/home/me/notes"))
        );
    }

    #[test]
    fn defaults_apply() {
        let config = CommandConfig::from_toml("[[item]]\nid = \"a\"\nargv = [\"true\"]\n").unwrap();
        assert_eq!(config.sigint_grace, DEFAULT_SIGNAL_GRACE);
        assert_eq!(config.sigterm_grace, DEFAULT_SIGNAL_GRACE);
        assert_eq!(config.items[0], CommandItem::new("a", vec!["true".into()]));
        assert_eq!(config.items[0].parser, ProgressParser::Percent);
    }

    #[test]
    fn json_round_trip_is_the_same_document() {
        let config = CommandConfig::from_toml(GOOD).unwrap();
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["sigint_grace"], "500ms");
        assert_eq!(json["item"][1]["timeout"], "2h");
        assert!(json["item"][0].get("cwd").is_none());
        let back: CommandConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, config);
    }

    fn toml_error(text: &str) -> String {
        CommandConfig::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let err = toml_error("[[item]]\nid = \"a\"\nargv = [\"true\"]\nparsr = \"git\"\n");
        assert!(err.starts_with("invalid command file: "), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("unknown field `parsr`"), "{err}");

        let err = toml_error("grace = \"1s\"\n[[item]]\nid = \"a\"\nargv = [\"true\"]\n");
        assert!(
            err.contains("line 1") && err.contains("unknown field `grace`"),
            "{err}"
        );

        // `items` is not the spelling; `item` is.
        let err = toml_error("[[items]]\nid = \"a\"\nargv = [\"true\"]\n");
        assert!(err.contains("unknown field `items`"), "{err}");
    }

    #[test]
    fn bad_values_are_explained() {
        let err = toml_error("[[item]]\nid = \"a\"\nargv = [\"true\"]\nparser = \"curl\"\n");
        assert!(err.contains("line 4") && err.contains("curl"), "{err}");
        assert!(err.contains("rsync"), "lists the parsers: {err}");

        let err = toml_error("sigint_grace = \"2\"\n[[item]]\nid = \"a\"\nargv = [\"true\"]\n");
        assert!(err.contains("invalid duration \"2\""), "{err}");

        let err = toml_error("[[item]]\nid = \"a\"\nargv = \"rsync -a\"\n");
        assert!(err.contains("line 3"), "{err}");

        let err = toml_error("[[item]]\nargv = [\"true\"]\n");
        assert!(err.contains("missing field `id`"), "{err}");

        let err = toml_error("[[item]\nid = 1\n");
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn validation_names_the_item() {
        assert_eq!(
            toml_error(""),
            "no items: a command handler needs at least one"
        );
        let err = toml_error("[[item]]\nid = \"a\"\nargv = []\n");
        assert_eq!(
            err,
            "item \"a\": argv is empty: it needs at least the program"
        );
        let err = toml_error(
            "[[item]]\nid = \"a\"\nargv = [\"x\"]\n[[item]]\nid = \"a\"\nargv = [\"y\"]\n",
        );
        assert_eq!(err, "item id \"a\" is used by more than one item");
        let err = toml_error("[[item]]\nid = \"\"\nargv = [\"x\"]\n");
        assert_eq!(err, "item \"\": id is empty");
        let err = toml_error("[[item]]\nid = \"a\"\nargv = [\"x\"]\ncwd = \"notes\"\n");
        assert_eq!(err, "item \"a\": cwd \"notes\" is not an absolute path");
        let err = toml_error("[[item]]\nid = \"a\"\nargv = [\"x\"]\nenv = { \"A=B\" = \"1\" }\n");
        assert!(err.contains("env key \"A=B\""), "{err}");
        let err = toml_error("[[item]]\nid = \"a\"\nargv = [\"x\"]\ntimeout = \"0s\"\n");
        assert_eq!(err, "item \"a\": timeout is zero");
    }

    #[test]
    fn cli_form() {
        let config = CommandConfig::from_cli(
            &[
                "mail=mbsync -a",
                r#"photos=rclone copy --progress "/home/me/My Pictures" 'gdrive:Pictures'"#,
            ],
            &["photos=rclone", "mail=none"],
        )
        .unwrap();
        assert_eq!(config.items[0].argv, ["mbsync", "-a"]);
        assert_eq!(config.items[0].parser, ProgressParser::None);
        assert_eq!(
            config.items[1].argv,
            [
                "rclone",
                "copy",
                "--progress",
                "/home/me/My Pictures",
                "gdrive:Pictures"
            ]
        );
        assert_eq!(config.items[1].parser, ProgressParser::Rclone);
        assert_eq!(config.sigint_grace, DEFAULT_SIGNAL_GRACE);
    }

    #[test]
    fn cli_errors() {
        let cli = |c: &[&str], p: &[&str]| CommandConfig::from_cli(c, p).unwrap_err().to_string();
        assert_eq!(
            cli(&["mbsync -a"], &[]),
            "--command \"mbsync -a\": expected ITEM=PROGRAM [ARG...]"
        );
        let err = cli(&["rsync -a --info=progress2 a b"], &[]);
        assert!(
            err.contains("\"rsync -a --info\" is not an item id"),
            "{err}"
        );
        assert_eq!(
            cli(&["=true"], &[]),
            "--command \"=true\": the item id before '=' is empty"
        );
        assert_eq!(
            cli(&["a=  "], &[]),
            "--command \"a=  \": no program after a="
        );
        let err = cli(&["a=rsync src dst > log"], &[]);
        assert!(
            err.starts_with("--command \"a=rsync src dst > log\": unquoted '>'"),
            "{err}"
        );
        assert_eq!(
            cli(&["a=true", "a=false"], &[]),
            "item id \"a\" is used by more than one item"
        );
        assert_eq!(
            cli(&["a=true"], &["b=git"]),
            "--parser \"b=git\": no --command defines item \"b\""
        );
        assert_eq!(
            cli(&["a=true"], &["a=git", "a=rsync"]),
            "--parser \"a=rsync\": item \"a\" has a parser already"
        );
        let err = cli(&["a=true"], &["a=curl"]);
        assert_eq!(
            err,
            "--parser \"a=curl\": unknown parser \"curl\" (expected one of: none, percent, rsync, rclone, git)"
        );
        assert_eq!(
            cli(&[], &[]),
            "no items: a command handler needs at least one"
        );
    }

    #[test]
    fn durations_use_the_one_syntax() {
        assert_eq!(duration_text::parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration_text::format(Duration::from_millis(1500)), "1500ms");
        assert!(duration_text::parse("2").is_err());
    }
}
