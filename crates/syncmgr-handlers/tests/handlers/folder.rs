//! The folder mirror driven through a real session (`Session` with a
//! `MemoryJournal`), on real temporary folders: trees are compared byte for
//! byte (contents, modification times, permission bits, link targets, empty
//! directories) after each step.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use filetime::FileTime;
use std::sync::Mutex;

use syncmgr_core::{
    CancelTarget, Confirm, HandlerJob, ItemStatus, LogLevel, MemoryJournal, NewLogEntry, Selection,
    Session, SessionConfig, SessionControl, SessionEvent, SessionSummary, SyncEvent,
};
use syncmgr_handlers::folder::{FolderConfig, FolderError, FolderHandler, FolderPair, Neighbour};

const TEMP_PREFIX: &str = ".syncmgr-tmp-";

// ---------------------------------------------------------------------------
// Trees.

#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir {
        mode: u32,
        mtime: (i64, i64),
    },
    File {
        mode: u32,
        mtime: (i64, i64),
        data: Vec<u8>,
    },
    Link {
        target: PathBuf,
        mtime: (i64, i64),
    },
    Other,
}

/// Everything under `root` (the root included, as ""), links not followed.
fn tree(root: &Path) -> BTreeMap<PathBuf, Node> {
    walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .map(|entry| {
            let entry = entry.expect("walk");
            let meta = entry.path().symlink_metadata().expect("lstat");
            let rel = entry
                .path()
                .strip_prefix(root)
                .expect("under root")
                .to_owned();
            let mtime = (meta.mtime(), meta.mtime_nsec());
            let mode = meta.mode() & 0o7777;
            let node = if meta.is_dir() {
                Node::Dir { mode, mtime }
            } else if meta.is_file() {
                let data = fs::read(entry.path()).unwrap_or_else(|_| b"<unreadable>".to_vec());
                Node::File { mode, mtime, data }
            } else if meta.file_type().is_symlink() {
                let target = fs::read_link(entry.path()).expect("readlink");
                Node::Link { target, mtime }
            } else {
                Node::Other
            };
            (rel, node)
        })
        .collect()
}

#[track_caller]
fn assert_mirror(source: &Path, target: &Path) {
    let (s, t) = (tree(source), tree(target));
    for (rel, node) in &s {
        assert_eq!(t.get(rel), Some(node), "{} differs", rel.display());
    }
    for rel in t.keys() {
        assert!(
            s.contains_key(rel),
            "{} is not in the source",
            rel.display()
        );
    }
}

fn temp_files(root: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(TEMP_PREFIX))
        .map(|e| e.into_path())
        .collect()
}

fn write(root: &Path, rel: &str, data: &[u8], mode: u32, mtime: i64) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(&path, data).expect("write");
    // The time first: setting it opens the file, which mode 000 may forbid.
    filetime::set_file_mtime(&path, FileTime::from_unix_time(mtime, 123_456_789)).expect("mtime");
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn link(root: &Path, rel: &str, to: &str, mtime: i64) {
    let path = root.join(rel);
    symlink(to, &path).expect("symlink");
    let t = FileTime::from_unix_time(mtime, 987_654_321);
    filetime::set_symlink_file_times(&path, t, t).expect("link times");
}

/// Gives every directory under `root` a fixed mode and a past time, after
/// its contents are in place (deepest first).
fn settle_dirs(root: &Path, mode: u32) {
    for entry in walkdir::WalkDir::new(root).contents_first(true) {
        let entry = entry.expect("walk");
        if entry.file_type().is_dir() {
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode)).expect("chmod");
            filetime::set_file_mtime(entry.path(), FileTime::from_unix_time(1_400_000_000, 5))
                .expect("mtime");
        }
    }
}

fn config(source: &Path, target: &Path, delete: bool) -> FolderConfig {
    FolderConfig {
        pairs: vec![FolderPair {
            source: source.to_owned(),
            target: target.to_owned(),
        }],
        delete,
        checksum: false,
    }
}

// ---------------------------------------------------------------------------
// Sessions.

struct Run {
    summary: SessionSummary,
    events: Vec<SessionEvent>,
    journal: Arc<MemoryJournal>,
}

impl Run {
    fn status(&self) -> ItemStatus {
        assert_eq!(self.summary.items.len(), 1, "{:?}", self.summary);
        self.summary.items[0].status
    }

    fn logs(&self) -> Vec<NewLogEntry> {
        self.journal.entries().into_iter().map(|(_, e)| e).collect()
    }

    /// The text of the item's final information entry (the totals).
    fn totals(&self) -> String {
        self.logs()
            .into_iter()
            .rev()
            .find(|e| e.level == LogLevel::Information)
            .map(|e| e.text)
            .unwrap_or_else(|| panic!("no totals entry in {:#?}", self.logs()))
    }

    fn errors(&self) -> Vec<NewLogEntry> {
        self.logs()
            .into_iter()
            .filter(|e| e.level == LogLevel::Error)
            .collect()
    }
}

async fn run(config: &FolderConfig, selection: Selection) -> Run {
    run_with(config, selection, |_, _| {}).await
}

/// Says yes (or no) to every confirmation, and keeps what it was asked.
#[derive(Debug)]
struct Answer {
    yes: bool,
    asked: Mutex<Vec<String>>,
}

impl Answer {
    fn new(yes: bool) -> Arc<Answer> {
        Arc::new(Answer {
            yes,
            asked: Mutex::new(Vec::new()),
        })
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("lock").clone()
    }
}

#[async_trait::async_trait]
impl Confirm for Answer {
    async fn confirm(&self, handler: &str, text: &str) -> bool {
        assert_eq!(handler, "mirror");
        self.asked.lock().expect("lock").push(text.to_owned());
        self.yes
    }
}

/// Acts on a log entry (`showError` and the retry), answering any
/// confirmation with `answer`.
async fn act_on(config: &FolderConfig, error_id: &str, answer: &Arc<Answer>) -> Run {
    let handler = FolderHandler::new(config.clone());
    let confirm: Arc<dyn Confirm> = answer.clone();
    run_handler(
        handler,
        Selection::ShowError(error_id.to_owned()),
        Some(confirm),
        |_, _| {},
    )
    .await
}

/// Runs one session with the folder handler as "mirror", calling `on_event`
/// for every event until the final one.
async fn run_with(
    config: &FolderConfig,
    selection: Selection,
    on_event: impl FnMut(&SessionEvent, &SessionControl),
) -> Run {
    run_handler(
        FolderHandler::new(config.clone()),
        selection,
        None,
        on_event,
    )
    .await
}

async fn run_handler(
    handler: FolderHandler,
    selection: Selection,
    confirm: Option<Arc<dyn Confirm>>,
    mut on_event: impl FnMut(&SessionEvent, &SessionControl),
) -> Run {
    let job = HandlerJob {
        name: "mirror".into(),
        handler: Box::new(handler),
        selection,
        timeout: Duration::from_secs(60),
    };
    let mut session_config = SessionConfig::new("s", SyncEvent::Manual);
    session_config.confirm = confirm;
    // Every update reaches the test at once (the cancel test reacts to one).
    session_config.coalesce = Duration::ZERO;
    let journal = Arc::new(MemoryJournal::default());
    let (session, control, mut rx) = Session::new(session_config, journal.clone(), vec![job]);
    let running = tokio::spawn(session.run());
    let mut events = Vec::new();
    while let Some(event) = rx.recv().await {
        on_event(&event, &control);
        let last = matches!(event, SessionEvent::Finished(_));
        events.push(event);
        if last {
            break;
        }
    }
    let summary = running.await.expect("session task");
    Run {
        summary,
        events,
        journal,
    }
}

async fn sync(config: &FolderConfig) -> Run {
    run(config, Selection::Checked(HashMap::new())).await
}

fn item_id(config: &FolderConfig) -> String {
    config.pairs[0].item_id()
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn mirrors_changes_and_deletes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (dir.path().join("source"), dir.path().join("target dir"));
    write(&src, "plain.txt", b"plain", 0o644, 1_500_000_001);
    write(&src, "with space ü €.txt", b"spaces", 0o640, 1_500_000_002);
    write(&src, "run.sh", b"#!/bin/sh\n", 0o755, 1_500_000_003);
    write(&src, "ro.txt", b"read only", 0o444, 1_500_000_004);
    write(&src, "zero.txt", b"", 0o600, 1_500_000_005);
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    write(&src, "nested/deeper/data.bin", &big, 0o644, 1_500_000_006);
    write(&src, "nested/données/x", b"x", 0o644, 1_500_000_007);
    fs::create_dir_all(src.join("empty")).expect("mkdir");
    link(&src, "link-rel", "plain.txt", 1_500_000_008);
    link(&src, "link-dangling", "does/not/exist", 1_500_000_009);
    link(&src, "nested/link-dir", "../empty", 1_500_000_010);
    write(
        &src,
        "read-only dir/inside",
        b"inside",
        0o644,
        1_500_000_011,
    );
    settle_dirs(&src, 0o750);
    // Entries change in it below: the mirror must open it for that (when not
    // root) and give it its mode back.
    let read_only = |root: &Path, mode: u32| {
        fs::set_permissions(root.join("read-only dir"), fs::Permissions::from_mode(mode))
            .expect("chmod");
    };
    read_only(&src, 0o555);
    let cfg = config(&src, &dst, false);
    let id = item_id(&cfg);

    // First sync: everything, the target folder created.
    let first = sync(&cfg).await;
    assert_eq!(first.status(), ItemStatus::Succeeded, "{:#?}", first.logs());
    assert_mirror(&src, &dst);
    assert!(first.errors().is_empty(), "{:#?}", first.errors());
    assert!(
        first.totals().starts_with("8 files and 3 links copied"),
        "{}",
        first.totals()
    );
    // The item ends showing its totals, under the handler's own name.
    let last_text = first
        .events
        .iter()
        .rev()
        .find_map(|e| match e {
            SessionEvent::ItemChanged(item) => Some(item.text.clone()),
            _ => None,
        })
        .expect("item events");
    assert_eq!(last_text, first.totals());
    assert!(first.events.iter().any(|e| matches!(
        e,
        SessionEvent::ItemsEnumerated { info, .. } if info.name == "Folder mirror"
    )));
    let bytes: usize = tree(&src)
        .values()
        .map(|node| match node {
            Node::File { data, .. } => data.len(),
            _ => 0,
        })
        .sum();
    assert!(
        first.totals().contains(&format!("({bytes} bytes)")),
        "{}",
        first.totals()
    );
    // The handler says what it is, and a refused or finished item's text
    // says how it ended.
    let info = syncmgr_core::Handler::handler_info(&mut FolderHandler::new(cfg.clone()))
        .await
        .expect("info");
    assert_eq!(info.name, "Folder mirror");
    let last_text = first.events.iter().rev().find_map(|e| match e {
        SessionEvent::ItemChanged(s) if s.status.is_terminal() => Some(s.text.clone()),
        _ => None,
    });
    assert!(
        last_text
            .as_deref()
            .is_some_and(|t| t.starts_with("8 files")),
        "{last_text:?}"
    );
    let enumerated = first.events.iter().find_map(|e| match e {
        SessionEvent::ItemsEnumerated { enumeration, .. } => Some(enumeration.items[0].clone()),
        _ => None,
    });
    let item = enumerated.expect("enumerated");
    assert_eq!(item.id, id);
    assert_eq!(item.name, format!("{} → {}", src.display(), dst.display()));
    // Progress is in bytes: the last snapshot shows all of them.
    let last = first
        .events
        .iter()
        .rev()
        .find_map(|e| match e {
            SessionEvent::ItemChanged(s) => Some(s.clone()),
            _ => None,
        })
        .expect("item events");
    let bytes = (5 + 6 + 10 + 9 + big.len() + 1 + 6) as u64;
    assert_eq!((last.value, last.max), (Some(bytes), Some(bytes)));

    // Nothing changed: nothing copied.
    let again = sync(&cfg).await;
    assert_eq!(again.status(), ItemStatus::Succeeded);
    assert!(
        again.totals().starts_with("0 files and 0 links copied"),
        "{}",
        again.totals()
    );
    assert_mirror(&src, &dst);

    // Changes: contents, mode only, a link's target, new entries.
    fs::write(src.join("plain.txt"), b"plain, longer now").expect("write");
    fs::set_permissions(src.join("run.sh"), fs::Permissions::from_mode(0o700)).expect("chmod");
    fs::remove_file(src.join("link-rel")).expect("rm");
    link(&src, "link-rel", "with space ü €.txt", 1_500_000_011);
    write(&src, "nested/new file", b"new", 0o600, 1_500_000_012);
    fs::create_dir(src.join("new empty")).expect("mkdir");
    read_only(&src, 0o755);
    write(&src, "read-only dir/added", b"added", 0o644, 1_500_000_012);
    read_only(&src, 0o555);
    let changed = sync(&cfg).await;
    assert_eq!(
        changed.status(),
        ItemStatus::Succeeded,
        "{:#?}",
        changed.logs()
    );
    assert!(
        changed.totals().contains("3 files and 1 links copied"),
        "{}",
        changed.totals()
    );
    assert!(
        changed.totals().contains("1 updated"),
        "{}",
        changed.totals()
    );
    assert_mirror(&src, &dst);

    // Deletions without `delete`: what went from the source stays.
    fs::remove_file(src.join("ro.txt")).expect("rm");
    fs::remove_dir_all(src.join("nested/deeper")).expect("rm");
    let kept = sync(&cfg).await;
    assert_eq!(kept.status(), ItemStatus::Succeeded, "{:#?}", kept.logs());
    assert!(dst.join("ro.txt").exists() && dst.join("nested/deeper/data.bin").exists());
    let (s, mut t) = (tree(&src), tree(&dst));
    t.retain(|rel, _| !rel.starts_with("ro.txt") && !rel.starts_with("nested/deeper"));
    assert_eq!(s, t);

    // With `delete`, and entries changing type both ways.
    fs::remove_file(src.join("zero.txt")).expect("rm");
    write(&src, "zero.txt/inside", b"in", 0o644, 1_500_000_013);
    fs::remove_dir_all(src.join("nested/données")).expect("rm");
    write(&src, "nested/données", b"now a file", 0o644, 1_500_000_014);
    let cfg = config(&src, &dst, true);
    let deleted = sync(&cfg).await;
    assert_eq!(
        deleted.status(),
        ItemStatus::Succeeded,
        "{:#?}",
        deleted.logs()
    );
    assert_mirror(&src, &dst);
    assert!(
        deleted.totals().contains("4 deleted"),
        "{}",
        deleted.totals()
    );
    assert!(temp_files(&dst).is_empty());
    // So that the temporary folder can go when the test does not run as root.
    read_only(&src, 0o755);
    read_only(&dst, 0o755);
}

#[tokio::test]
async fn checksum_compares_contents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (dir.path().join("s"), dir.path().join("t"));
    write(&src, "same-size.txt", b"aaaa", 0o644, 1_500_000_000);
    let mut cfg = config(&src, &dst, false);
    assert_eq!(sync(&cfg).await.status(), ItemStatus::Succeeded);
    // Same size, same time, other contents: size and time cannot see it.
    write(&src, "same-size.txt", b"bbbb", 0o644, 1_500_000_000);
    assert_eq!(sync(&cfg).await.status(), ItemStatus::Succeeded);
    assert_eq!(fs::read(dst.join("same-size.txt")).expect("read"), b"aaaa");
    cfg.checksum = true;
    let run = sync(&cfg).await;
    assert_eq!(run.status(), ItemStatus::Succeeded);
    assert!(run.totals().starts_with("1 files"), "{}", run.totals());
    assert_mirror(&src, &dst);
}

/// The guard entry of a refused run (its error id is `guard-<item>-<fingerprint>`).
#[track_caller]
fn guard_entry(run: &Run, id: &str) -> NewLogEntry {
    run.errors()
        .into_iter()
        .find(|e| {
            e.error_id
                .as_deref()
                .is_some_and(|e| e.starts_with(&format!("guard-{id}-")))
        })
        .unwrap_or_else(|| panic!("no guard entry in {:#?}", run.logs()))
}

#[tokio::test]
async fn guards_refuse_until_confirmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (dir.path().join("s"), dir.path().join("t"));
    for n in 1..=4 {
        write(&src, &format!("f{n}"), b"data", 0o644, 1_500_000_000);
    }
    let cfg = config(&src, &dst, true);
    let id = item_id(&cfg);
    assert_eq!(sync(&cfg).await.status(), ItemStatus::Succeeded);

    // Three of four files would go: refused, nothing touched.
    for n in 1..=3 {
        fs::remove_file(src.join(format!("f{n}"))).expect("rm");
    }
    let before = tree(&dst);
    let refused = sync(&cfg).await;
    assert_eq!(refused.status(), ItemStatus::Failed);
    let entry = guard_entry(&refused, &id);
    let guard = entry.error_id.clone().expect("error id");
    assert!(entry.actionable && entry.item.as_deref() == Some(id.as_str()));
    assert!(
        entry.text.contains("delete 3 of the 4 files"),
        "{}",
        entry.text
    );
    assert!(guard.len() <= 64, "{guard}");
    assert_eq!(tree(&dst), before);

    // Acting on the entry asks first; a no leaves everything as it was.
    let no = Answer::new(false);
    let declined = act_on(&cfg, &guard, &no).await;
    assert!(declined.summary.items.is_empty(), "{:?}", declined.summary);
    assert_eq!(no.asked().len(), 1);
    assert_eq!(tree(&dst), before);

    // A yes is asked with what the retry does; the retry goes ahead.
    let yes = Answer::new(true);
    let confirmed = act_on(&cfg, &guard, &yes).await;
    assert_eq!(
        confirmed.status(),
        ItemStatus::Succeeded,
        "{:#?}",
        confirmed.logs()
    );
    let asked = yes.asked();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        asked[0].contains("deletes 3 files of the 4"),
        "{}",
        asked[0]
    );
    assert!(
        asked[0].contains(&dst.display().to_string()),
        "{}",
        asked[0]
    );
    assert_mirror(&src, &dst);

    // An empty source over a non-empty target: the same.
    fs::remove_file(src.join("f4")).expect("rm");
    let refused = sync(&cfg).await;
    assert_eq!(refused.status(), ItemStatus::Failed);
    let entry = guard_entry(&refused, &id);
    assert!(
        entry.text.contains("source folder is empty"),
        "{}",
        entry.text
    );
    assert!(dst.join("f4").exists());
    let yes = Answer::new(true);
    let confirmed = act_on(&cfg, entry.error_id.as_deref().expect("id"), &yes).await;
    assert_eq!(confirmed.status(), ItemStatus::Succeeded);
    assert!(yes.asked()[0].contains("is empty"), "{:?}", yes.asked());
    assert_mirror(&src, &dst);
}

/// `dir/s` with ten files, mirrored (with `delete`) to `dir/t`.
async fn ten_files_mirrored(dir: &Path) -> (PathBuf, PathBuf, FolderConfig) {
    let (src, dst) = (dir.join("s"), dir.join("t"));
    for n in 0..10 {
        write(&src, &format!("f{n}"), b"data", 0o644, 1_500_000_000);
    }
    let cfg = config(&src, &dst, true);
    assert_eq!(sync(&cfg).await.status(), ItemStatus::Succeeded);
    (src, dst, cfg)
}

/// A chain of `levels` folders named `component` under `root`, made one
/// level at a time with relative paths (`cd -P`), so that it may be deeper
/// than PATH_MAX; the shell command `then` runs in the deepest one. Removed
/// again when dropped (from `root`, and from the roots `also_in` adds), so
/// that the temporary folder can go even when the test fails.
struct DeepTree {
    component: String,
    roots: Vec<PathBuf>,
}

fn deep_tree(root: &Path, component: &str, levels: usize, then: &str) -> DeepTree {
    let script = format!(
        "for i in $(seq {levels}); do mkdir {component} && cd -P {component} || exit 1; done; {then}"
    );
    let made = std::process::Command::new("sh")
        .args(["-c", &script])
        .current_dir(root)
        .status()
        .expect("sh runs");
    assert!(made.success(), "could not make the deep tree");
    DeepTree {
        component: component.to_owned(),
        roots: vec![root.to_owned()],
    }
}

impl DeepTree {
    /// Also removes the chain from `root` (a target it was mirrored to).
    fn also_in(mut self, root: &Path) -> Self {
        self.roots.push(root.to_owned());
        self
    }
}

impl Drop for DeepTree {
    fn drop(&mut self) {
        // std's remove_dir_all works by path, which PATH_MAX stops; rm does not.
        for root in &self.roots {
            let _ = std::process::Command::new("sh")
                .args(["-c", &format!("rm -rf {}", self.component)])
                .current_dir(root)
                .status();
        }
    }
}

/// Issue 8, point 3: an old "empty source" confirmation, acted on after the
/// folders changed, must not let a different deletion through.
#[tokio::test]
async fn a_guard_entry_confirms_only_the_run_it_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst, cfg) = ten_files_mirrored(dir.path()).await;
    let id = item_id(&cfg);

    // The source's disk is gone for a while: an empty-source refusal.
    let hidden = dir.path().join("hidden");
    fs::rename(&src, &hidden).expect("mv");
    fs::create_dir(&src).expect("mkdir");
    let old = guard_entry(&sync(&cfg).await, &id);
    assert!(old.text.contains("empty"), "{}", old.text);

    // Weeks later the source is back, but with 6 of its 10 files gone.
    fs::remove_dir(&src).expect("rmdir");
    fs::rename(&hidden, &src).expect("mv back");
    for n in 0..6 {
        fs::remove_file(src.join(format!("f{n}"))).expect("rm");
    }
    let before = tree(&dst);
    let yes = Answer::new(true);
    let replayed = act_on(&cfg, old.error_id.as_deref().expect("id"), &yes).await;
    // Nothing was confirmed: the retry met the mass-delete guard afresh.
    assert!(yes.asked().is_empty(), "asked {:?}", yes.asked());
    assert_eq!(replayed.status(), ItemStatus::Failed);
    let fresh = guard_entry(&replayed, &id);
    assert!(
        fresh.text.contains("delete 6 of the 10 files"),
        "{}",
        fresh.text
    );
    assert_ne!(fresh.error_id, old.error_id);
    assert_eq!(tree(&dst), before, "nothing may be deleted");
}

/// Issue 8, point 1: the folders are resolved again at every run.
#[tokio::test]
async fn a_target_swapped_for_a_link_after_registration_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let (src, dst) = (home.join("src"), dir.path().join("dst"));
    for n in 0..10 {
        write(&src, &format!("f{n}"), b"data", 0o644, 1_500_000_000);
    }
    write(&home, "notes.txt", b"keep me", 0o644, 1_500_000_000);
    let cfg = config(&src, &dst, true);
    cfg.validate(&[]).expect("valid when registered");
    assert_eq!(sync(&cfg).await.status(), ItemStatus::Succeeded);
    let source_before = tree(&home);

    // DST becomes a link to SRC's parent: a sync would delete the source.
    fs::remove_dir_all(&dst).expect("rm");
    symlink(&home, &dst).expect("symlink");
    let refused = sync(&cfg).await;
    assert_eq!(
        refused.status(),
        ItemStatus::Failed,
        "{:#?}",
        refused.logs()
    );
    let entry = refused.errors().pop().expect("an entry");
    assert!(entry.actionable, "{entry:?}");
    assert!(
        entry.text.contains("source is inside the target"),
        "{}",
        entry.text
    );
    assert_eq!(tree(&home), source_before, "the source was touched");

    // DST becomes a link into SRC: no copy of the source nests in itself.
    fs::remove_file(&dst).expect("rm link");
    fs::create_dir(src.join("inner")).expect("mkdir");
    symlink(src.join("inner"), &dst).expect("symlink");
    let refused = sync(&cfg).await;
    assert_eq!(refused.status(), ItemStatus::Failed);
    assert!(
        fs::read_dir(src.join("inner"))
            .expect("ls")
            .next()
            .is_none(),
        "a copy was nested in the source"
    );
}

/// Issue 8, point 2: another registration's folders are kept clear of at
/// sync time too (a registration made before the rule, or folders moved).
#[tokio::test]
async fn targets_never_write_into_another_registrations_folders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(&root.join("a"), "mine", b"a", 0o644, 1_500_000_000);
    write(&root.join("t/sub"), "theirs", b"b", 0o644, 1_500_000_000);
    let cfg = config(&root.join("a"), &root.join("t"), true);
    let other = Neighbour {
        owner: "handler other".to_owned(),
        pair: FolderPair {
            source: root.join("b"),
            target: root.join("t/sub"),
        },
    };
    let err = cfg.validate(std::slice::from_ref(&other)).unwrap_err();
    assert!(matches!(err, FolderError::Overlap { .. }), "{err}");

    let handler = FolderHandler::new(cfg.clone()).with_neighbours(vec![other]);
    let refused = run_handler(handler, Selection::Checked(HashMap::new()), None, |_, _| {}).await;
    assert_eq!(
        refused.status(),
        ItemStatus::Failed,
        "{:#?}",
        refused.logs()
    );
    let entry = refused.errors().pop().expect("an entry");
    assert!(entry.text.contains("handler other"), "{}", entry.text);
    assert!(root.join("t/sub/theirs").exists(), "the other's file went");
    assert!(!root.join("t/mine").exists(), "nothing may be written");
}

/// Issue 8, point 5: a walk that missed entries deletes nothing. A folder
/// deeper than PATH_MAX cannot be listed by its path (as root too).
#[tokio::test]
async fn an_incomplete_walk_deletes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst, cfg) = ten_files_mirrored(dir.path()).await;
    // One file goes from the source (well under the mass-delete guard) ...
    fs::remove_file(src.join("f9")).expect("rm");
    // ... and a part of the source cannot be read.
    let _deep = deep_tree(&src, &"d".repeat(250), 20, "true");

    let run = sync(&cfg).await;
    assert_eq!(run.status(), ItemStatus::Failed, "{:#?}", run.logs());
    assert!(dst.join("f9").exists(), "deleted on a partial view");
    let texts: Vec<String> = run.errors().into_iter().map(|e| e.text).collect();
    assert!(
        texts.iter().any(|t| t.contains("deleted nothing")),
        "{texts:#?}"
    );
}

#[tokio::test]
async fn missing_source_is_refused_and_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (dir.path().join("not mounted"), dir.path().join("t"));
    let cfg = config(&src, &dst, true);
    let id = item_id(&cfg);
    let refused = sync(&cfg).await;
    assert_eq!(refused.status(), ItemStatus::Failed);
    let entry = refused.errors().pop().expect("an error entry");
    assert_eq!(entry.error_id, Some(format!("missing-{id}")));
    assert!(entry.actionable);
    assert!(entry.text.contains("does not exist"), "{}", entry.text);
    assert!(!dst.exists(), "nothing is created for a missing source");

    // Acting on it retries (and finds the source now).
    write(&src, "back", b"again", 0o644, 1_500_000_000);
    let retried = run(&cfg, Selection::ShowError(format!("missing-{id}"))).await;
    assert_eq!(retried.status(), ItemStatus::Succeeded);
    assert_mirror(&src, &dst);
}

#[test]
fn validate_refuses_nested_folders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    fs::create_dir_all(root.join("data/a")).expect("mkdir");
    fs::create_dir_all(root.join("data/ab")).expect("mkdir");
    symlink(root.join("data/a"), root.join("alias")).expect("symlink");
    let pair = |s: &str, t: &str| config(&root.join(s), &root.join(t), false);
    // Component-wise: "a" is not inside "ab".
    pair("data/a", "data/ab")
        .validate(&[])
        .expect("siblings are fine");
    pair("data/a", "elsewhere/new")
        .validate(&[])
        .expect("a new target is fine");
    for (s, t) in [
        ("data/a", "data/a/new/deeper"),
        ("data/a/sub", "data"),
        ("alias", "data/a/x"),
        ("data/a/x", "alias"),
        ("alias", "data/a"),
    ] {
        let err = pair(s, t).validate(&[]).expect_err(s);
        assert!(matches!(err, FolderError::Nested { .. }), "{s} {t}: {err}");
        assert!(err.to_string().contains("into itself"), "{err}");
    }
}

/// Whether this process can read a file whatever its permission bits (root,
/// or CAP_DAC_OVERRIDE): then chmod 000 does not make a file unreadable.
fn privileged(dir: &Path) -> bool {
    let probe = dir.join("probe");
    fs::write(&probe, b"x").expect("write");
    fs::set_permissions(&probe, fs::Permissions::from_mode(0o000)).expect("chmod");
    let readable = fs::File::open(&probe).is_ok();
    fs::remove_file(&probe).expect("rm");
    readable
}

#[tokio::test]
async fn unreadable_entries_are_logged_and_fail_the_item() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (dir.path().join("s"), dir.path().join("t"));
    write(&src, "a-good", b"good", 0o644, 1_500_000_000);
    write(&src, "m-locked", b"secret", 0o000, 1_500_000_000);
    write(&src, "z-good", b"also good", 0o644, 1_500_000_000);
    // A FIFO cannot be read like a file (opening it would block): it is the
    // unreadable entry that also works as root, where chmod 000 stops
    // nothing. mkfifo(1) rather than libc keeps the tests free of unsafe.
    let fifo = src.join("n-fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let locked_is_unreadable = !privileged(dir.path());

    let run = sync(&config(&src, &dst, false)).await;
    assert_eq!(run.status(), ItemStatus::Failed, "{:#?}", run.logs());
    let errors = run.errors();
    let names = |needle: &str| {
        errors
            .iter()
            .any(|e| e.text.contains(needle) && e.error_id.as_deref().is_some())
    };
    assert!(names(&fifo.display().to_string()), "{errors:#?}");
    if locked_is_unreadable {
        assert!(
            names(&src.join("m-locked").display().to_string()),
            "{errors:#?}"
        );
        assert!(!dst.join("m-locked").exists());
    }
    // The rest was finished.
    for good in ["a-good", "z-good"] {
        assert_eq!(fs::read(dst.join(good)).ok(), fs::read(src.join(good)).ok());
    }
    assert!(!dst.join("n-fifo").exists());
    assert!(temp_files(&dst).is_empty());
    assert!(
        run.totals().starts_with("finished with errors: "),
        "{}",
        run.totals()
    );
    // Each problem has its entry, and no summary of problems left out.
    assert!(
        !errors
            .iter()
            .any(|e| e.text.contains("were not logged one by one")),
        "{errors:#?}"
    );
}

/// Many problems: the first 50 are logged one by one, one entry counts the
/// rest.
#[tokio::test]
async fn many_problems_are_logged_up_to_a_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (dir.path().join("s"), dir.path().join("t"));
    fs::create_dir_all(&src).expect("mkdir");
    for n in 0..60 {
        let made = std::process::Command::new("mkfifo")
            .arg(src.join(format!("fifo {n:02}")))
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
    }
    let run = sync(&config(&src, &dst, false)).await;
    assert_eq!(run.status(), ItemStatus::Failed);
    let errors = run.errors();
    let one_by_one = errors
        .iter()
        .filter(|e| e.text.contains("it is a fifo"))
        .count();
    assert_eq!(one_by_one, 50, "{errors:#?}");
    assert!(
        errors
            .iter()
            .any(|e| e.text == "10 more problems were not logged one by one"),
        "{errors:#?}"
    );
}

/// With several pairs, acting on an entry reaches the item it names, not
/// the first one.
#[tokio::test]
async fn entries_of_the_second_pair_act_on_the_second_pair() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(&root.join("one"), "f", b"1", 0o644, 1_500_000_000);
    let cfg = FolderConfig {
        pairs: vec![
            FolderPair {
                source: root.join("one"),
                target: root.join("one-copy"),
            },
            FolderPair {
                source: root.join("two"),
                target: root.join("two-copy"),
            },
        ],
        delete: false,
        checksum: false,
    };
    let second = cfg.pairs[1].item_id();
    let first_run = sync(&cfg).await;
    let missing = first_run
        .errors()
        .into_iter()
        .find(|e| e.error_id.as_deref() == Some(&format!("missing-{second}")))
        .expect("the second source is missing");
    assert!(missing.text.contains("two"), "{}", missing.text);
    write(&root.join("two"), "g", b"2", 0o644, 1_500_000_000);
    let retried = run(&cfg, Selection::ShowError(format!("missing-{second}"))).await;
    assert_eq!(retried.summary.items.len(), 1);
    assert_eq!(retried.summary.items[0].item, second);
    assert_eq!(retried.status(), ItemStatus::Succeeded);
    assert_mirror(&root.join("two"), &root.join("two-copy"));
}

#[tokio::test]
async fn cancel_in_a_large_file_leaves_nothing_partial() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (dir.path().join("s"), dir.path().join("t"));
    // 64 MiB: about a hundred chunks, so the cancel, sent as soon as the file's
    // first progress arrives, lands while it is being copied.
    let big: Vec<u8> = (0..64u32 << 20).map(|i| (i % 253) as u8).collect();
    write(&src, "a big file", &big, 0o644, 1_500_000_000);
    for n in 0..20 {
        write(&src, &format!("small {n}"), b"small", 0o644, 1_500_000_000);
    }
    let cfg = config(&src, &dst, false);
    let id = item_id(&cfg);
    let mut sent = false;
    let run = run_with(
        &cfg,
        Selection::Checked(HashMap::new()),
        |event, control| {
            if let SessionEvent::ItemChanged(item) = event
                && item.text == "a big file"
                && !sent
            {
                sent = control.cancel(&CancelTarget::Item {
                    handler: "mirror".into(),
                    item: id.clone(),
                });
            }
        },
    )
    .await;
    assert!(sent, "the big file's progress was seen");
    assert_eq!(run.status(), ItemStatus::Stopped, "{:#?}", run.logs());
    assert!(run.totals().starts_with("stopped:"), "{}", run.totals());
    assert!(temp_files(&dst).is_empty(), "{:?}", temp_files(&dst));
    // Nothing partial under a final name: whatever is there is complete.
    for (rel, node) in tree(&dst) {
        if let Node::File { data, .. } = node {
            assert_eq!(
                data,
                fs::read(src.join(&rel)).expect("source"),
                "{}",
                rel.display()
            );
        }
    }
    assert!(
        !dst.join("a big file").exists(),
        "the big file was cut short"
    );
    // And the cancel was seen within the big file (the copy of 64 MiB takes
    // far longer than an event takes to reach the test and come back).
    let stopped_at = run
        .events
        .iter()
        .rev()
        .find_map(|e| match e {
            SessionEvent::ItemChanged(s) => s.value,
            _ => None,
        })
        .expect("progress");
    assert!(stopped_at < big.len() as u64, "stopped at {stopped_at}");
}

/// A source or target that is a file, not a folder: refused or failed,
/// and the file is left as it was.
#[tokio::test]
async fn files_where_folders_belong_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    fs::write(root.join("a file"), b"not a folder").expect("write");
    let as_source = sync(&config(&root.join("a file"), &root.join("t"), true)).await;
    assert_eq!(as_source.status(), ItemStatus::Failed);
    let entry = as_source.errors().pop().expect("an entry");
    assert!(entry.text.contains("it is not a folder"), "{}", entry.text);
    assert!(!root.join("t").exists());

    write(&root.join("s"), "f", b"1", 0o644, 1_500_000_000);
    let as_target = sync(&config(&root.join("s"), &root.join("a file"), true)).await;
    assert_eq!(as_target.status(), ItemStatus::Failed);
    assert!(
        as_target
            .errors()
            .iter()
            .any(|e| e.text.contains("exists and is not a folder")),
        "{:#?}",
        as_target.errors()
    );
    assert_eq!(
        fs::read(root.join("a file")).expect("read"),
        b"not a folder"
    );
}

/// A folder that cannot be created in the target (here: its path would be
/// longer than PATH_MAX there, though not in the source) is one problem;
/// nothing below it is tried, and the rest of the tree is still mirrored.
#[tokio::test]
async fn nothing_is_tried_below_a_folder_that_could_not_be_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let long = "t".repeat(250);
    let (src, dst) = (
        dir.path().join("s"),
        dir.path().join(format!("{long}/{long}/{long}")),
    );
    fs::create_dir_all(&src).expect("mkdir");
    // 14 levels of 250 bytes: about 3,500 bytes below the source, which the
    // target's 750 more bytes take past 4,096.
    let _deep = deep_tree(
        &src,
        &"d".repeat(250),
        14,
        "for f in 1 2 3; do echo x > f$f; done",
    )
    .also_in(&dst);
    write(&src, "z/after.txt", b"after", 0o644, 1_500_000_000);

    let run = sync(&config(&src, &dst, false)).await;
    assert_eq!(run.status(), ItemStatus::Failed, "{:#?}", run.logs());
    let errors: Vec<String> = run.errors().into_iter().map(|e| e.text).collect();
    assert_eq!(
        errors
            .iter()
            .filter(|t| t.starts_with("cannot create folder"))
            .count(),
        1,
        "{errors:#?}"
    );
    assert!(
        !errors.iter().any(|t| t.starts_with("cannot write")),
        "{errors:#?}"
    );
    assert_eq!(fs::read(dst.join("z/after.txt")).expect("read"), b"after");
}

/// A mirror whose session is dropped mid-copy (its future dropped, as the
/// engine does to a handler it ends) stops copying: the blocking work sees
/// the abort, removes its temporary file, and never renames it into place.
#[tokio::test]
async fn a_dropped_mirror_stops_copying() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (dir.path().join("s"), dir.path().join("t"));
    let big: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    write(&src, "big", &big, 0o644, 1_500_000_000);
    let job = HandlerJob {
        name: "mirror".into(),
        handler: Box::new(FolderHandler::new(config(&src, &dst, false))),
        selection: Selection::Checked(HashMap::new()),
        timeout: Duration::from_secs(60),
    };
    let mut session_config = SessionConfig::new("s", SyncEvent::Manual);
    session_config.coalesce = Duration::ZERO;
    let (session, _control, mut rx) = Session::new(
        session_config,
        Arc::new(MemoryJournal::default()),
        vec![job],
    );
    let running = tokio::spawn(session.run());
    // Until the copy is under way.
    while let Some(event) = rx.recv().await {
        if let SessionEvent::ItemChanged(item) = &event
            && item.value.is_some_and(|v| v > 0)
        {
            break;
        }
    }
    running.abort();
    let _ = running.await;
    // The copying thread notices within a chunk and cleans up.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !temp_files(&dst).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(temp_files(&dst).is_empty(), "a temporary file stayed");
    assert!(!dst.join("big").exists(), "the copy went on after the drop");
}

/// A problem whose text would pass the 4 KiB limit of a log entry (a name
/// deep in a tree) is cut to fit, so that its entry is kept.
#[tokio::test]
async fn a_problem_with_a_very_long_path_is_still_logged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (dir.path().join("s"), dir.path().join("t"));
    fs::create_dir_all(&src).expect("mkdir");
    // Folders until the FIFO's absolute path is just under PATH_MAX: its
    // "cannot mirror PATH: it is a fifo..." text is then over 4,096 bytes.
    let base = src.as_os_str().len();
    let levels = (4040 - base) / 201;
    let name_len = 4060 - base - levels * 201;
    let fifo = format!("fifo-{}", "f".repeat(name_len.clamp(6, 250) - 5));
    let _deep = deep_tree(&src, &"d".repeat(200), levels, &format!("mkfifo {fifo}")).also_in(&dst);

    let run = sync(&config(&src, &dst, false)).await;
    let long: Vec<NewLogEntry> = run
        .errors()
        .into_iter()
        .filter(|e| e.text.starts_with("cannot mirror") && e.text.contains("/fifo-"))
        .collect();
    assert_eq!(long.len(), 1, "{:#?}", run.logs());
    assert!(long[0].text.len() <= syncmgr_core::model::MAX_TEXT_LEN);
}

/// Without `--checksum` a file is judged by size and modification time,
/// to the nanosecond: a same-size change within the same second is seen.
#[tokio::test]
async fn a_change_within_the_same_second_is_seen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (dir.path().join("s"), dir.path().join("t"));
    write(&src, "f", b"aaaa", 0o644, 1_500_000_000);
    let cfg = config(&src, &dst, false);
    assert_eq!(sync(&cfg).await.status(), ItemStatus::Succeeded);
    fs::write(src.join("f"), b"bbbb").expect("write");
    filetime::set_file_mtime(src.join("f"), FileTime::from_unix_time(1_500_000_000, 7))
        .expect("mtime");
    assert_eq!(sync(&cfg).await.status(), ItemStatus::Succeeded);
    assert_eq!(fs::read(dst.join("f")).expect("read"), b"bbbb");
    assert_mirror(&src, &dst);
}

/// The mass-delete guard counts the files inside folders that would go:
/// removing one folder that holds most of the target is refused too.
#[tokio::test]
async fn a_folder_holding_most_files_is_not_deleted_unasked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (dir.path().join("s"), dir.path().join("t"));
    for n in 0..8 {
        write(&src, &format!("x/inner/{n}"), b"data", 0o644, 1_500_000_000);
    }
    for n in 0..4 {
        write(&src, &format!("keep{n}"), b"data", 0o644, 1_500_000_000);
    }
    let cfg = config(&src, &dst, true);
    assert_eq!(sync(&cfg).await.status(), ItemStatus::Succeeded);
    fs::remove_dir_all(src.join("x")).expect("rm");
    let before = tree(&dst);
    let refused = sync(&cfg).await;
    assert_eq!(refused.status(), ItemStatus::Failed);
    let entry = guard_entry(&refused, &item_id(&cfg));
    assert!(
        entry.text.contains("delete 8 of the 12 files"),
        "{}",
        entry.text
    );
    assert_eq!(tree(&dst), before);
}

/// `--checksum` compares whole files: a difference past the first chunk
/// (1 MiB) of two files of the same size and time is found.
#[tokio::test]
async fn checksum_finds_a_difference_past_the_first_chunk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (dir.path().join("s"), dir.path().join("t"));
    let mut data = vec![7u8; 3 << 20];
    write(&src, "big", &data, 0o644, 1_500_000_000);
    let mut cfg = config(&src, &dst, false);
    cfg.checksum = true;
    assert_eq!(sync(&cfg).await.status(), ItemStatus::Succeeded);
    let last = data.len() - 1;
    data[last] = 8;
    write(&src, "big", &data, 0o644, 1_500_000_000);
    assert_eq!(sync(&cfg).await.status(), ItemStatus::Succeeded);
    assert_eq!(fs::read(dst.join("big")).expect("read"), data);
}
