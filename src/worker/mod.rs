//! The attestation worker: claim a job with a lease, run it, then complete it, retry it with
//! backoff, or mark it dead. Sign jobs turn the stored statement into a DSSE envelope once;
//! push jobs publish those exact envelope bytes to one artifact's registry. A push failure's
//! `last_error` starts with the registry error code (`registry_unauthorized: ...`).
//!
//! A panic inside a job is caught and counts as a failed attempt. On shutdown no new job is
//! claimed; in-flight jobs get the grace period, then their leases are released.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use rand::RngExt as _;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::domain::dsse::IN_TOTO_PAYLOAD_TYPE;
use crate::domain::provenance::SLSA_PROVENANCE_V1;
use crate::domain::{ImageRef, KeyId};
use crate::registry::{ErrorCode, PushRequest, RegistryError};
use crate::signing::{SignError, sign_envelope};
use crate::store::{Job, JobKind, PushRecord, StoreError};

/// How long a tag lock is held at most (a crashed holder frees it after this).
const TAG_LOCK_TTL: Duration = Duration::from_secs(120);
/// How long a push job waits for another writer of the same tag before retrying later.
const TAG_LOCK_WAIT: Duration = Duration::from_secs(60);

/// Why a job attempt failed.
#[derive(Debug)]
struct Failure {
    message: String,
    /// Retrying cannot help (e.g. the image does not exist, the key cannot sign).
    permanent: bool,
}

impl Failure {
    fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: false,
        }
    }

    fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: true,
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::retryable(format!("store: {e}"))
    }
}

/// A unique name for this worker process in job leases and locks.
pub fn worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "attestd".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Run `concurrency` job loops until `app.shutdown` is cancelled, then wait up to the grace
/// period for in-flight jobs before releasing their leases.
pub async fn run(app: Arc<App>) {
    let id = worker_id();
    let hard_stop = CancellationToken::new();
    let mut loops = tokio::task::JoinSet::new();
    for n in 0..app.settings.worker.concurrency {
        loops.spawn(job_loop(
            app.clone(),
            format!("{id}/{n}"),
            hard_stop.clone(),
        ));
    }
    tracing::info!(worker.id = %id, concurrency = app.settings.worker.concurrency, "worker started");
    app.shutdown.cancelled().await;
    let grace = crate::app::grace(&app.settings);
    if tokio::time::timeout(grace, async { while loops.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!("grace period over; releasing in-flight jobs");
        hard_stop.cancel();
        while loops.join_next().await.is_some() {}
    }
    tracing::info!(worker.id = %id, "worker stopped");
}

async fn job_loop(app: Arc<App>, owner: String, hard_stop: CancellationToken) {
    let poll = Duration::from_millis(app.settings.worker.poll_interval_ms);
    while !app.shutdown.is_cancelled() {
        // Register interest before claiming, so a notify between the claim and the wait is kept.
        let notified = app.jobs_queued.notified();
        match run_one(&app, &owner, Some(&hard_stop)).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "claiming a job failed"),
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(poll) => {}
            _ = app.shutdown.cancelled() => {}
        }
    }
}

/// Claim and run jobs until none is due. Returns how many ran. Tests use this to drive the
/// worker deterministically instead of sleeping.
pub async fn run_pending_jobs(app: &App) -> Result<usize, StoreError> {
    let owner = worker_id();
    let mut ran = 0;
    while run_one(app, &owner, None).await? {
        ran += 1;
    }
    Ok(ran)
}

/// Claim one job and run it to an outcome. `Ok(false)` when nothing was due.
async fn run_one(
    app: &App,
    owner: &str,
    hard_stop: Option<&CancellationToken>,
) -> Result<bool, StoreError> {
    let lease = Duration::from_secs(app.settings.worker.lease_secs);
    let Some(job) = app.store.claim_job(owner, lease).await? else {
        return Ok(false);
    };
    let span = tracing::info_span!("job", job.id = job.id, job.kind = job.kind.as_str(), execution.id = %job.execution_id, job.attempt = job.attempts);
    let attempt = AssertUnwindSafe(execute(app, &job, owner)).catch_unwind();
    let outcome = match hard_stop {
        Some(stop) => tokio::select! {
            r = attempt => Some(r),
            _ = stop.cancelled() => None,
        },
        None => Some(attempt.await),
    };
    let result = match outcome {
        None => {
            app.store.release_job(&job).await?;
            tracing::info!(parent: &span, "job released at shutdown");
            return Ok(true);
        }
        Some(Ok(r)) => r,
        Some(Err(panic)) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Failure::retryable(format!(
                "internal error (panic: {what})"
            )))
        }
    };
    match result {
        Ok(()) => tracing::info!(parent: &span, "job done"),
        Err(f) => {
            let max = app.settings.worker.max_attempts as i32;
            let retry_at = (!f.permanent && job.attempts < max)
                .then(|| OffsetDateTime::now_utc() + backoff(app, job.attempts));
            match retry_at {
                Some(at) => {
                    tracing::warn!(parent: &span, error = %f.message, retry_at = %at, "job failed; will retry")
                }
                None => {
                    tracing::error!(parent: &span, error = %f.message, permanent = f.permanent, "job failed for good")
                }
            }
            match app.store.fail_job(&job, &f.message, retry_at).await {
                Ok(()) | Err(StoreError::LeaseLost(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(true)
}

/// Exponential backoff with jitter: half the capped exponential delay, plus up to the other half.
fn backoff(app: &App, attempts: i32) -> Duration {
    let base = app.settings.worker.backoff_base_ms.max(1);
    let cap = app
        .settings
        .worker
        .backoff_max_secs
        .saturating_mul(1000)
        .max(base);
    let exp = base
        .saturating_mul(1u64 << (attempts.clamp(1, 32) - 1) as u32)
        .min(cap);
    let jitter = rand::rng().random_range(0..=exp / 2);
    Duration::from_millis(exp / 2 + jitter)
}

async fn execute(app: &App, job: &Job, owner: &str) -> Result<(), Failure> {
    match job.kind {
        JobKind::Sign => sign(app, job).await,
        JobKind::Push => push(app, job, owner).await,
    }
}

async fn sign(app: &App, job: &Job) -> Result<(), Failure> {
    let execution = app
        .store
        .execution(job.execution_id)
        .await?
        .ok_or_else(|| Failure::permanent("execution vanished"))?;
    let statement = app
        .store
        .statement(job.execution_id)
        .await?
        .ok_or_else(|| Failure::permanent("execution has no statement to sign"))?;
    let signer = app
        .keyring
        .signer_for(&execution.account)
        .await
        .map_err(sign_failure)?;
    let envelope = sign_envelope(signer.as_ref(), IN_TOTO_PAYLOAD_TYPE, &statement)
        .await
        .map_err(sign_failure)?;
    let key_id: &KeyId = signer.key_id();
    match app
        .store
        .complete_sign(job, &envelope, key_id.as_str())
        .await
    {
        Ok(_) => {
            app.notify_worker();
            Ok(())
        }
        // Another worker took the job over; its envelope (or the first stored) wins.
        Err(StoreError::LeaseLost(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn sign_failure(e: SignError) -> Failure {
    match e {
        SignError::Unavailable(m) => Failure::retryable(format!("signing key unavailable: {m}")),
        SignError::Failed(m) => Failure::permanent(format!("signing failed: {m}")),
    }
}

async fn push(app: &App, job: &Job, owner: &str) -> Result<(), Failure> {
    let execution = app
        .store
        .execution(job.execution_id)
        .await?
        .ok_or_else(|| Failure::permanent("execution vanished"))?;
    let artifact = job
        .artifact_position
        .and_then(|p| execution.artifacts.iter().find(|a| a.position == p))
        .ok_or_else(|| Failure::permanent("artifact vanished"))?;
    let envelope = app
        .store
        .envelope(job.execution_id)
        .await?
        .ok_or_else(|| Failure::permanent("no stored envelope to push"))?;
    let image = ImageRef {
        registry: artifact.registry.clone(),
        repository: artifact.repository.clone(),
        tag: artifact.tag.clone(),
    };
    let key_id = execution.key_id.clone().unwrap_or_default();
    let lock = format!(
        "att:{}/{}@{}",
        image.registry, image.repository, artifact.digest
    );
    acquire(app, &lock, owner).await?;
    let pushed = app
        .registries
        .push(&PushRequest {
            image: &image,
            digest: &artifact.digest,
            envelope: &envelope,
            predicate_type: SLSA_PROVENANCE_V1,
            key_id: &key_id,
        })
        .await;
    if let Err(e) = app.store.unlock(&lock, owner).await {
        tracing::warn!(error = %e, lock = %lock, "unlock failed; the lock expires on its own");
    }
    let outcome = pushed
        .map_err(|e| push_failure(&e, job.attempts, app.settings.worker.missing_image_retries))?;
    tracing::info!(subject.digest = %artifact.digest, reference = %outcome.reference, already_present = outcome.already_present, "attestation pushed");
    let record = PushRecord {
        reference: outcome.reference,
        manifest_digest: outcome.manifest_digest,
    };
    match app.store.complete_push(job, &record).await {
        Ok(()) | Err(StoreError::LeaseLost(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// How a failed push attempt (1-based `attempt`) counts. A missing image is retried
/// `missing_image_retries` times before it is permanent: a registry replica may not have it yet.
fn push_failure(e: &RegistryError, attempt: i32, missing_image_retries: u32) -> Failure {
    let message = format!("{}: {}", e.code().as_str(), e.message());
    if e.code() == ErrorCode::ImageNotFound
        && i64::from(attempt) <= i64::from(missing_image_retries)
    {
        Failure::retryable(format!(
            "{message} (attempt {attempt}; retried up to {missing_image_retries} times in case the registry is still replicating it)"
        ))
    } else if e.is_retryable() {
        Failure::retryable(message)
    } else {
        Failure::permanent(message)
    }
}

/// Wait for the tag lock, polling with jitter, up to [`TAG_LOCK_WAIT`].
async fn acquire(app: &App, lock: &str, owner: &str) -> Result<(), Failure> {
    let deadline = tokio::time::Instant::now() + TAG_LOCK_WAIT;
    loop {
        if app.store.try_lock(lock, owner, TAG_LOCK_TTL).await? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::retryable(format!(
                "another worker is still writing {lock}"
            )));
        }
        let pause = rand::rng().random_range(10..60);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_image_is_retried_the_configured_number_of_times_then_permanent() {
        let missing = RegistryError::permanent(ErrorCode::ImageNotFound, "image gone");
        let outcomes: Vec<bool> = (1..=4)
            .map(|attempt| push_failure(&missing, attempt, 3).permanent)
            .collect();
        assert_eq!(outcomes, [false, false, false, true]);
        assert!(push_failure(&missing, 1, 0).permanent);
        let last = push_failure(&missing, 4, 3);
        assert_eq!(last.message, "image_not_found: image gone");
    }

    #[test]
    fn registry_failures_keep_their_class_and_lead_with_their_code() {
        let refused = RegistryError::retryable(ErrorCode::Unauthorized, "refused");
        let f = push_failure(&refused, 7, 3);
        assert!(!f.permanent);
        assert_eq!(f.message, "registry_unauthorized: refused");
        let full = RegistryError::permanent(ErrorCode::TooManyLayers, "full");
        assert!(push_failure(&full, 1, 3).permanent);
    }
}
