//! `syncmgr conflicts`: the conflict store from the command line (Sync
//! Center's Conflicts folder): list, show one, decide.

use std::io::{BufRead, IsTerminal, Write};

use syncmgr_api as api;
use syncmgr_manager::{Home, views};
use syncmgr_store::Store;

use crate::cli::ResolveArgs;
use crate::error::usage;
use crate::exit_codes;
use crate::output::Stdout;
use crate::text::escape;

/// `syncmgr conflicts [--json] [--handler NAME]`.
pub fn list(
    store: &Store,
    handler: Option<&str>,
    json: bool,
    out: &mut Stdout,
) -> anyhow::Result<()> {
    let conflicts = views::conflicts(store, handler)?;
    if json {
        return out.json(&conflicts);
    }
    if conflicts.is_empty() {
        writeln!(out, "no open conflicts")?;
    }
    for c in &conflicts {
        writeln!(
            out,
            "#{} {} {}: {}  ({} versions; syncmgr conflicts show {})",
            c.id,
            c.detected
                .get(..19)
                .unwrap_or(&c.detected)
                .replacen('T', " ", 1),
            escape(&format!("{}/{}", c.handler, c.item)),
            escape(&c.text),
            c.versions.len(),
            c.id
        )?;
    }
    Ok(())
}

/// `syncmgr conflicts show ID [--json]`.
pub fn show(store: &Store, id: i64, json: bool, out: &mut Stdout) -> anyhow::Result<()> {
    let detail = views::conflict(store, id)?;
    if json {
        return out.json(&detail);
    }
    let c = &detail.conflict;
    writeln!(
        out,
        "conflict #{} in {}: {}",
        c.id,
        escape(&format!("{}/{}", c.handler, c.item)),
        escape(&c.text)
    )?;
    writeln!(out, "reported {} (session {})", c.detected, c.session)?;
    for (n, v) in c.versions.iter().enumerate() {
        let mut line = format!("  --keep {n}: {}", escape(&v.label));
        if let Some(detail) = &v.detail {
            line.push_str(&format!(" ({})", escape(detail)));
        }
        if let Some(size) = v.size {
            line.push_str(&format!(", {size} bytes"));
        }
        if let Some(modified) = &v.modified {
            line.push_str(&format!(", modified {modified}"));
        }
        writeln!(out, "{line}")?;
    }
    if let Some(reason) = &c.reason {
        writeln!(out, "last decision refused: {}", escape(reason))?;
    }
    if let Some(diff) = &detail.diff {
        // The diff is the files' own text: shown as it is, but a control
        // character cannot reach the terminal.
        for line in diff.lines() {
            writeln!(out, "{}", escape(line))?;
        }
    }
    writeln!(
        out,
        "decide: syncmgr conflicts resolve {} --keep N (or --keep-all)",
        c.id
    )?;
    Ok(())
}

/// `syncmgr conflicts resolve`: the decisions, the user's yes, then the
/// session that applies them; the exit code.
pub async fn resolve(
    home: &Home,
    store: Store,
    args: ResolveArgs,
    mut out: Stdout,
) -> anyhow::Result<i32> {
    let (decisions, undecided) = decisions(&store, &args)?;
    for id in &undecided {
        crate::output::warn(&format!(
            "conflict {id} left open: no version of it is newer than the others"
        ));
    }
    // A conflict left open makes the command fail, whatever else it did.
    let open_left = |code: i32| {
        if undecided.is_empty() {
            code
        } else {
            code.max(exit_codes::FAILED)
        }
    };
    if decisions.is_empty() {
        writeln!(out, "no conflict to resolve")?;
        return Ok(open_left(exit_codes::SUCCESS));
    }
    let what = match decisions.as_slice() {
        [one] => match one.keep {
            Some(n) => format!("resolve conflict {} keeping version {n}", one.conflict),
            None => format!("resolve conflict {} keeping every version", one.conflict),
        },
        many => format!("resolve {} conflicts", many.len()),
    };
    if !confirmed(&args, &what) {
        return Ok(exit_codes::FAILED);
    }
    let plan = crate::run::resolve_plan(&store, decisions, args.json, args.tuning)?;
    let code = crate::run::run(home, store, plan, out, false, false).await?;
    Ok(open_left(code))
}

/// The decisions `conflicts resolve` asks for, and what was left undecided
/// (`--keep-newer` where no version is newer).
fn decisions(store: &Store, args: &ResolveArgs) -> anyhow::Result<(Vec<api::Decision>, Vec<i64>)> {
    if let Some(id) = args.id {
        if args.keep_newer {
            return Err(usage(
                "--keep-newer goes with --all; one conflict takes --keep N or --keep-all",
            ));
        }
        let keep = if args.keep_all {
            None
        } else {
            Some(args.keep.ok_or_else(|| usage("--keep N or --keep-all"))?)
        };
        // An unknown id or version is said now, before anything runs.
        let conflict = views::conflict(store, id)?.conflict;
        if let Some(n) = keep
            && n >= conflict.versions.len()
        {
            return Err(usage(format!(
                "conflict {id} has versions 0 to {}, not {n}",
                conflict.versions.len() - 1
            )));
        }
        return Ok((vec![api::Decision { conflict: id, keep }], Vec::new()));
    }
    let mut chosen = Vec::new();
    let mut undecided = Vec::new();
    for c in views::conflicts(store, args.handler.as_deref())? {
        if args.keep_all {
            chosen.push(api::Decision {
                conflict: c.id,
                keep: None,
            });
            continue;
        }
        match newest(&c.versions) {
            Some(n) => chosen.push(api::Decision {
                conflict: c.id,
                keep: Some(n),
            }),
            None => undecided.push(c.id),
        }
    }
    Ok((chosen, undecided))
}

/// The version modified last; `None` on a tie or when a time is missing.
fn newest(versions: &[api::ConflictVersion]) -> Option<usize> {
    let times: Vec<chrono::DateTime<chrono::FixedOffset>> = versions
        .iter()
        .map(|v| {
            v.modified
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        })
        .collect::<Option<_>>()?;
    let latest = times.iter().max()?;
    let mut at = times.iter().enumerate().filter(|(_, t)| *t == latest);
    let (n, _) = at.next()?;
    at.next().is_none().then_some(n)
}

/// Asks on the terminal whether to go ahead; `--yes` agrees, and without a
/// terminal the answer is no.
fn confirmed(args: &ResolveArgs, what: &str) -> bool {
    if args.yes {
        return true;
    }
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        crate::output::warn(&format!(
            "not confirmed: there is no terminal to ask on whether to {what}; add --yes to go ahead"
        ));
        return false;
    }
    crate::output::prompt(&format!("{what}? [y/N] "));
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).is_ok()
        && matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(modified: Option<&str>) -> api::ConflictVersion {
        api::ConflictVersion {
            label: "v".into(),
            size: None,
            modified: modified.map(str::to_owned),
            detail: None,
        }
    }

    #[test]
    fn the_newest_version_is_chosen_only_when_there_is_one() {
        let old = Some("2026-01-01T00:00:00.000Z");
        let new = Some("2026-06-01T00:00:00.000Z");
        assert_eq!(newest(&[version(old), version(new)]), Some(1));
        assert_eq!(newest(&[version(new), version(old)]), Some(0));
        assert_eq!(newest(&[version(new), version(new)]), None);
        assert_eq!(newest(&[version(new), version(None)]), None);
        assert_eq!(newest(&[version(Some("yesterday")), version(new)]), None);
    }
}
