//! The in-process hot path: what one [`HandlerCallback::progress`] costs the
//! manager, against the least any progress table could cost (a bare
//! `Mutex<HashMap<String, Entry>>` update plus an `AtomicBool` cancel check).
//!
//! The callback is a real one: a [`Session`] runs on a background
//! current-thread tokio runtime with an in-process handler whose
//! `synchronize` hands its callback to this thread and waits until told to
//! finish. A consumer task keeps draining the session's events (as the
//! command line does), so the pump coalesces and flushes every 25 ms exactly
//! as in real use.
//!
//! Two workloads, each against the baseline doing the same updates:
//! - `value`: every call sets the value only (the common case);
//! - `mixed`: every call sets the value, every 8th also the status and max.
//!
//! Criterion prints its own estimates; at the end a table gives the median
//! cost per call of each pair, measured in this run, and the ratio.
//!
//! `cargo bench -p syncmgr-core --bench progress`

use std::cell::RefCell;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::Criterion;
use syncmgr_core::{
    Handler, HandlerCallback, HandlerError, HandlerFlags, HandlerInfo, HandlerJob,
    InitializeParams, Item, ItemEnumeration, ItemFlags, ItemStatus, MemoryJournal, Participation,
    ProgressReply, ProgressUpdate, Selection, Session, SessionConfig, SessionEvent, SyncEvent,
};
use tokio::sync::oneshot;

/// Items of the handler; calls rotate over them.
const ITEMS: usize = 8;
/// Every this many calls also carries a status and a maximum (`mixed`).
const MIXED_EVERY: u64 = 8;
/// The maximum reported, above every value sent.
const MAX: u64 = 1 << 40;
/// Criterion samples per benchmark (the summary uses the same samples).
const SAMPLES: usize = 60;

fn item_ids() -> Vec<String> {
    (0..ITEMS).map(|i| format!("item-{i:04}")).collect()
}

// ---------------------------------------------------------------------------
// The in-process handler that lends its callback to the bench thread.

struct Lender {
    items: Vec<String>,
    lend: mpsc::Sender<HandlerCallback>,
    finish: Option<oneshot::Receiver<()>>,
}

#[async_trait]
impl Handler for Lender {
    async fn initialize(&mut self, _: &InitializeParams) -> Result<Participation, HandlerError> {
        Ok(Participation::Participate)
    }

    async fn handler_info(&mut self) -> Result<HandlerInfo, HandlerError> {
        Ok(HandlerInfo {
            name: "bench".into(),
            flags: HandlerFlags::default(),
        })
    }

    async fn enum_items(&mut self) -> Result<ItemEnumeration, HandlerError> {
        Ok(ItemEnumeration {
            items: self
                .items
                .iter()
                .map(|id| Item {
                    id: id.clone(),
                    name: format!("Item {id}"),
                    checked: true,
                    flags: ItemFlags::default(),
                    last_update: None,
                })
                .collect(),
            complete: true,
        })
    }

    async fn prepare_for_sync(
        &mut self,
        _: &[String],
        _: &HandlerCallback,
    ) -> Result<(), HandlerError> {
        Ok(())
    }

    async fn synchronize(&mut self, cb: &HandlerCallback) -> Result<(), HandlerError> {
        let _ = self.lend.send(cb.clone());
        if let Some(finish) = self.finish.take() {
            let _ = finish.await;
        }
        Ok(())
    }
}

/// A running session whose handler is in `synchronize`.
struct Running {
    callback: HandlerCallback,
    finish: oneshot::Sender<()>,
    thread: thread::JoinHandle<usize>,
}

fn start_session(items: &[String]) -> Running {
    let (lend, lent) = mpsc::channel();
    let (finish, finish_rx) = oneshot::channel();
    let handler = Lender {
        items: items.to_vec(),
        lend,
        finish: Some(finish_rx),
    };
    let thread = thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("tokio runtime");
        rt.block_on(async move {
            let job = HandlerJob {
                name: "bench".into(),
                handler: Box::new(handler),
                selection: Selection::Checked(HashMap::new()),
                // Longer than the whole run: the silence guard must never fire
                // while the bench thread measures the baseline.
                timeout: Duration::from_secs(3600),
            };
            let config = SessionConfig::new("bench-session", SyncEvent::Manual);
            let (session, _control, mut events) =
                Session::new(config, Arc::new(MemoryJournal::default()), vec![job]);
            // The consumer: drain every event, as the command line does.
            let consumer = tokio::spawn(async move {
                let mut seen = 0usize;
                while let Some(event) = events.recv().await {
                    seen += 1;
                    if matches!(event, SessionEvent::Finished(_)) {
                        break;
                    }
                }
                seen
            });
            session.run().await;
            consumer.await.unwrap_or(0)
        })
    });
    let callback = lent
        .recv_timeout(Duration::from_secs(10))
        .expect("the handler reaches synchronize");
    Running {
        callback,
        finish,
        thread,
    }
}

// ---------------------------------------------------------------------------
// The baseline.

#[derive(Debug, Default)]
struct Entry {
    status: Option<ItemStatus>,
    value: Option<u64>,
    max: Option<u64>,
}

#[derive(Debug, Default)]
struct Baseline {
    entries: Mutex<HashMap<String, Entry>>,
    cancel: AtomicBool,
}

impl Baseline {
    #[inline(never)]
    fn update(&self, item: &str, update: &ProgressUpdate<'_>) -> bool {
        {
            let mut entries = self.entries.lock().unwrap();
            if let Some(entry) = entries.get_mut(item) {
                if let Some(status) = update.status {
                    entry.status = Some(status);
                }
                if let Some(value) = update.value {
                    entry.value = Some(value);
                }
                if let Some(max) = update.max {
                    entry.max = Some(max);
                }
            }
        }
        self.cancel.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------
// The workloads.

/// The update of call number `n`.
fn update(n: u64, mixed: bool) -> ProgressUpdate<'static> {
    let full = mixed && n.is_multiple_of(MIXED_EVERY);
    ProgressUpdate {
        text: None,
        status: full.then_some(ItemStatus::Updating),
        value: Some(n % MAX),
        max: full.then_some(MAX),
    }
}

/// (iterations, elapsed) of every call of one benchmark's routine; the last
/// [`SAMPLES`] are criterion's measurement samples (warm-up comes first).
type Samples = RefCell<Vec<(u64, Duration)>>;

fn median_ns(samples: &Samples) -> Option<f64> {
    let samples = samples.borrow();
    if samples.len() < SAMPLES {
        return None;
    }
    let mut per_call: Vec<f64> = samples[samples.len() - SAMPLES..]
        .iter()
        .map(|(iters, elapsed)| elapsed.as_secs_f64() * 1e9 / *iters as f64)
        .collect();
    per_call.sort_by(f64::total_cmp);
    Some(per_call[per_call.len() / 2])
}

#[allow(clippy::print_stdout)]
fn main() {
    let items = item_ids();
    let running = start_session(&items);
    let cb = running.callback.clone();
    let baseline = Baseline::default();
    for id in &items {
        baseline
            .entries
            .lock()
            .unwrap()
            .insert(id.clone(), Entry::default());
    }

    // The updates must be accepted, or the bench would measure the refusal
    // path (which logs).
    let first = ProgressUpdate {
        text: Some("benchmarking"),
        status: Some(ItemStatus::Updating),
        value: Some(0),
        max: Some(MAX),
    };
    for id in &items {
        assert_eq!(
            cb.progress(id, &first),
            Ok(ProgressReply::Continue),
            "the session accepts progress"
        );
    }

    let mut criterion = Criterion::default()
        .without_plots()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(SAMPLES)
        .configure_from_args();

    let workloads = [("value", false), ("mixed", true)];
    let mut results: Vec<(&str, Samples, Samples)> = Vec::new();
    {
        let mut group = criterion.benchmark_group("progress");
        for (name, mixed) in workloads {
            let manager: Samples = RefCell::default();
            let bare: Samples = RefCell::default();
            group.bench_function(format!("manager/{name}"), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for n in 0..iters {
                        let update = update(n, mixed);
                        let item = &items[n as usize % ITEMS];
                        black_box(cb.progress(black_box(item), black_box(&update)).ok());
                    }
                    let elapsed = start.elapsed();
                    manager.borrow_mut().push((iters, elapsed));
                    elapsed
                });
            });
            group.bench_function(format!("baseline/{name}"), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for n in 0..iters {
                        let update = update(n, mixed);
                        let item = &items[n as usize % ITEMS];
                        black_box(baseline.update(black_box(item), black_box(&update)));
                    }
                    let elapsed = start.elapsed();
                    bare.borrow_mut().push((iters, elapsed));
                    elapsed
                });
            });
            results.push((name, manager, bare));
        }
        group.finish();
    }
    criterion.final_summary();

    // Every measured call must have been accepted.
    assert_eq!(
        cb.progress(&items[0], &update(1, false)),
        Ok(ProgressReply::Continue),
        "the session still accepts progress after the run"
    );

    println!();
    println!(
        "in-process progress: median cost per call, same run (target: manager <= 2x baseline)"
    );
    println!(
        "{:<10} {:>14} {:>14} {:>8}  verdict",
        "workload", "manager ns", "baseline ns", "ratio"
    );
    for (name, manager, bare) in &results {
        match (median_ns(manager), median_ns(bare)) {
            (Some(m), Some(b)) => {
                let ratio = m / b;
                let verdict = if ratio <= 2.0 { "met" } else { "NOT met" };
                println!("{name:<10} {m:>14.1} {b:>14.1} {ratio:>8.2}  {verdict}");
            }
            _ => println!("{name:<10} (not measured in this run: filtered out or profiling)"),
        }
    }

    // Let the handler finish its items and the session end.
    let done = ProgressUpdate {
        text: Some("done"),
        status: Some(ItemStatus::Succeeded),
        value: None,
        max: None,
    };
    for id in &items {
        let _ = cb.progress(id, &done);
    }
    drop(cb);
    let Running {
        callback,
        finish,
        thread,
    } = running;
    drop(callback);
    let _ = finish.send(());
    let events = thread.join().expect("the session thread");
    assert!(events > 0, "the consumer saw the session's events");
}
