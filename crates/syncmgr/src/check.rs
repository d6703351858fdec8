//! `syncmgr check-handler`: runs a handler program through the whole protocol
//! and prints one line per rule of `docs/protocol.md`, pass or fail with the
//! offending message.
//!
//! The checks use the real engine and the real process handler, so a handler
//! that passes here behaves under `syncmgr sync`. Every phase is bounded by
//! the silence timeout and a grace period: a crashing or hanging handler fails
//! its rules, it never hangs the checker.
//!
//! Phases: settings mode (initialize with `settingsOnly`, getHandlerInfo,
//! enumItems, shutdown); a sync of every item; a sync where the first item to
//! start is cancelled (`cancelItem`); a sync where the whole handler is
//! cancelled (`cancelAll`); when the handler reported a conflict,
//! `resolveConflict` on it and on one it never reported; and, when the
//! handler logged an actionable entry, `showError` with its retry round.

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use syncmgr_core::{
    CancelTarget, Cause, ConflictReport, ConflictResolution, HandlerJob, ItemStatus, Keep,
    MemoryJournal, NewLogEntry, Selection, Session, SessionConfig, SessionEvent, SessionSummary,
    SyncEvent, model::validate_id, query_handler,
};
use syncmgr_protocol::ProcessHandler;

use crate::output::Stdout;

/// The registration name the checked handler runs under.
const NAME: &str = "checked";
/// How long a handler gets to honour a cancel during the checks.
const GRACE: Duration = Duration::from_secs(2);

/// One rule's verdict.
#[derive(Debug)]
struct Verdict {
    rule: &'static str,
    /// `Err` = fail with the offending message; `Ok(Some)` = pass with a note.
    result: Result<Option<String>, String>,
}

/// What one checked session left behind.
struct Outcome {
    summary: SessionSummary,
    entries: Vec<NewLogEntry>,
    /// The conflicts the handler reported (`reportConflict`) and left open.
    conflicts: Vec<ConflictReport>,
    /// What became of each decision (`resolveConflict`): `Err` carries the
    /// handler's reason for refusing.
    decisions: Vec<(String, Result<(), String>)>,
}

impl Outcome {
    /// Entries the manager wrote (not the handler) for one of these causes.
    /// Verdicts are decided on the cause, never on the wording.
    fn problems(&self, causes: &[Cause]) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| e.cause.is_some_and(|c| causes.contains(&c)))
            .map(|e| match &e.item {
                Some(item) => format!("{item}: {}", e.text),
                None => e.text.clone(),
            })
            .collect()
    }

    fn status(&self, item: &str) -> Option<ItemStatus> {
        self.summary
            .items
            .iter()
            .find(|r| r.item == item)
            .map(|r| r.status)
    }
}

fn verdict(rule: &'static str, problems: Vec<String>) -> Verdict {
    Verdict {
        rule,
        result: if problems.is_empty() {
            Ok(None)
        } else {
            Err(problems.join("; "))
        },
    }
}

/// How a checked session cancels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelPlan {
    None,
    /// The first item seen updating.
    FirstItem,
    /// Everything, once an item is seen updating.
    All,
}

/// What a checked session's cancel hit.
#[derive(Debug, Default)]
struct Cancelled {
    /// The item seen updating that triggered the cancel (`None`: the cancel
    /// was never sent).
    trigger: Option<String>,
    /// Items already seen in a terminal status when the cancel was sent: the
    /// cancel did not concern them.
    done_before: HashSet<String>,
}

async fn run_session(
    argv: &[String],
    selection: Selection,
    timeout: Duration,
    plan: CancelPlan,
) -> (Outcome, Cancelled) {
    let handler = syncmgr_manager::handlers::process_handler(argv);
    let journal = Arc::new(MemoryJournal::default());
    let mut config = SessionConfig::new(uuid::Uuid::now_v7().to_string(), SyncEvent::Manual);
    config.grace = GRACE;
    let job = HandlerJob {
        name: NAME.to_owned(),
        handler,
        selection,
        timeout,
    };
    let (session, control, mut events) = Session::new(config, journal.clone(), vec![job]);
    let running = tokio::spawn(session.run());
    let mut cancelled = Cancelled::default();
    let mut decisions = Vec::new();
    while let Some(event) = events.recv().await {
        match &event {
            SessionEvent::ItemChanged(s)
                if cancelled.trigger.is_none()
                    && plan != CancelPlan::None
                    && matches!(
                        s.status,
                        ItemStatus::Updating | ItemStatus::UpdatingIndeterminate
                    ) =>
            {
                // Changes already on their way happened before the cancel.
                let mut finished = false;
                while let Ok(next) = events.try_recv() {
                    match next {
                        SessionEvent::ItemChanged(n) if n.status.is_terminal() => {
                            cancelled.done_before.insert(n.item);
                        }
                        SessionEvent::Finished(_) => finished = true,
                        _ => {}
                    }
                }
                let target = match plan {
                    CancelPlan::FirstItem => CancelTarget::Item {
                        handler: NAME.to_owned(),
                        item: s.item.clone(),
                    },
                    _ => CancelTarget::Handler(NAME.to_owned()),
                };
                control.cancel(&target);
                cancelled.trigger = Some(s.item.clone());
                if finished {
                    break;
                }
            }
            SessionEvent::ItemChanged(s)
                if cancelled.trigger.is_none() && s.status.is_terminal() =>
            {
                cancelled.done_before.insert(s.item.clone());
            }
            SessionEvent::ConflictResolved { conflict_id, .. } => {
                decisions.push((conflict_id.clone(), Ok(())));
            }
            SessionEvent::ConflictRefused {
                conflict_id,
                reason,
                ..
            } => decisions.push((conflict_id.clone(), Err(reason.clone()))),
            SessionEvent::Finished(_) => break,
            _ => {}
        }
    }
    let summary = match running.await {
        Ok(summary) => summary,
        Err(e) => SessionSummary {
            session: String::new(),
            outcome: syncmgr_core::SessionOutcome::Failed,
            counts: Default::default(),
            items: Vec::new(),
            failed_handlers: vec![format!("the session task failed: {e}")],
        },
    };
    let entries = journal.entries().into_iter().map(|(_, e)| e).collect();
    let conflicts = journal
        .conflicts()
        .into_iter()
        .map(|(_, c, _)| c.report)
        .collect();
    (
        Outcome {
            summary,
            entries,
            conflicts,
            decisions,
        },
        cancelled,
    )
}

/// The rules every sync session is held to.
fn session_rules(outcome: &Outcome, verdicts: &mut Vec<Verdict>) {
    verdicts.push(verdict(
        "stays responsive within its timeout",
        outcome.problems(&[Cause::NotResponding]),
    ));
    verdicts.push(verdict(
        "keeps running until shutdown",
        outcome.problems(&[Cause::ProcessEnded]),
    ));
    verdicts.push(verdict(
        "answers every request of the manager",
        outcome.problems(&[Cause::CallFailed]),
    ));
    verdicts.push(verdict(
        "reports a final status for every prepared item",
        outcome.problems(&[Cause::NoFinalStatus]),
    ));
    verdicts.push(verdict(
        "sends only valid messages and requests",
        outcome.problems(&[Cause::BrokenRule, Cause::OverBudget]),
    ));
    verdicts.push(verdict(
        "exits with status 0 after shutdown, within the grace period",
        outcome.problems(&[Cause::UncleanExit]),
    ));
}

/// Runs every check; returns whether the handler conforms.
pub async fn check_handler(
    argv: &[String],
    timeout: Duration,
    out: &mut Stdout,
) -> anyhow::Result<bool> {
    let mut verdicts = Vec::new();

    // Settings mode.
    let mut handler: Box<dyn syncmgr_core::Handler> = match ProcessHandler::spawn(argv, None, &[]) {
        Ok(h) => Box::new(h),
        Err(e) => {
            writeln!(out, "fail  starts: {e}")?;
            return Ok(false);
        }
    };
    let items = match query_handler(handler.as_mut(), SyncEvent::Manual, timeout).await {
        Ok(Some((info, enumeration))) => {
            verdicts.push(Verdict {
                rule: "answers initialize, getHandlerInfo and enumItems in settings mode",
                result: Ok(None),
            });
            verdicts.push(Verdict {
                rule: "gives itself a display name",
                result: if info.name.trim().is_empty() {
                    Err("getHandlerInfo returned an empty name".to_owned())
                } else {
                    Ok(Some(info.name.clone()))
                },
            });
            let mut seen = HashSet::new();
            let mut problems = Vec::new();
            for item in &enumeration.items {
                if let Err(e) = validate_id(&item.id) {
                    problems.push(format!("item {:?}: {e}", item.id));
                }
                if !seen.insert(item.id.clone()) {
                    problems.push(format!("item {:?} is listed twice", item.id));
                }
                if item.name.trim().is_empty() {
                    problems.push(format!("item {:?} has an empty name", item.id));
                }
            }
            verdicts.push(verdict("lists items with valid, unique ids", problems));
            enumeration
                .items
                .into_iter()
                .map(|i| i.id)
                .filter(|id| validate_id(id).is_ok())
                .collect::<Vec<_>>()
        }
        Ok(None) => {
            writeln!(
                out,
                "pass  answers initialize (it declines the manual event: nothing more to check)"
            )?;
            return Ok(true);
        }
        Err(e) => {
            verdicts.push(Verdict {
                rule: "answers initialize, getHandlerInfo and enumItems in settings mode",
                result: Err(e.to_string()),
            });
            return report(&verdicts, out);
        }
    };
    if items.is_empty() {
        verdicts.push(Verdict {
            rule: "synchronizes its items",
            result: Ok(Some(
                "the handler lists no items; nothing to sync".to_owned(),
            )),
        });
        return report(&verdicts, out);
    }

    // A plain sync of every item.
    let (plain, _) = run_session(
        argv,
        Selection::Items(items.clone()),
        timeout,
        CancelPlan::None,
    )
    .await;
    session_rules(&plain, &mut verdicts);
    let mut actionable: Vec<String> = plain
        .entries
        .iter()
        .filter(|e| e.actionable)
        .filter_map(|e| e.error_id.clone())
        .collect();

    // Cancel the first item that starts.
    let (one, cancelled) = run_session(
        argv,
        Selection::Items(items.clone()),
        timeout,
        CancelPlan::FirstItem,
    )
    .await;
    verdicts.push(cancel_verdict(
        "honours cancelItem (progress reply and setItemStatus)",
        &one,
        cancelled.trigger.as_slice(),
    ));
    actionable.extend(
        one.entries
            .iter()
            .filter(|e| e.actionable)
            .filter_map(|e| e.error_id.clone()),
    );

    // Cancel everything once an item starts.
    let (all, started) = run_session(
        argv,
        Selection::Items(items.clone()),
        timeout,
        CancelPlan::All,
    )
    .await;
    // Items that had ended before the cancel was sent are not its business
    // (an item may well fail while another one is still running).
    let unfinished: Vec<String> = match started.trigger {
        Some(_) => items
            .iter()
            .filter(|item| !started.done_before.contains(*item))
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    verdicts.push(cancel_verdict(
        "honours cancelAll",
        &all,
        unfinished.as_slice(),
    ));

    conflict_rules(argv, timeout, &plain, &mut verdicts).await;

    // showError and its retry round.
    match actionable.first() {
        None => verdicts.push(Verdict {
            rule: "answers showError and retries what it asks to",
            result: Ok(Some(
                "not exercised: the handler logged no actionable entry".to_owned(),
            )),
        }),
        Some(error_id) => {
            let (retry, _) = run_session(
                argv,
                Selection::ShowError(error_id.clone()),
                timeout,
                CancelPlan::None,
            )
            .await;
            let problems = retry.problems(&[
                Cause::CallFailed,
                Cause::ProcessEnded,
                Cause::NotResponding,
                Cause::NoFinalStatus,
            ]);
            let note = format!(
                "showError {error_id:?} asked to retry {} item(s)",
                retry.summary.items.len()
            );
            verdicts.push(Verdict {
                rule: "answers showError and retries what it asks to",
                result: if problems.is_empty() {
                    Ok(Some(note))
                } else {
                    Err(problems.join("; "))
                },
            });
        }
    }
    report(&verdicts, out)
}

/// The conflict store's rules, when the plain sync reported a conflict: a
/// decision on it is answered (applied, or refused with a reason), and one
/// on a conflict the handler never reported is refused, not applied.
async fn conflict_rules(
    argv: &[String],
    timeout: Duration,
    plain: &Outcome,
    verdicts: &mut Vec<Verdict>,
) {
    const ANSWERS: &str = "answers resolveConflict for a conflict it reported";
    const REFUSES: &str = "refuses resolveConflict for a conflict it never reported";
    let Some(conflict) = plain.conflicts.first() else {
        for rule in [ANSWERS, REFUSES] {
            verdicts.push(Verdict {
                rule,
                result: Ok(Some(
                    "not exercised: the handler reported no conflict".to_owned(),
                )),
            });
        }
        return;
    };
    let broken = [
        Cause::CallFailed,
        Cause::ProcessEnded,
        Cause::NotResponding,
        Cause::NoFinalStatus,
        Cause::BrokenRule,
    ];
    // A refusal is a fine answer here; only a broken call is not.
    let decide = |conflict_id: &str| {
        Selection::Resolve(vec![ConflictResolution {
            item: conflict.item.clone(),
            conflict_id: conflict_id.to_owned(),
            keep: Keep::One(0),
        }])
    };
    let (kept, _) = run_session(
        argv,
        decide(&conflict.conflict_id),
        timeout,
        CancelPlan::None,
    )
    .await;
    let decided = kept
        .decisions
        .iter()
        .find(|(id, _)| *id == conflict.conflict_id);
    let problems = kept.problems(&broken);
    verdicts.push(Verdict {
        rule: ANSWERS,
        result: match (decided, problems.is_empty()) {
            (Some((_, Ok(()))), true) => Ok(Some(format!(
                "conflict {:?} resolved keeping version 0",
                conflict.conflict_id
            ))),
            (Some((_, Err(reason))), true) => Ok(Some(format!(
                "conflict {:?} refused: {reason}",
                conflict.conflict_id
            ))),
            (None, _) => Err(format!(
                "no answer to resolveConflict for {:?}: {}",
                conflict.conflict_id,
                problems.join("; ")
            )),
            (_, false) => Err(problems.join("; ")),
        },
    });
    let bogus = "syncmgr-check-no-such-conflict";
    let (unknown, _) = run_session(argv, decide(bogus), timeout, CancelPlan::None).await;
    let answer = unknown.decisions.iter().find(|(id, _)| id == bogus);
    verdicts.push(Verdict {
        rule: REFUSES,
        result: match answer {
            Some((_, Err(reason))) => Ok(Some(format!("refused: {reason}"))),
            Some((_, Ok(()))) => Err(format!(
                "resolveConflict for {bogus:?}, a conflict it never reported, was answered as applied"
            )),
            None => Err(unknown.problems(&broken).join("; ")),
        },
    });
}

/// A cancel was honoured when the manager found nothing wrong (no cancel
/// ignored past the grace period, none left unconfirmed, no silence, no exit)
/// and every cancelled item ended `stopped` or `skipped` by the handler's own
/// report. An item that ended `succeeded`, `failed` or `deleted` is taken to
/// have ended before the cancel reached the handler: the checker cannot tell
/// that apart from an end reported after it.
fn cancel_verdict(rule: &'static str, outcome: &Outcome, cancelled: &[String]) -> Verdict {
    if cancelled.is_empty() {
        return Verdict {
            rule,
            result: Ok(Some(
                "not exercised: no item reported `updating` to cancel".to_owned(),
            )),
        };
    }
    let mut problems = outcome.problems(&[
        Cause::IgnoredCancel,
        Cause::CancelNotConfirmed,
        Cause::NotResponding,
        Cause::ProcessEnded,
    ]);
    let mut finished_first = Vec::new();
    for item in cancelled {
        match outcome.status(item) {
            Some(ItemStatus::Stopped | ItemStatus::Skipped) => {}
            // The cancel may reach a handler just after its last report, and
            // the checker sees item changes a little late (coalesced), so an
            // item may have ended, well or not, before the cancel reached
            // the handler. A handler that goes on working after the cancel
            // is caught by the manager ("did not honour a cancel").
            Some(status @ (ItemStatus::Succeeded | ItemStatus::Failed | ItemStatus::Deleted)) => {
                finished_first.push(if status == ItemStatus::Succeeded {
                    item.clone()
                } else {
                    format!("{item} ({status})")
                })
            }
            Some(other) => problems.push(format!("item {item} ended {other} after the cancel")),
            None => problems.push(format!("item {item} was never prepared")),
        }
    }
    let mut v = verdict(rule, problems);
    if v.result.is_ok() && !finished_first.is_empty() {
        v.result = Ok(Some(format!(
            "{} finished before the cancel reached the handler",
            finished_first.join(", ")
        )));
    }
    v
}

fn report(verdicts: &[Verdict], out: &mut Stdout) -> anyhow::Result<bool> {
    let mut failed = 0;
    for v in verdicts {
        match &v.result {
            Ok(None) => writeln!(out, "pass  {}", v.rule)?,
            Ok(Some(note)) => writeln!(out, "pass  {} ({note})", v.rule)?,
            Err(problem) => {
                failed += 1;
                writeln!(out, "fail  {}: {problem}", v.rule)?;
            }
        }
    }
    if failed == 0 {
        writeln!(
            out,
            "the handler conforms ({} rules checked)",
            verdicts.len()
        )?;
    } else {
        writeln!(
            out,
            "the handler does not conform: {failed} of {} rules failed",
            verdicts.len()
        )?;
    }
    Ok(failed == 0)
}
