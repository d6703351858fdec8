//! Helpers for the workspace's integration tests: building a workspace
//! binary from inside a test, and running git hermetically. They panic on
//! failure, as test code does.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `target/<profile>` of the running test binary
/// (`target/<profile>/deps/<name>-<hash>`).
pub fn test_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .to_owned()
}

/// Asks the cargo running the tests to `build ARGS` in `profile_dir`'s
/// profile and target directory (cheap when everything is fresh; cargo does
/// not hold its lock while tests run), then checks that `product` exists.
/// Without `CARGO` (a test binary run by hand), `product` must exist already.
pub fn cargo_build(profile_dir: &Path, args: &[&str], product: &Path) {
    let Some(cargo) = std::env::var_os("CARGO") else {
        assert!(
            product.is_file(),
            "{} is missing and CARGO is not set: run the tests through `cargo test`, \
             or run `cargo build {}`",
            product.display(),
            args.join(" ")
        );
        return;
    };
    let mut build = Command::new(cargo);
    build
        .args(["build", "--quiet"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null());
    match profile_dir.file_name().and_then(OsStr::to_str) {
        Some("debug") | None => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(profile) => {
            build.args(["--profile", profile]);
        }
    }
    // `--target-dir` given to `cargo test` is not in the tests' environment;
    // the target directory is the one holding CACHEDIR.TAG above the
    // profile's.
    if let Some(target_dir) = profile_dir.parent()
        && target_dir.join("CACHEDIR.TAG").is_file()
    {
        build.arg("--target-dir").arg(target_dir);
    }
    let out = build
        .output()
        .unwrap_or_else(|e| panic!("cannot run {build:?}: {e}"));
    assert!(
        out.status.success(),
        "{build:?} failed\nstatus: {}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        product.is_file(),
        "{build:?} succeeded but {} does not exist",
        product.display()
    );
}

/// `syncmgr-test-handler`, built into `profile_dir` (a package of its own,
/// so `cargo test -p <another>` does not build it).
pub fn build_test_handler(profile_dir: &Path) -> PathBuf {
    let path = profile_dir.join("syncmgr-test-handler");
    cargo_build(
        profile_dir,
        &["-p", "syncmgr-testkit", "--bin", "syncmgr-test-handler"],
        &path,
    );
    path
}

/// Runs git in `dir`, independent of the user's configuration; its stdout,
/// trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .env("LC_ALL", "C")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
