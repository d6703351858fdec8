//! `syncmgr demo`: a real session on built-in defaults, for a first look.
//!
//! Creates sample folders under the home, registers the example folder-mirror
//! handler shipped in the repository (`examples/handlers/mirror.py`, embedded
//! here so the binary is self-contained) and syncs it with live progress.
//! Running it again syncs only what changed (nothing, unless you edit the
//! sample files).

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use syncmgr_store::{HandlerKind, Registration, Store};

use crate::cli::{SessionTuning, SyncArgs};
use crate::home::Home;
use crate::output::Stdout;

const MIRROR_PY: &str = include_str!("../../../examples/handlers/mirror.py");
const HANDLER: &str = "demo-mirror";

/// Sample folders: (name, files, bytes per file).
const SAMPLES: &[(&str, usize, usize)] = &[
    ("documents", 40, 64 * 1024),
    ("photos", 12, 2 * 1024 * 1024),
    ("music", 6, 4 * 1024 * 1024),
];

/// Sets the demo up and returns the `sync` arguments that run it.
pub fn prepare(
    home: &Home,
    store: &Store,
    json: bool,
    out: &mut Stdout,
) -> anyhow::Result<SyncArgs> {
    let python = find_program("python3")
        .context("the demo's example handler is a Python script and needs python3 on PATH")?;
    let root = home.state.join("demo");
    let source = root.join("source");
    let target = root.join("mirror");
    for &(name, files, size) in SAMPLES {
        make_samples(&source.join(name), files, size)?;
    }
    fs::create_dir_all(&target)?;
    let script = root.join("mirror.py");
    fs::write(&script, MIRROR_PY).with_context(|| format!("writing {}", script.display()))?;

    let mut argv = vec![python, script.to_string_lossy().into_owned()];
    for &(name, _, _) in SAMPLES {
        argv.push(format!(
            "{}:{}",
            source.join(name).display(),
            target.join(name).display()
        ));
    }
    store.register(&Registration {
        name: HANDLER.to_owned(),
        description: Some("example folder mirror (syncmgr demo)".to_owned()),
        kind: HandlerKind::Process { argv },
        events: Vec::new(),
        timeout: None,
        registered: chrono::Utc::now(),
    })?;
    if !json {
        writeln!(
            out,
            "demo: mirroring {} into {}",
            source.display(),
            target.display()
        )?;
    }
    Ok(SyncArgs {
        targets: vec![HANDLER.to_owned()],
        event: None,
        cookie: None,
        json,
        tuning: SessionTuning {
            max_concurrent: 4,
            grace: 5.0,
        },
    })
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

fn find_program(name: &str) -> Option<String> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .map(|p| p.to_string_lossy().into_owned())
}
