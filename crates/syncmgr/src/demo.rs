//! `syncmgr demo`: a real session on built-in defaults, for a first look.
//!
//! Creates sample folders under the home, registers two built-in handlers and
//! syncs them with live progress:
//!
//! - `demo-folders`, a folder mirror of the three sample folders (one item
//!   each) into `demo/mirror`, with `--delete`;
//! - `demo-commands`, a command handler with two items: `archive` (`tar` the
//!   sample folders) and `checksums` (a shell loop that checksums every file
//!   and reports a percentage).
//!
//! Nothing but `sh` and `tar` is needed. Running it again syncs only what
//! changed (nothing, unless you edit the sample files).

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use syncmgr_handlers::command::{CommandConfig, CommandItem, ProgressParser};
use syncmgr_handlers::folder::{FolderConfig, FolderPair};
use syncmgr_store::{Registration, Store};

use crate::cli::{SessionTuning, SyncArgs};
use crate::output::Stdout;
use syncmgr_manager::Home;
use syncmgr_manager::builtin;

const FOLDERS: &str = "demo-folders";
const COMMANDS: &str = "demo-commands";

/// Sample folders: (name, files, bytes per file).
const SAMPLES: &[(&str, usize, usize)] = &[
    ("documents", 400, 16 * 1024),
    ("photos", 24, 1024 * 1024),
    ("music", 6, 4 * 1024 * 1024),
];

/// Checksums every file under `$1`, printing a percentage as it goes.
const CHECKSUM_SCRIPT: &str = r#"cd "$1" && total=$(find . -type f | wc -l) && n=0 && find . -type f | while IFS= read -r f; do cksum "$f" >/dev/null || exit 1; n=$((n + 1)); echo "$((n * 100 / total))% $f"; done"#;

/// Sets the demo up and returns the `sync` arguments that run it.
pub fn prepare(
    home: &Home,
    store: &Store,
    json: bool,
    out: &mut Stdout,
) -> anyhow::Result<SyncArgs> {
    let root = home.state.join("demo");
    let source = root.join("source");
    let target = root.join("mirror");
    for &(name, files, size) in SAMPLES {
        make_samples(&source.join(name), files, size)?;
    }
    fs::create_dir_all(&target)?;

    let folders = FolderConfig {
        pairs: SAMPLES
            .iter()
            .map(|&(name, _, _)| FolderPair {
                source: source.join(name),
                target: target.join(name),
            })
            .collect(),
        delete: true,
        checksum: false,
    };
    folders.validate(&builtin::folder_neighbours(
        &store.registrations()?,
        FOLDERS,
    ))?;
    register(
        store,
        FOLDERS,
        "sample folders mirrored (syncmgr demo)",
        builtin::FOLDER,
        serde_json::to_value(&folders)?,
    )?;

    let source_text = source.to_string_lossy().into_owned();
    let mut archive = CommandItem::new(
        "archive",
        vec![
            "tar".into(),
            "-cf".into(),
            root.join("archive.tar").to_string_lossy().into_owned(),
            "-C".into(),
            source_text.clone(),
            ".".into(),
        ],
    );
    archive.name = Some("Archive the samples (tar)".into());
    archive.parser = ProgressParser::None;
    let mut checksums = CommandItem::new(
        "checksums",
        vec![
            "sh".into(),
            "-c".into(),
            CHECKSUM_SCRIPT.into(),
            "sh".into(),
            source_text,
        ],
    );
    checksums.name = Some("Checksum every file (sh)".into());
    checksums.parser = ProgressParser::Percent;
    let commands = CommandConfig {
        items: vec![archive, checksums],
        ..CommandConfig::default()
    };
    commands.validate()?;
    register(
        store,
        COMMANDS,
        "tar and a checksum script (syncmgr demo)",
        builtin::COMMAND,
        serde_json::to_value(&commands)?,
    )?;

    if !json {
        writeln!(
            out,
            "demo: mirroring {} into {}, archiving and checksumming it",
            source.display(),
            target.display()
        )?;
    }
    Ok(SyncArgs {
        targets: vec![FOLDERS.to_owned(), COMMANDS.to_owned()],
        event: None,
        cookie: None,
        json,
        detach: false,
        replace: false,
        tuning: SessionTuning {
            max_concurrent: 4,
            grace: std::time::Duration::from_secs(5),
        },
    })
}

fn register(
    store: &Store,
    name: &str,
    description: &str,
    kind: &str,
    config: serde_json::Value,
) -> anyhow::Result<()> {
    store.register(&Registration {
        description: Some(description.to_owned()),
        ..Registration::builtin(name, kind, config)
    })?;
    Ok(())
}

/// Writes `files` deterministic files of `size` bytes into `dir`, once.
fn make_samples(dir: &Path, files: usize, size: usize) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15 ^ (size as u64);
    for i in 0..files {
        let path = dir.join(format!("sample {:02}.bin", i + 1));
        if path.exists() {
            continue;
        }
        // xorshift: incompressible, reproducible content without a crate.
        let mut data = Vec::with_capacity(size);
        while data.len() < size {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            data.extend_from_slice(&state.to_le_bytes());
        }
        data.truncate(size);
        fs::write(&path, &data).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
