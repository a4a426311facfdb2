//! The attestation worker: claim a job with a lease, run it, then complete it, retry it with
//! backoff, or mark it dead. Resolve jobs find the digests of images named by templates (a HEAD
//! of each tag) and write the statement with them; sign jobs turn the stored statement into a
//! DSSE envelope once; push jobs publish those exact envelope bytes to one artifact's registry. A
//! registry failure's `last_error` starts with its error code (`registry_unauthorized: ...`).
//!
//! A running job's lease is renewed every third of `worker.lease_secs`; the moment a renewal
//! fails the job is given up. A push holds its tag's lock the same way, re-checks the lock's
//! fencing token in the database right before the manifest write, and ends within
//! `worker.push_deadline_secs`. A panic inside a job is caught and counts as a failed attempt. On
//! shutdown no new job is claimed; in-flight jobs get the grace period, then their leases are
//! released without counting. The worker also prunes done jobs and old locks.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use rand::RngExt as _;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::domain::dsse::IN_TOTO_PAYLOAD_TYPE;
use crate::domain::provenance::{self, SLSA_PROVENANCE_V1, Statement};
use crate::domain::{Artifact, Digest, ImageRef, KeyId};
use crate::registry::{ErrorCode, PushRequest, RegistryError, WriteFence};
use crate::signing::{SignError, sign_envelope};
use crate::store::{
    ArtifactRecord, Claimed, DynStore, Execution, HandOff, Job, JobKind, Leasing, Lock, Pruned,
    PushRecord, PushState, Store, StoreError,
};

/// How long a push job waits for another writer of the same tag before retrying later.
const TAG_LOCK_WAIT: Duration = Duration::from_secs(60);
/// Rows one pruning statement deletes at most.
const PRUNE_BATCH: u32 = 500;
/// Pruning statements per run at most; a backlog is worked off over several runs.
const PRUNE_BATCHES_PER_RUN: usize = 20;

/// Faults tests inject into the worker, to show that a job that panics is counted and released.
/// Nothing in configuration or the environment sets them: only code holding the [`App`] can,
/// and attestd itself never does.
#[derive(Debug, Default)]
pub struct Faults {
    panics_in_push: AtomicU32,
}

impl Faults {
    /// Make the next `n` pushes panic once they hold their tag lock, before any registry call.
    #[doc(hidden)]
    pub fn panic_in_next_pushes(&self, n: u32) {
        self.panics_in_push.store(n, Ordering::SeqCst);
    }

    fn in_push(&self) {
        if self
            .panics_in_push
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            panic!("injected fault: panic in push");
        }
    }
}

/// Why a job attempt failed.
#[derive(Debug)]
struct Failure {
    message: String,
    /// Retrying cannot help (e.g. the image does not exist, the key cannot sign).
    permanent: bool,
    /// A stable class for metrics (`store`, `panic`, a registry error code, ...).
    reason: &'static str,
}

impl Failure {
    fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: false,
            reason: "other",
        }
    }

    fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: true,
            reason: "other",
        }
    }

    fn because(mut self, reason: &'static str) -> Self {
        self.reason = reason;
        self
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::retryable(format!("store: {e}")).because("store")
    }
}

/// A unique name for this worker process in job leases, locks and the records of what it did:
/// `worker.name` (else the host name), the process id and a random suffix.
pub fn worker_id(name: &str) -> String {
    let name = if name.is_empty() {
        std::env::var("HOSTNAME").unwrap_or_else(|_| "attestd".into())
    } else {
        name.to_owned()
    };
    format!(
        "{name}-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Run `concurrency` job loops until `app.shutdown` is cancelled, then wait up to the grace
/// period for in-flight jobs before releasing their leases.
pub async fn run(app: Arc<App>) {
    let id = worker_id(&app.settings.worker.name);
    let hard_stop = CancellationToken::new();
    let mut loops = tokio::task::JoinSet::new();
    for n in 0..app.settings.worker.concurrency {
        loops.spawn(job_loop(
            app.clone(),
            format!("{id}/{n}"),
            hard_stop.clone(),
        ));
    }
    loops.spawn(prune_loop(app.clone()));
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
    let mut session = Session::default();
    while !app.shutdown.is_cancelled() {
        // Register interest before claiming, so a notify between the claim and the wait is kept.
        let notified = app.jobs_queued.notified();
        match run_one(&app, session.store(&app), &owner, Some(&hard_stop)).await {
            Ok(0) => {}
            Ok(_) => continue,
            Err(e) => tracing::error!(error = %e, "claiming a job failed"),
        }
        // Nothing to do: the connection goes back to the pool while this loop waits.
        session.end();
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
    let owner = worker_id(&app.settings.worker.name);
    let mut session = Session::default();
    let mut ran = 0;
    loop {
        match run_one(app, session.store(app), &owner, None).await? {
            0 => return Ok(ran),
            n => ran += n,
        }
    }
}

/// The store a job loop runs its jobs through: while it keeps finding work, one session
/// ([`Store::session`]), so on PostgreSQL one connection serves job after job and sqlx's ping on
/// giving a connection back is paid once per [`SESSION_RENEWAL`] instead of once per job. It is
/// ended whenever the loop finds nothing to do, and renewed after that long so the pool's
/// connection lifetime still applies to a loop that never idles.
#[derive(Default)]
struct Session {
    current: Option<(DynStore, Instant)>,
}

/// How long a busy job loop keeps one session.
const SESSION_RENEWAL: Duration = Duration::from_secs(60);

impl Session {
    fn store<'a>(&'a mut self, app: &'a App) -> &'a dyn Store {
        if self
            .current
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() >= SESSION_RENEWAL)
        {
            self.current = None;
        }
        if self.current.is_none() && keeps_connection(app) {
            self.current = app.store.session().map(|s| (s, Instant::now()));
        }
        match &self.current {
            Some((session, _)) => session.as_ref(),
            None => app.store.as_ref(),
        }
    }

    fn end(&mut self) {
        self.current = None;
    }
}

/// How this worker leases jobs, from its settings.
fn leasing(app: &App) -> Leasing {
    let w = &app.settings.worker;
    Leasing {
        lease: Duration::from_secs(w.lease_secs),
        max_reclaims: w.max_reclaims,
        max_attempts: w.max_attempts,
    }
}

/// Claim one job and run it to an outcome, then the push its sign job handed this worker or the
/// job its push completion claimed, and so on. Returns how many jobs ran: 0 when nothing was due.
async fn run_one(
    app: &App,
    store: &dyn Store,
    owner: &str,
    hard_stop: Option<&CancellationToken>,
) -> Result<usize, StoreError> {
    let leasing = leasing(app);
    let Some(Claimed { job, to_sign }) = store.claim_job_to_run(owner, &leasing).await? else {
        return Ok(0);
    };
    let mut ran = 0;
    let mut next = Some(Leased::claimed(Claimed { job, to_sign }));
    while let Some(leased) = next.take() {
        if ran > 0 && app.shutdown.is_cancelled() {
            // A stopping worker starts nothing new: the handed-over push, or the job a push
            // completion claimed, goes back to the queue.
            if let Some(lock) = &leased.given.lock {
                unlock(store, lock).await;
            }
            store.release_job(&leased.job).await?;
            break;
        }
        next = run_job(app, store, owner, hard_stop, &leasing, leased).await?;
        ran += 1;
    }
    Ok(ran)
}

/// Whether a worker's job keeps one database connection from its claim to its completion
/// ([`Store::session`]): only while the pool has room for one per concurrent job and as many
/// again for the API, ingest and the heartbeats, which still take theirs from the pool.
fn keeps_connection(app: &App) -> bool {
    let workers = u64::try_from(app.settings.worker.concurrency).unwrap_or(u64::MAX);
    workers.saturating_mul(2) <= u64::from(app.settings.database.max_connections)
}

/// A job this worker holds the lease of, with what its predecessor already read and locked for it.
struct Leased {
    job: Job,
    given: Given,
}

impl Leased {
    fn claimed(Claimed { job, to_sign }: Claimed) -> Self {
        Self {
            job,
            given: Given {
                to_sign,
                ..Given::default()
            },
        }
    }
}

/// What a job's claim or its predecessor already read and locked for it.
#[derive(Default)]
struct Given {
    /// A sign job's execution and statement, read with its claim.
    to_sign: Option<(Execution, Option<Vec<u8>>)>,
    read: Option<Prefetched>,
    lock: Option<Lock>,
}

/// What a sign job hands its push: the execution and the envelope, so the push reads neither.
struct Prefetched {
    execution: Execution,
    envelope: Vec<u8>,
}

/// Run one leased job to an outcome; returns the job it handed this worker, if any.
async fn run_job(
    app: &App,
    store: &dyn Store,
    owner: &str,
    hard_stop: Option<&CancellationToken>,
    leasing: &Leasing,
    Leased { job, given }: Leased,
) -> Result<Option<Leased>, StoreError> {
    crate::metrics::job_attempt(job.kind.as_str());
    let span = tracing::info_span!("job", worker.id = owner, job.id = job.id, job.kind = job.kind.as_str(), execution.id = %job.execution_id, job.attempt = job.attempts);
    let attempt = AssertUnwindSafe(execute(app, store, &job, owner, leasing, given)).catch_unwind();
    let stopped = async {
        match hard_stop {
            Some(stop) => stop.cancelled().await,
            None => std::future::pending().await,
        }
    };
    // Whichever ends first ends the job: its outcome, the hard stop, or a failed lease renewal
    // (the attempt is dropped there, cancelling whatever request it had in flight).
    let result = tokio::select! {
        r = attempt => match r {
            Ok(r) => r,
            Err(panic) => Err(Failure::retryable(format!(
                "internal error (panic: {})",
                panic_message(panic.as_ref())
            )).because("panic")),
        },
        _ = stopped => {
            store.release_job(&job).await?;
            tracing::info!(parent: &span, "job released at shutdown");
            return Ok(None);
        }
        why = keep_leased(app, &job, leasing.lease) => {
            Err(Failure::retryable(format!("the worker gave the job up: {why}")).because("lease_lost"))
        }
    };
    match result {
        Ok(next) => {
            crate::metrics::job_completed(job.kind.as_str());
            tracing::info!(parent: &span, "job done");
            return Ok(next);
        }
        Err(f) => {
            let max = app.settings.worker.max_attempts as i32;
            let retry_in = (!f.permanent && job.attempts < max).then(|| backoff(app, job.attempts));
            crate::metrics::job_failed(job.kind.as_str(), f.reason, retry_in.is_some());
            match retry_in {
                Some(delay) => {
                    tracing::warn!(parent: &span, error = %f.message, retry_in = ?delay, "job failed; will retry")
                }
                None => {
                    tracing::error!(parent: &span, error = %f.message, permanent = f.permanent, "job failed for good")
                }
            }
            match store.fail_job(&job, &f.message, retry_in).await {
                Ok(()) | Err(StoreError::LeaseLost(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(None)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Renew the job's lease every third of `lease` while it runs; see [`heartbeat`].
async fn keep_leased(app: &App, job: &Job, lease: Duration) -> String {
    heartbeat(lease, "its lease", || app.store.renew_lease(job, lease)).await
}

/// Call `renew` every third of `period` (a lease or lock lifetime). Returns, saying why, as soon
/// as a renewal fails, is refused (`what` changed hands) or takes longer than that third: the
/// caller gives up while `what` is still its own.
async fn heartbeat<F, Fut>(period: Duration, what: &str, renew: F) -> String
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<bool, StoreError>>,
{
    let every = period / 3;
    loop {
        tokio::time::sleep(every).await;
        match tokio::time::timeout(every, renew()).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return format!("another worker took over {what}"),
            Ok(Err(e)) => return format!("renewing {what} failed ({e})"),
            Err(_) => return format!("renewing {what} took longer than {every:?}"),
        }
    }
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

async fn execute(
    app: &App,
    store: &dyn Store,
    job: &Job,
    owner: &str,
    leasing: &Leasing,
    Given {
        to_sign,
        read,
        lock,
    }: Given,
) -> Result<Option<Leased>, Failure> {
    match job.kind {
        JobKind::Resolve => resolve(app, store, job).await.map(|()| None),
        JobKind::Sign => sign(app, store, job, to_sign).await,
        JobKind::Push => Ok(push(app, store, job, owner, leasing, read, lock)
            .await?
            .map(Leased::claimed)),
    }
}

/// Resolve every image still `resolving` to the digest its tag points at (a HEAD of the manifest:
/// for a multi-arch image, the index's digest), complete the stored statement template with them
/// and store it — serialized once — with the sign job. A tag not in the registry (yet) is retried
/// with backoff: the image may be pushed after the webhook.
async fn resolve(app: &App, store: &dyn Store, job: &Job) -> Result<(), Failure> {
    let execution = store
        .execution(job.execution_id)
        .await?
        .ok_or_else(|| Failure::permanent("execution vanished").because("missing_data"))?;
    let template = store
        .statement_template(job.execution_id)
        .await?
        .ok_or_else(|| {
            Failure::permanent("execution has no statement template to complete")
                .because("missing_data")
        })?;
    let template: Statement = serde_json::from_slice(&template).map_err(|e| {
        Failure::permanent(format!("the stored statement template is corrupt: {e}"))
            .because("missing_data")
    })?;
    let pending: Vec<&ArtifactRecord> = execution
        .artifacts
        .iter()
        .filter(|a| a.push_state == PushState::Resolving)
        .collect();
    let max = app.settings.worker.max_attempts;
    let deadline = Duration::from_secs(app.settings.worker.push_deadline_secs);
    let mut resolved: Vec<(i32, Digest)> = Vec::new();
    for artifact in &pending {
        let image = image_of(artifact);
        let digest = match tokio::time::timeout(deadline, app.registries.resolve(&image)).await {
            Ok(Ok(digest)) => digest,
            Ok(Err(e)) => return Err(resolve_failure(&e, &image, job.attempts, max)),
            Err(_) => {
                return Err(Failure::retryable(format!(
                    "{}: resolving {image} did not finish within {deadline:?}",
                    ErrorCode::Unavailable.as_str()
                ))
                .because(ErrorCode::Unavailable.as_str()));
            }
        };
        tracing::info!(image = %image, subject.digest = %digest, "image tag resolved");
        resolved.push((artifact.position, digest));
    }
    // Every artifact, in position order, with its digest: known before, or just resolved.
    let artifacts = execution
        .artifacts
        .iter()
        .map(|a| {
            let digest = resolved
                .iter()
                .find(|(position, _)| *position == a.position)
                .map(|(_, d)| d.clone())
                .or_else(|| a.digest.clone())
                .ok_or_else(|| {
                    Failure::permanent(format!("{} has no digest", image_of(a)))
                        .because("missing_data")
                })?;
            Ok(Artifact {
                image: image_of(a),
                digest,
            })
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    let statement = provenance::to_bytes(&provenance::with_subjects(template, &artifacts));
    match store.complete_resolve(job, &resolved, &statement).await {
        Ok(()) => {
            app.notify_worker();
            Ok(())
        }
        Err(StoreError::LeaseLost(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn image_of(a: &ArtifactRecord) -> ImageRef {
    ImageRef {
        registry: a.registry.clone(),
        repository: a.repository.clone(),
        tag: a.tag.clone(),
    }
}

/// How a failed resolve attempt (1-based `attempt` of `max`) counts. A tag the registry does not
/// have is retried until the last attempt, which says it never appeared; other failures keep
/// their class.
fn resolve_failure(e: &RegistryError, image: &ImageRef, attempt: i32, max: u32) -> Failure {
    if e.code() != ErrorCode::ImageNotFound {
        let message = format!("{}: {}", e.code().as_str(), e.message());
        let failure = if e.is_retryable() {
            Failure::retryable(message)
        } else {
            Failure::permanent(message)
        };
        return failure.because(e.code().as_str());
    }
    let tag = image.tag.as_deref().unwrap_or_default();
    let name = image.name();
    let code = e.code().as_str();
    let failure = if i64::from(attempt) < i64::from(max) {
        Failure::retryable(format!(
            "{code}: tag {tag} of {name} is not in the registry yet (attempt {attempt} of {max}; \
             retried while the image may still be pushed)"
        ))
    } else {
        Failure::permanent(format!(
            "{code}: tag {tag} of {name} never appeared after {attempt} attempts"
        ))
    };
    failure.because(code)
}

/// Sign the execution's statement; `read` is its execution and statement if the claim read them.
async fn sign(
    app: &App,
    store: &dyn Store,
    job: &Job,
    read: Option<(Execution, Option<Vec<u8>>)>,
) -> Result<Option<Leased>, Failure> {
    let read = match read {
        Some(read) => Some(read),
        None => store.execution_with_statement(job.execution_id).await?,
    };
    let (mut execution, statement) =
        read.ok_or_else(|| Failure::permanent("execution vanished").because("missing_data"))?;
    let statement = statement.ok_or_else(|| {
        Failure::permanent("execution has no statement to sign").because("missing_data")
    })?;
    let signer = app
        .keyring
        .signer_for(&execution.account)
        .await
        .map_err(sign_failure)?;
    let key_type = app
        .keyring
        .key_kind_for(&execution.account)
        .map_or("unknown", |k| k.as_str());
    let started = Instant::now();
    let signed = sign_envelope(signer.as_ref(), IN_TOTO_PAYLOAD_TYPE, &statement).await;
    let outcome = match &signed {
        Ok(_) => "ok",
        Err(SignError::Unavailable(_)) => "unavailable",
        Err(SignError::Failed(_)) => "failed",
    };
    crate::metrics::signed(key_type, outcome, started.elapsed());
    let envelope = signed.map_err(sign_failure)?;
    let key_id: &KeyId = signer.key_id();
    // This worker pushes the first artifact waiting for its push itself, straight on.
    let first = execution
        .artifacts
        .iter()
        .find(|a| a.push_state == PushState::Pending)
        .and_then(|a| Some((a.position, tag_lock(&image_of(a), a.digest.as_ref()?))));
    let hand_off = first.as_ref().map(|(position, lock)| HandOff {
        position: *position,
        lease: leasing(app).lease,
        lock,
        lock_ttl: Duration::from_secs(app.settings.worker.lock_ttl_secs),
    });
    match store
        .complete_sign(job, &envelope, key_id.as_str(), hand_off)
        .await
    {
        Ok(signed) => {
            if signed.queued > 0 {
                app.notify_worker();
            }
            // The push reads what this job read, unless another worker's envelope was stored
            // first (then the push reads it, and its key, from the store).
            let read = (signed.envelope == envelope).then(|| {
                execution.key_id = Some(key_id.as_str().to_owned());
                Prefetched {
                    execution,
                    envelope: signed.envelope,
                }
            });
            Ok(signed.push.map(|job| Leased {
                job,
                given: Given {
                    to_sign: None,
                    read,
                    lock: signed.lock,
                },
            }))
        }
        // Another worker took the job over; its envelope (or the first stored) wins.
        Err(StoreError::LeaseLost(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn sign_failure(e: SignError) -> Failure {
    match e {
        SignError::Unavailable(m) => Failure::retryable(format!("signing key unavailable: {m}"))
            .because("signing_unavailable"),
        SignError::Failed(m) => {
            Failure::permanent(format!("signing failed: {m}")).because("signing_failed")
        }
    }
}

async fn push(
    app: &App,
    store: &dyn Store,
    job: &Job,
    owner: &str,
    leasing: &Leasing,
    read: Option<Prefetched>,
    handed_lock: Option<Lock>,
) -> Result<Option<Claimed>, Failure> {
    let target = async {
        let (execution, envelope) = match read {
            Some(read) => (read.execution, read.envelope),
            None => {
                let execution = store.execution(job.execution_id).await?.ok_or_else(|| {
                    Failure::permanent("execution vanished").because("missing_data")
                })?;
                let envelope = store.envelope(job.execution_id).await?.ok_or_else(|| {
                    Failure::permanent("no stored envelope to push").because("missing_data")
                })?;
                (execution, envelope)
            }
        };
        let artifact = job
            .artifact_position
            .and_then(|p| execution.artifacts.iter().find(|a| a.position == p))
            .ok_or_else(|| Failure::permanent("artifact vanished").because("missing_data"))?;
        let digest = artifact.digest.clone().ok_or_else(|| {
            Failure::permanent("the artifact's digest is not resolved").because("missing_data")
        })?;
        Ok::<_, Failure>((image_of(artifact), digest, execution.key_id, envelope))
    };
    let (image, digest, key_id, envelope) = match target.await {
        Ok(target) => target,
        Err(f) => {
            if let Some(lock) = &handed_lock {
                unlock(store, lock).await;
            }
            return Err(f);
        }
    };
    let digest = &digest;
    let key_id = key_id.unwrap_or_default();
    let name = tag_lock(&image, digest);
    let w = &app.settings.worker;
    let ttl = Duration::from_secs(w.lock_ttl_secs);
    let deadline = Duration::from_secs(w.push_deadline_secs);
    let lock = match handed_lock {
        Some(lock) if lock.name == name => lock,
        other => {
            // A lock handed over for another tag (never expected) is not held on to.
            if let Some(stale) = &other {
                unlock(store, stale).await;
            }
            acquire(store, &name, owner, ttl).await?
        }
    };
    let fence = Fence {
        store,
        lock: &lock,
        in_doubt: AtomicBool::new(false),
    };
    let request = PushRequest {
        image: &image,
        digest,
        envelope: &envelope,
        predicate_type: SLSA_PROVENANCE_V1,
        key_id: &key_id,
    };
    let work = AssertUnwindSafe(async {
        app.faults.in_push();
        app.registries.push_fenced(&request, &fence).await
    })
    .catch_unwind();
    // The whole push runs under the deadline and while the lock is renewed; losing the lock
    // drops the push, cancelling whatever request it had in flight.
    let started = Instant::now();
    let pushed = tokio::select! {
        r = tokio::time::timeout(deadline, work) => match r {
            Ok(Ok(pushed)) => pushed
                .map_err(|e| push_failure(&e, job.attempts, w.missing_image_retries)),
            Ok(Err(panic)) => Err(Failure::retryable(format!(
                "internal error (panic: {})",
                panic_message(panic.as_ref())
            )).because("panic")),
            Err(_) => Err(push_failure(
                &RegistryError::retryable(
                    ErrorCode::Unavailable,
                    format!("the push to {} did not finish within {deadline:?}", image.name()),
                ),
                job.attempts,
                w.missing_image_retries,
            )),
        },
        why = keep_locked(app, &lock, ttl) => Err(push_failure(
            &RegistryError::retryable(ErrorCode::LockLost, format!("{why}; the push was stopped")),
            job.attempts,
            w.missing_image_retries,
        )),
    };
    // A manifest write whose fate is unknown (cut off, timed out, a gateway's 502/504) may still
    // land: then the lock is left to expire on its own (at most lock_ttl_secs), so no other writer
    // reads the tag before it has. A write the registry answered (stored or refused) is settled.
    // A pushed attestation's lock is released by its completion, below.
    if pushed.is_err() {
        if fence.in_doubt.load(Ordering::SeqCst) {
            tracing::info!(lock = %name, "push failed with its manifest write's fate unknown; the lock is left to expire");
        } else {
            unlock(store, &lock).await;
        }
    }
    let push_outcome = match &pushed {
        Ok(o) if o.already_present => "already_present",
        Ok(_) => "pushed",
        Err(f) => f.reason,
    };
    crate::metrics::push_finished(&image.registry, push_outcome, started.elapsed());
    let outcome = pushed?;
    tracing::info!(subject.digest = %digest, reference = %outcome.reference, already_present = outcome.already_present, "attestation pushed");
    let record = PushRecord {
        reference: outcome.reference,
        manifest_digest: outcome.manifest_digest,
    };
    // A running worker claims its next job in the same write; a stopping one claims nothing.
    let completed = if app.shutdown.is_cancelled() {
        store
            .complete_push(job, &record, Some(&lock))
            .await
            .map(|attested| (attested, None))
    } else {
        store
            .complete_push_and_claim(job, &record, Some(&lock), owner, leasing)
            .await
    };
    match completed {
        Ok((attested, next)) => {
            if let Some(after) = attested {
                crate::metrics::attested(after);
            }
            Ok(next)
        }
        Err(e) => {
            // Nothing was written, the lock's release included, and nothing was claimed.
            unlock(store, &lock).await;
            match e {
                StoreError::LeaseLost(_) => Ok(None),
                e => Err(e.into()),
            }
        }
    }
}

/// The lock that serializes writes of an image's `.att` tag across workers and replicas.
fn tag_lock(image: &ImageRef, digest: &Digest) -> String {
    format!("att:{}/{}@{}", image.registry, image.repository, digest)
}

/// Release a tag lock; if that fails, it expires on its own.
async fn unlock(store: &dyn Store, lock: &Lock) {
    if let Err(e) = store.unlock(lock).await {
        tracing::warn!(error = %e, lock = %lock.name, "unlock failed; the lock expires on its own");
    }
}

/// The check before a manifest write: this worker still holds the tag lock under its token
/// (the database's clock decides whether it has expired).
struct Fence<'a> {
    store: &'a dyn Store,
    lock: &'a Lock,
    /// Set when a check passed (a manifest write may be sent from then on), cleared when that
    /// write's answer settled it.
    in_doubt: AtomicBool,
}

#[async_trait::async_trait]
impl WriteFence for Fence<'_> {
    async fn check(&self) -> Result<(), RegistryError> {
        let lost = |why: String| {
            RegistryError::retryable(
                ErrorCode::LockLost,
                format!(
                    "{why} before the manifest write; nothing was written (lock {}, token {})",
                    self.lock.name, self.lock.token
                ),
            )
        };
        match self.store.holds_lock(self.lock).await {
            Ok(true) => {
                self.in_doubt.store(true, Ordering::SeqCst);
                Ok(())
            }
            Ok(false) => Err(lost("another worker took over the tag lock".into())),
            Err(e) => Err(lost(format!("the tag lock could not be confirmed ({e})"))),
        }
    }

    fn settled(&self) {
        self.in_doubt.store(false, Ordering::SeqCst);
    }
}

/// Renew the tag lock every third of `ttl` during a push; see [`heartbeat`].
async fn keep_locked(app: &App, lock: &Lock, ttl: Duration) -> String {
    let what = format!("the lock on {}", lock.name);
    heartbeat(ttl, &what, || app.store.renew_lock(lock, ttl)).await
}

/// How a failed push attempt (1-based `attempt`) counts. A missing image is retried
/// `missing_image_retries` times before it is permanent: a registry replica may not have it yet.
fn push_failure(e: &RegistryError, attempt: i32, missing_image_retries: u32) -> Failure {
    let message = format!("{}: {}", e.code().as_str(), e.message());
    let failure = if e.code() == ErrorCode::ImageNotFound
        && i64::from(attempt) <= i64::from(missing_image_retries)
    {
        Failure::retryable(format!(
            "{message} (attempt {attempt}; retried up to {missing_image_retries} times in case the registry is still replicating it)"
        ))
    } else if e.is_retryable() {
        Failure::retryable(message)
    } else {
        Failure::permanent(message)
    };
    failure.because(e.code().as_str())
}

/// Wait for the tag lock, polling with jitter, up to [`TAG_LOCK_WAIT`]. A stopped holder's lock
/// is free `ttl` after its last renewal.
async fn acquire(
    store: &dyn Store,
    name: &str,
    owner: &str,
    ttl: Duration,
) -> Result<Lock, Failure> {
    let deadline = tokio::time::Instant::now() + TAG_LOCK_WAIT;
    loop {
        if let Some(lock) = store.try_lock(name, owner, ttl).await? {
            return Ok(lock);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(
                Failure::retryable(format!("another worker is still writing {name}"))
                    .because("tag_lock_busy"),
            );
        }
        let pause = rand::rng().random_range(10..60);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Prune every `worker.prune_interval_secs` until shutdown (never, with `retain_done_hours = 0`).
async fn prune_loop(app: Arc<App>) {
    if app.settings.worker.retain_done_hours == 0 {
        return;
    }
    let every = Duration::from_secs(app.settings.worker.prune_interval_secs);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = app.shutdown.cancelled() => return,
        }
        match prune(&app).await {
            Ok(p) if p == Pruned::default() => {}
            Ok(p) => tracing::info!(
                jobs = p.jobs,
                locks = p.locks,
                "pruned done jobs and old locks"
            ),
            Err(e) => tracing::warn!(error = %e, "pruning failed; trying again next run"),
        }
    }
}

/// One retention run: done jobs and locks older than `worker.retain_done_hours`, in batches of
/// [`PRUNE_BATCH`] until a short batch, at most [`PRUNE_BATCHES_PER_RUN`] of them.
pub async fn prune(app: &App) -> Result<Pruned, StoreError> {
    let age = Duration::from_secs(app.settings.worker.retain_done_hours.saturating_mul(3600));
    let mut total = Pruned::default();
    for _ in 0..PRUNE_BATCHES_PER_RUN {
        let batch = app.store.prune(age, PRUNE_BATCH).await?;
        total.jobs += batch.jobs;
        total.locks += batch.locks;
        let short = batch.jobs < u64::from(PRUNE_BATCH) && batch.locks < u64::from(PRUNE_BATCH);
        if short || app.shutdown.is_cancelled() {
            break;
        }
        tokio::task::yield_now().await;
    }
    Ok(total)
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
    fn a_tag_not_in_the_registry_is_retried_until_the_last_attempt_which_says_it_never_appeared() {
        let missing = RegistryError::permanent(ErrorCode::ImageNotFound, "resolve x: not found");
        let image: ImageRef = "registry.example.com/acme/app:3484a3f".parse().unwrap();
        let early = resolve_failure(&missing, &image, 3, 8);
        assert!(!early.permanent);
        assert!(
            early
                .message
                .starts_with("image_not_found: tag 3484a3f of registry.example.com/acme/app")
                && early.message.contains("attempt 3 of 8"),
            "{}",
            early.message
        );
        let last = resolve_failure(&missing, &image, 8, 8);
        assert!(last.permanent);
        assert_eq!(
            last.message,
            "image_not_found: tag 3484a3f of registry.example.com/acme/app never appeared after 8 attempts"
        );
        let refused = RegistryError::retryable(ErrorCode::Unauthorized, "refused");
        let f = resolve_failure(&refused, &image, 8, 8);
        assert_eq!(
            (f.permanent, f.message.as_str()),
            (false, "registry_unauthorized: refused")
        );
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
