//! The smallest useful handler: two items that count to N with progress,
//! honour cancels, and (with `--fail ITEM`) fail once with an actionable log
//! entry that `syncmgr log show` turns into a successful retry.
//!
//! ```text
//! cargo build -p syncmgr-sdk --examples
//! syncmgr register mini -- target/debug/examples/minimal --step-ms 500
//! syncmgr sync
//! ```
//!
//! Options: `--steps N` (default 5), `--step-ms MS` (default 100),
//! `--fail ITEM` (fail that item until retried).

use std::collections::HashSet;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use syncmgr_sdk::{
    HandlerError, HandlerInfo, InitContext, Item, ItemOutcome, Progress, SyncHandler, Update,
};

struct Minimal {
    steps: u64,
    step: Duration,
    fail: Option<String>,
    /// Items `show_error` asked to retry: they succeed from now on.
    retried: Mutex<HashSet<String>>,
}

impl SyncHandler for Minimal {
    fn info(&self) -> HandlerInfo {
        HandlerInfo::new("Minimal example")
    }

    fn items(&mut self, _ctx: &InitContext) -> Result<Vec<Item>, HandlerError> {
        Ok(vec![
            Item::new("inbox", "Inbox"),
            Item::new("outbox", "Outbox"),
        ])
    }

    fn sync_item(&self, item: &str, progress: &Progress) -> Result<ItemOutcome, HandlerError> {
        for step in 1..=self.steps {
            // The real work goes here. Waiting stands in for it: it returns
            // early, with `true`, when the manager cancels the item.
            if progress.wait_cancelled(self.step) {
                return Ok(ItemOutcome::stopped());
            }
            let text = format!("step {step} of {}", self.steps);
            if progress
                .report(Update::progress(step, self.steps).text(text))
                .is_cancel()
            {
                return Ok(ItemOutcome::stopped());
            }
        }
        let retried = self.retried.lock().is_ok_and(|r| r.contains(item));
        if self.fail.as_deref() == Some(item) && !retried {
            // Logged as an actionable error entry; `syncmgr log show ID`
            // reaches `show_error` with "retry-<item>".
            return Err(HandlerError::new(format!("{item}: simulated failure"))
                .actionable(format!("retry-{item}")));
        }
        Ok(ItemOutcome::succeeded())
    }

    fn show_error(&mut self, error_id: &str) -> Vec<String> {
        match error_id.strip_prefix("retry-") {
            Some(item) => {
                if let Ok(mut retried) = self.retried.lock() {
                    retried.insert(item.to_owned());
                }
                vec![item.to_owned()]
            }
            None => Vec::new(),
        }
    }
}

fn main() -> ExitCode {
    let mut handler = Minimal {
        steps: 5,
        step: Duration::from_millis(100),
        fail: None,
        retried: Mutex::default(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        let number = value.parse::<u64>();
        match (flag.as_str(), number) {
            ("--steps", Ok(n)) => handler.steps = n,
            ("--step-ms", Ok(ms)) => handler.step = Duration::from_millis(ms),
            ("--fail", _) => handler.fail = Some(value),
            _ => return usage(&flag),
        }
    }
    match syncmgr_sdk::serve(handler) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "minimal: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(flag: &str) -> ExitCode {
    let _ = writeln!(
        std::io::stderr(),
        "minimal: bad argument {flag:?}\nusage: minimal [--steps N] [--step-ms MS] [--fail ITEM]"
    );
    ExitCode::from(2)
}
