//! The broker's audit trail: secret-free records written to the store's `activity` table by a
//! background task behind a bounded queue. Recording never blocks and never fails the caller: when
//! the queue is full (or the writer is gone) the record is dropped and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tessera_store::{ActivityRecord, Store};
use tokio::sync::mpsc;

pub use tessera_store::{ActivityAction, ActivityMethod, ActivityOutcome};

/// Records queued by default before new ones are dropped.
pub const DEFAULT_AUDIT_QUEUE: usize = 16_384;
/// Most records the writer takes from the queue for one transaction.
const WRITE_BATCH: usize = 1024;
/// How long the writer waits for more per-call records before writing a partial batch: the
/// most a tool call's record waits before it is visible in the activity log.
const WRITE_LINGER: std::time::Duration = std::time::Duration::from_millis(50);

/// Queues audit records for a background writer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Auditor {
    tx: mpsc::Sender<ActivityRecord>,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    dropped: AtomicU64,
    write_failures: AtomicU64,
}

/// Whether a record is a rare credential event rather than a per-call record (`tool_call`, a
/// successful `inject`).
fn is_event(record: &ActivityRecord) -> bool {
    !matches!(
        (record.action, record.outcome),
        (ActivityAction::ToolCall, _) | (ActivityAction::Inject, ActivityOutcome::Success)
    )
}

impl Auditor {
    /// Starts the writer task (on the current Tokio runtime) with a queue of `capacity` records.
    /// The task ends when every `Auditor` clone is dropped and the queue is drained.
    pub fn spawn(store: Store, capacity: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<ActivityRecord>(capacity.max(1));
        let counters = Arc::new(Counters::default());
        let writer = counters.clone();
        tokio::spawn(async move {
            // Everything queued is written in one transaction: under load a commit per record
            // cost ~20 µs of CPU per proxied call and the queue overflowed.
            let mut batch = Vec::with_capacity(WRITE_BATCH);
            while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
                // Linger briefly so that a busy gateway writes few, full batches (each partial
                // batch is a new statement to prepare and a commit).
                let linger = tokio::time::sleep(WRITE_LINGER);
                tokio::pin!(linger);
                // Only the high-volume per-call records wait: a credential event (connect,
                // disconnect, denial, acquisition...) is written at once, with everything queued
                // before it, so whoever saw it happen can read it back.
                while batch.len() < WRITE_BATCH && !batch.iter().any(is_event) {
                    let room = WRITE_BATCH - batch.len();
                    tokio::select! {
                        _ = &mut linger => break,
                        n = rx.recv_many(&mut batch, room) => if n == 0 { break },
                    }
                }
                if store.record_activities(&batch).await.is_err() {
                    writer
                        .write_failures
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    tracing::warn!(records = batch.len(), "audit records could not be written");
                }
                batch.clear();
            }
        });
        Self { tx, counters }
    }

    /// Queues a record without waiting; a full or closed queue drops it (counted).
    pub fn record(&self, record: ActivityRecord) {
        if self.tx.try_send(record).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records dropped because the queue was full or the writer had stopped.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Records the writer could not store.
    pub fn write_failures(&self) -> u64 {
        self.counters.write_failures.load(Ordering::Relaxed)
    }
}
