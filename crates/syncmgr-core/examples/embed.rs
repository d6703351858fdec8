//! Embedding the manager: an in-process handler, no child process, no store.
//!
//! Run with `cargo run -p syncmgr-core --example embed`. It syncs three
//! "mailboxes", cancels one of them half-way through, and prints the outcome.

// An example's output is the point of it.
#![allow(clippy::print_stderr)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use syncmgr_core::{
    CancelTarget, Handler, HandlerCallback, HandlerError, HandlerInfo, HandlerJob,
    InitializeParams, Item, ItemEnumeration, ItemStatus, MemoryJournal, Participation,
    ProgressReply, ProgressUpdate, Selection, Session, SessionConfig, SessionEvent, SyncEvent,
};

/// A handler that "downloads" 10 messages per mailbox.
struct Mail {
    prepared: Vec<String>,
}

#[async_trait]
impl Handler for Mail {
    async fn initialize(&mut self, _: &InitializeParams) -> Result<Participation, HandlerError> {
        Ok(Participation::Participate)
    }

    async fn handler_info(&mut self) -> Result<HandlerInfo, HandlerError> {
        Ok(HandlerInfo {
            name: "Example mail".into(),
            ..HandlerInfo::default()
        })
    }

    async fn enum_items(&mut self) -> Result<ItemEnumeration, HandlerError> {
        let item = |id: &str| Item {
            id: id.into(),
            name: format!("Mailbox {id}"),
            checked: true,
            flags: Default::default(),
            last_update: None,
        };
        Ok(ItemEnumeration {
            items: vec![item("inbox"), item("archive"), item("sent")],
            complete: true,
        })
    }

    async fn prepare_for_sync(
        &mut self,
        items: &[String],
        _: &HandlerCallback,
    ) -> Result<(), HandlerError> {
        self.prepared = items.to_vec();
        Ok(())
    }

    async fn synchronize(&mut self, cb: &HandlerCallback) -> Result<(), HandlerError> {
        'items: for item in &self.prepared {
            for n in 0..=10u64 {
                let update = ProgressUpdate {
                    status: Some(ItemStatus::Updating),
                    value: Some(n),
                    max: Some(10),
                    ..ProgressUpdate::default()
                };
                match cb.progress(item, &update) {
                    Ok(ProgressReply::Continue) => {}
                    Ok(ProgressReply::CancelItem) => {
                        let _ = cb.progress(item, &stopped());
                        continue 'items;
                    }
                    Ok(ProgressReply::CancelAll) | Err(_) => break 'items,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let done = ProgressUpdate {
                status: Some(ItemStatus::Succeeded),
                ..ProgressUpdate::default()
            };
            let _ = cb.progress(item, &done);
        }
        Ok(())
    }
}

fn stopped() -> ProgressUpdate<'static> {
    ProgressUpdate {
        status: Some(ItemStatus::Stopped),
        text: Some("stopped by the user"),
        ..ProgressUpdate::default()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let job = HandlerJob {
        name: "mail".into(),
        handler: Box::new(Mail {
            prepared: Vec::new(),
        }),
        selection: Selection::Checked(HashMap::new()),
        timeout: Duration::from_secs(30),
    };
    let config = SessionConfig::new("example", SyncEvent::Manual);
    let journal = Arc::new(MemoryJournal::default());
    let (session, control, mut events) = Session::new(config, journal, vec![job]);
    let running = tokio::spawn(session.run());
    while let Some(event) = events.recv().await {
        if let SessionEvent::ItemChanged(item) = &event
            && item.item == "archive"
            && item.value == Some(5)
        {
            control.cancel(&CancelTarget::Item {
                handler: "mail".into(),
                item: "archive".into(),
            });
        }
        let last = matches!(event, SessionEvent::Finished(_));
        if let SessionEvent::Finished(summary) = &event {
            for r in &summary.items {
                eprintln!("{}/{}: {}", r.handler, r.item, r.status);
            }
        }
        if last {
            break;
        }
    }
    let summary = running.await.expect("the session task");
    eprintln!("outcome: {}", summary.outcome);
}
