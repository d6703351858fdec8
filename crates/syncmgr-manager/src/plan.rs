//! What a session is to sync: `sync`'s targets (`NAME`, `NAME/ITEM`, or
//! none for every handler) turned into registrations and item selections,
//! for the inline command and the daemon alike.

use std::collections::BTreeMap;

use syncmgr_core::{ConflictResolution, Keep, LogEntry, Selection, SyncEvent};
use syncmgr_store::{Registration, Store};

use crate::error::{ManagerError, Result};

/// What a session syncs: each registration with its item selection.
pub type Jobs = Vec<(Registration, Selection)>;

/// The event a `sync` runs for: the one named, else `invoke` when a
/// program's cookie is given, else `manual`.
pub fn sync_event(event: Option<&str>, cookie: Option<&str>) -> Result<SyncEvent> {
    match (event, cookie) {
        (Some(e), _) => e.parse().map_err(|e| ManagerError::usage(format!("{e}"))),
        // A cookie is what a program hands over when it asks for a sync.
        (None, Some(_)) => Ok(SyncEvent::Invoke),
        (None, None) => Ok(SyncEvent::Manual),
    }
}

/// Looks a registration up, as a usage error when unknown.
pub fn registration(store: &Store, name: &str) -> Result<Registration> {
    store.registration(name)?.ok_or_else(|| {
        ManagerError::usage(format!("unknown handler {name:?} (see `syncmgr handlers`)"))
    })
}

/// The jobs of a session for `event` on `targets`. `NAME` means its items
/// chosen for the event; `NAME/ITEM` adds that item; `NAME` wins over
/// `NAME/ITEM` for the same handler. No target: every handler that takes
/// part in the event. A handler that did not opt in to an automatic event
/// it is named for is bad input.
pub fn jobs(
    store: &Store,
    targets: &[String],
    event: SyncEvent,
) -> Result<Vec<(Registration, Selection)>> {
    let takes_part = |reg: &Registration| !event.needs_opt_in() || reg.events.contains(&event);
    let mut jobs = Vec::new();
    if targets.is_empty() {
        let all = store.registrations()?;
        if all.is_empty() {
            return Err(ManagerError::usage(
                "no handlers registered: nothing to sync (see `syncmgr register --help`)",
            ));
        }
        for reg in all.into_iter().filter(|r| takes_part(r)) {
            let choices = store.choices(&reg.name, event)?;
            jobs.push((reg, Selection::Checked(choices)));
        }
        return Ok(jobs);
    }
    let mut wanted: BTreeMap<String, Option<Vec<String>>> = BTreeMap::new();
    for target in targets {
        let (name, item) = match target.split_once('/') {
            Some((n, i)) if !i.is_empty() => (n, Some(i)),
            Some(_) => {
                return Err(ManagerError::usage(format!(
                    "target {target:?} has an empty item"
                )));
            }
            None => (target.as_str(), None),
        };
        let entry = wanted.entry(name.to_owned()).or_insert(Some(Vec::new()));
        match (item, entry) {
            (None, entry) => *entry = None,
            (Some(item), Some(items)) => {
                if !items.iter().any(|i| i == item) {
                    items.push(item.to_owned());
                }
            }
            (Some(_), None) => {}
        }
    }
    for (name, items) in wanted {
        let reg = registration(store, &name)?;
        if !takes_part(&reg) {
            return Err(ManagerError::usage(format!(
                "handler {name} did not opt in to the {event} event (see `syncmgr register --events`)"
            )));
        }
        let selection = match items {
            None => Selection::Checked(store.choices(&name, event)?),
            Some(items) => Selection::Items(items),
        };
        jobs.push((reg, selection));
    }
    Ok(jobs)
}

/// `log show ID`: the entry, and the job that asks its handler about it
/// (`showError`) and retries what it asks to.
pub fn show_error_job(store: &Store, id: i64) -> Result<(LogEntry, (Registration, Selection))> {
    let entry = store
        .log_entry(id)?
        .ok_or_else(|| ManagerError::usage(format!("no log entry {id}")))?;
    let Some(error_id) = entry.entry.error_id.clone() else {
        return Err(ManagerError::usage(format!(
            "log entry {id} was written by syncmgr itself, not by a handler: there is nothing to ask"
        )));
    };
    // Until the session that logged the entry has ended, its handler process
    // owns the entry (protocol rule 4): asking a second process would race it.
    if let Some(session) = store.session(&entry.entry.session)?
        && session.outcome.is_none()
    {
        return Err(ManagerError::NotNow(format!(
            "the session that logged entry {id} ({}) is still running; ask again when it has finished",
            session.id
        )));
    }
    let reg = registration(store, &entry.entry.handler)?;
    Ok((entry, (reg, Selection::ShowError(error_id))))
}

/// `conflicts resolve`: one job per handler concerned, resolving its
/// conflicts in the order given. An unknown conflict or version is bad
/// input; a conflict whose reporting session still runs is not decided yet
/// (its handler process owns it).
pub fn resolve_jobs(store: &Store, decisions: &[syncmgr_api::Decision]) -> Result<Jobs> {
    let mut jobs: Jobs = Vec::new();
    for decision in decisions {
        let id = decision.conflict;
        let conflict = store
            .conflict(id)?
            .ok_or_else(|| ManagerError::usage(format!("no open conflict {id}")))?;
        let versions = conflict.report.versions.len();
        let keep = match decision.keep {
            Some(n) if n >= versions => {
                return Err(ManagerError::usage(format!(
                    "conflict {id} has versions 0 to {}, not {n}",
                    versions - 1
                )));
            }
            Some(n) => Keep::One(n),
            None => Keep::All,
        };
        if let Some(session) = store.session(&conflict.session)?
            && session.outcome.is_none()
        {
            return Err(ManagerError::NotNow(format!(
                "the session that reported conflict {id} ({}) is still running; decide when it has finished",
                session.id
            )));
        }
        let resolution = ConflictResolution {
            item: conflict.report.item.clone(),
            conflict_id: conflict.report.conflict_id.clone(),
            keep,
        };
        match jobs
            .iter_mut()
            .find(|(reg, _)| reg.name == conflict.handler)
        {
            Some((_, Selection::Resolve(list))) => list.push(resolution),
            _ => jobs.push((
                registration(store, &conflict.handler)?,
                Selection::Resolve(vec![resolution]),
            )),
        }
    }
    Ok(jobs)
}

/// The targets that name what `jobs` syncs (`NAME` for a handler's chosen
/// items, `NAME/ITEM` for each item named).
pub fn targets_of(jobs: &[(Registration, Selection)]) -> Vec<String> {
    let mut targets = Vec::new();
    for (reg, selection) in jobs {
        match selection {
            Selection::Items(items) => {
                targets.extend(items.iter().map(|item| format!("{}/{item}", reg.name)));
            }
            _ => targets.push(reg.name.clone()),
        }
    }
    targets
}

/// Merges `more` into `jobs` (a request that joins a queued session): a
/// handler's chosen items win over single items; item lists are united.
pub fn merge(jobs: &mut Vec<(Registration, Selection)>, more: Vec<(Registration, Selection)>) {
    for (reg, selection) in more {
        match jobs.iter_mut().find(|(r, _)| r.name == reg.name) {
            None => jobs.push((reg, selection)),
            Some((_, existing)) => match (existing, selection) {
                (Selection::Items(have), Selection::Items(add)) => {
                    for item in add {
                        if !have.contains(&item) {
                            have.push(item);
                        }
                    }
                }
                (existing @ Selection::Items(_), checked @ Selection::Checked(_)) => {
                    *existing = checked;
                }
                _ => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use syncmgr_store::HandlerKind;

    use super::*;

    fn reg(name: &str) -> Registration {
        Registration {
            name: name.to_owned(),
            description: None,
            kind: HandlerKind::Process {
                argv: vec!["true".to_owned()],
            },
            events: Vec::new(),
            timeout: None,
            registered: chrono::Utc::now(),
        }
    }

    fn items(list: &[&str]) -> Selection {
        Selection::Items(list.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn merging_unites_items_and_keeps_whole_handlers() {
        let mut jobs = vec![(reg("a"), items(&["x"])), (reg("b"), items(&["y"]))];
        merge(
            &mut jobs,
            vec![
                (reg("a"), items(&["x", "z"])),
                (reg("b"), Selection::Checked(HashMap::new())),
                (reg("c"), items(&["w"])),
            ],
        );
        assert_eq!(targets_of(&jobs), ["a/x", "a/z", "b", "c/w"]);
        // A whole handler stays whole.
        merge(&mut jobs, vec![(reg("b"), items(&["y"]))]);
        assert_eq!(targets_of(&jobs), ["a/x", "a/z", "b", "c/w"]);
    }

    #[test]
    fn the_event_follows_the_flags() {
        assert_eq!(sync_event(None, None).unwrap(), SyncEvent::Manual);
        assert_eq!(sync_event(None, Some("c")).unwrap(), SyncEvent::Invoke);
        assert_eq!(
            sync_event(Some("idle"), Some("c")).unwrap(),
            SyncEvent::Idle
        );
        assert!(matches!(
            sync_event(Some("nonsense"), None),
            Err(ManagerError::Usage(_))
        ));
    }
}
