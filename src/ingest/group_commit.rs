//! Group commit at ingest: webhooks handled at the same time are recorded by one
//! [`Store::record_builds`](crate::store::Store::record_builds) call per small batch, and each is
//! answered with its own outcome only after that batch returned, so nothing is acknowledged
//! before the commit that made it durable and one item's failure never becomes another's.
//!
//! One task drains a bounded queue: it waits for a free batch slot (`ingest.batch_concurrency`),
//! then takes what is queued, up to `ingest.batch_max_rows`. An idle server commits a lone
//! webhook at once; under load the next batch fills while earlier ones commit. A full queue sheds
//! (`503 overloaded`). A webhook that no batch took within `database.acquire_timeout_ms` gets
//! `503 store_unavailable` and is never written, as when it waited that long for a connection of
//! its own; one a batch took is answered with that batch's outcome, whatever it is, so a build is
//! never written after its client was told it was not.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{DatabaseSettings, IngestSettings};
use crate::store::{DynStore, NewExecution, Recorded, StoreError};

/// Why a build was not recorded (or may not have been): the store's own answer, or the queue's.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The store answered for this item: a conflict, the database unavailable, or a failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `ingest.queue_rows` webhooks are already waiting; nothing was recorded.
    #[error("too many webhooks are waiting to be recorded")]
    QueueFull,
    /// The server is shutting down and takes no more webhooks; nothing was recorded.
    #[error("attestd is shutting down")]
    ShuttingDown,
    /// No batch took the build within the acquire timeout (every batch slot was busy); it will
    /// not be written.
    #[error("no batch took the build within {0:?}")]
    TimedOut(Duration),
    /// The batch recording this build ended without answering (a panic in the store).
    #[error("the batch recording this build ended without an answer")]
    Lost,
}

struct Queued {
    new: NewExecution,
    answer: oneshot::Sender<Result<Recorded, StoreError>>,
    /// Set by whichever comes first: a batch taking the item, or its handler giving up on it.
    claimed: Arc<AtomicBool>,
    queued_at: Instant,
}

/// When the last batch found the database unavailable: items queued before then are answered
/// `503` at once instead of being batched again, so that during an outage no webhook waits for
/// two acquire timeouts (one for the batch ahead of it, one for its own).
type LastUnavailable = Arc<Mutex<Option<Instant>>>;

/// The queue the webhook handlers record through, and the task that drains it.
pub struct GroupCommit {
    queue: mpsc::Sender<Queued>,
    answer_within: Duration,
    closing: CancellationToken,
    drained: Mutex<Option<JoinHandle<()>>>,
}

/// How batches are formed.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_rows: usize,
    max_wait: Duration,
    concurrency: usize,
}

impl GroupCommit {
    /// Start draining into `store` (needs a Tokio runtime).
    pub fn start(store: DynStore, ingest: &IngestSettings, database: &DatabaseSettings) -> Self {
        let limits = Limits {
            max_rows: ingest.batch_max_rows.max(1),
            max_wait: ingest.batch_max_wait(),
            concurrency: ingest.batch_concurrency.max(1),
        };
        let (queue, rx) = mpsc::channel(ingest.queue_rows.max(limits.max_rows));
        let closing = CancellationToken::new();
        let task = tokio::spawn(drain(rx, store, limits, closing.clone()));
        Self {
            queue,
            answer_within: database.acquire_timeout(),
            closing,
            drained: Mutex::new(Some(task)),
        }
    }

    /// Record `new` with the next batch; returns once that batch has committed (or failed).
    pub async fn record(&self, new: NewExecution) -> Result<Recorded, RecordError> {
        let (answer, mut outcome) = oneshot::channel();
        let claimed = Arc::new(AtomicBool::new(false));
        self.queue
            .try_send(Queued {
                new,
                answer,
                claimed: claimed.clone(),
                queued_at: Instant::now(),
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => RecordError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => RecordError::ShuttingDown,
            })?;
        let answered = match tokio::time::timeout(self.answer_within, &mut outcome).await {
            Ok(answered) => answered,
            // Still queued: give it up, and no batch will take it.
            Err(_) if !claimed.swap(true, Ordering::AcqRel) => {
                return Err(RecordError::TimedOut(self.answer_within));
            }
            // A batch has it and may commit it: its outcome is the answer (the store's own
            // acquire timeout bounds the wait for a connection).
            Err(_) => outcome.await,
        };
        match answered {
            Ok(outcome) => outcome.map_err(RecordError::Store),
            Err(_) => Err(RecordError::Lost),
        }
    }

    /// Take no more webhooks, record those queued, and return once every batch has returned.
    /// Call it after the HTTP server stopped; later calls return at once.
    pub async fn close(&self) {
        self.closing.cancel();
        let task = self.drained.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "the ingest queue's drain task failed");
        }
    }
}

async fn drain(
    mut rx: mpsc::Receiver<Queued>,
    store: DynStore,
    limits: Limits,
    closing: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.concurrency));
    let unavailable: LastUnavailable = Arc::default();
    let mut closed = false;
    loop {
        // A free slot first, so that under load the batch fills while the others commit.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let first = loop {
            tokio::select! {
                item = rx.recv() => break item,
                () = closing.cancelled(), if !closed => {
                    // Refuse new items; those already queued are still received, then `None`.
                    rx.close();
                    closed = true;
                }
            }
        };
        let Some(first) = first else { break };
        let unavailable_since = unavailable.lock().ok().and_then(|t| *t);
        let take = |batch: &mut Vec<Queued>, item| take(batch, item, unavailable_since);
        let mut batch = Vec::with_capacity(limits.max_rows);
        take(&mut batch, first);
        while batch.len() < limits.max_rows {
            match rx.try_recv() {
                Ok(item) => take(&mut batch, item),
                Err(_) => break,
            }
        }
        let others_committing = slots.available_permits() + 1 < limits.concurrency;
        if !limits.max_wait.is_zero() && others_committing && batch.len() < limits.max_rows {
            let until = tokio::time::Instant::now() + limits.max_wait;
            while batch.len() < limits.max_rows {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(item)) => take(&mut batch, item),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        if !batch.is_empty() {
            tokio::spawn(commit(store.clone(), batch, slot, unavailable.clone()));
        }
    }
    // Every batch still committing holds a slot; wait for them to answer.
    let _all = slots.acquire_many(limits.concurrency as u32).await;
}

/// Add `item` to the batch unless nobody waits for it any more (the client went away, or its
/// handler gave up on it): it was never acknowledged, so it is not recorded either. An item
/// queued while the database was found unavailable is answered so at once, unrecorded.
fn take(batch: &mut Vec<Queued>, item: Queued, unavailable_since: Option<Instant>) {
    if item.claimed.swap(true, Ordering::AcqRel) || item.answer.is_closed() {
        return;
    }
    match unavailable_since {
        Some(t) if item.queued_at < t => {
            let _ = item.answer.send(Err(StoreError::Unavailable(
                "the database was unavailable to the batch ahead of this build".into(),
            )));
        }
        _ => batch.push(item),
    }
}

async fn commit(
    store: DynStore,
    batch: Vec<Queued>,
    _slot: OwnedSemaphorePermit,
    unavailable: LastUnavailable,
) {
    let started = Instant::now();
    let rows = batch.len();
    let (news, answers): (Vec<_>, Vec<_>) = batch.into_iter().map(|q| (q.new, q.answer)).unzip();
    let outcomes = store.record_builds(news).await;
    crate::metrics::ingest_batch(rows, started.elapsed());
    let down = outcomes
        .iter()
        .any(|o| o.as_ref().is_err_and(StoreError::is_unavailable));
    if let Ok(mut since) = unavailable.lock() {
        // Set before the slot is released (at the end of this function), so the next batch
        // sees it; cleared by the first batch that reached the database.
        *since = down.then(Instant::now);
    }
    if outcomes.len() != rows {
        tracing::error!(
            batch.rows = rows,
            batch.outcomes = outcomes.len(),
            "the store answered a batch with the wrong number of outcomes"
        );
    }
    let mut outcomes = outcomes.into_iter();
    for answer in answers {
        let outcome = outcomes.next().unwrap_or_else(|| {
            Err(StoreError::Corrupt(
                "the store returned no outcome for this build".into(),
            ))
        });
        // The requester may be gone; what was committed stays committed.
        let _ = answer.send(outcome);
    }
}
