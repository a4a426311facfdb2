//! Persistence behind one [`Store`] trait, implemented once ([`SqlStore`]) over PostgreSQL
//! (production) or SQLite (embedded). Every method is a use case that runs in one transaction; an
//! execution, its artifacts, its statement and its outbox job are written together or not at all.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{AccountId, BuildCompleted, BuildStatus, Digest, ExecutionId, ImageRef};

mod dialect;
pub mod migrations;
mod postgres;
pub mod process_lock;
mod rows;
mod sql;
mod sql_store;
mod sqlite;

pub use sql_store::SqlStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// Same idempotency key, different content.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The job's lease expired and another worker owns it now; drop the result.
    #[error("lease on job {0} was lost")]
    LeaseLost(i64),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// One item of a batch whose database was unavailable (the batch's error, as text).
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// The database could not be reached or did not answer in time (as opposed to refusing a
    /// statement): the request may succeed when retried.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
            || matches!(
                self,
                Self::Database(
                    sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::Io(_)
                        | sqlx::Error::Tls(_)
                        | sqlx::Error::Protocol(_)
                        | sqlx::Error::WorkerCrashed
                )
            )
            || matches!(self, Self::Database(sqlx::Error::Database(e)) if is_shutdown_code(e.code().as_deref()))
    }
}

/// PostgreSQL's "the server is going away / not accepting" SQLSTATEs (class 57P, 08xxx).
fn is_shutdown_code(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.starts_with("57P") || c.starts_with("08"))
}

/// A build to record, with what the worker is to sign for it.
#[derive(Debug, Clone)]
pub struct NewExecution {
    pub id: ExecutionId,
    pub build: BuildCompleted,
    /// SHA-256 of the normalized webhook; equal for redeliveries, different for a changed body.
    pub request_sha256: String,
    pub signing: Signing,
    /// `id.created_at()`: the receipt time is the id's own timestamp, so id ranges are time ranges.
    pub received_at: OffsetDateTime,
}

/// What the worker signs for a new execution.
#[derive(Debug, Clone)]
pub enum Signing {
    /// The build did not succeed: nothing is signed.
    Nothing,
    /// The statement over the build's artifacts, serialized once at ingest; a `sign` job is queued.
    Statement(Vec<u8>),
    /// The build's images come from templates: their digests are resolved first (a `resolve` job
    /// is queued, the artifacts wait in `resolving`), then `template` — the statement without
    /// subjects — is completed with them, serialized once, stored and signed.
    Resolve {
        images: Vec<ImageRef>,
        template: Vec<u8>,
    },
}

/// One artifact row as `record_build` writes it.
struct NewArtifact<'a> {
    image: &'a ImageRef,
    /// `None` until resolved; stored as `''` (the column predates resolving and stays NOT NULL).
    digest: Option<&'a Digest>,
}

impl NewExecution {
    /// The execution's attestation state, its artifacts' push state and its first job.
    fn initial_states(&self) -> (AttestationState, PushState, Option<JobKind>) {
        match self.signing {
            Signing::Nothing => (AttestationState::Skipped, PushState::Skipped, None),
            Signing::Statement(_) => (
                AttestationState::Pending,
                PushState::Pending,
                Some(JobKind::Sign),
            ),
            Signing::Resolve { .. } => (
                AttestationState::Resolving,
                PushState::Resolving,
                Some(JobKind::Resolve),
            ),
        }
    }

    fn new_artifacts(&self) -> Vec<NewArtifact<'_>> {
        match &self.signing {
            Signing::Resolve { images, .. } => images
                .iter()
                .map(|image| NewArtifact {
                    image,
                    digest: None,
                })
                .collect(),
            _ => self
                .build
                .artifacts
                .iter()
                .map(|a| NewArtifact {
                    image: &a.image,
                    digest: Some(&a.digest),
                })
                .collect(),
        }
    }

    /// How many artifacts the execution has: stored with it (`executions.artifact_count`).
    fn artifact_count(&self) -> i32 {
        let n = match &self.signing {
            Signing::Resolve { images, .. } => images.len(),
            _ => self.build.artifacts.len(),
        };
        // At most 256 (the webhook's limit).
        i32::try_from(n).unwrap_or(i32::MAX)
    }

    /// The build's text columns, in the order both dialects' inserts bind them after the id:
    /// account, pipeline execution id, pipeline, repository, branch, commit, trigger type,
    /// triggered by, builder id.
    fn text_columns(&self) -> [&str; 9] {
        let b = &self.build;
        [
            b.account.as_str(),
            &b.pipeline_execution_id,
            &b.pipeline_identifier,
            &b.repository_url,
            &b.branch,
            &b.commit_sha,
            &b.trigger_type,
            &b.triggered_by,
            &b.builder_id,
        ]
    }

    fn statement(&self) -> Option<&[u8]> {
        match &self.signing {
            Signing::Statement(bytes) => Some(bytes),
            _ => None,
        }
    }

    fn statement_template(&self) -> Option<&[u8]> {
        match &self.signing {
            Signing::Resolve { template, .. } => Some(template),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub enum Recorded {
    Created(Execution),
    /// A redelivery of an execution already recorded with the same content.
    Existing(Execution),
}

/// Where an execution's attestation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AttestationState {
    /// The build did not succeed; nothing to attest.
    Skipped,
    /// Its images came from templates: their digests are being resolved in the registry; the
    /// statement is written once they all are.
    Resolving,
    /// Waiting to be signed.
    Pending,
    /// Signed; pushes to registries under way or retrying.
    Pushing,
    /// Signed and pushed to every artifact's registry.
    Attested,
    /// A step ran out of attempts or failed permanently; see `lastError`.
    Failed,
}

impl AttestationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skipped => "skipped",
            Self::Resolving => "resolving",
            Self::Pending => "pending",
            Self::Pushing => "pushing",
            Self::Attested => "attested",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "skipped" => Self::Skipped,
            "resolving" => Self::Resolving,
            "pending" => Self::Pending,
            "pushing" => Self::Pushing,
            "attested" => Self::Attested,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// Per-artifact delivery state of the attestation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PushState {
    /// Nothing to push (unsuccessful build).
    Skipped,
    /// The digest of the image's tag is not known yet (an image from a template).
    Resolving,
    /// Waiting for the signature or its first attempt.
    Pending,
    Pushed,
    /// Failed at least once; will be tried again at `nextAttemptAt`.
    Retrying,
    /// Out of attempts or permanently refused; `POST .../retry` re-drives it.
    Dead,
}

impl PushState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skipped => "skipped",
            Self::Resolving => "resolving",
            Self::Pending => "pending",
            Self::Pushed => "pushed",
            Self::Retrying => "retrying",
            Self::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "skipped" => Self::Skipped,
            "resolving" => Self::Resolving,
            "pending" => Self::Pending,
            "pushed" => Self::Pushed,
            "retrying" => Self::Retrying,
            "dead" => Self::Dead,
            _ => return None,
        })
    }
}

/// A recorded execution with its artifacts: their records (`A` = `Vec<ArtifactRecord>`, what
/// every read but a summary list gives), or only how many there are ([`ExecutionSummary`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Execution<A = Vec<ArtifactRecord>> {
    pub id: ExecutionId,
    pub account: AccountId,
    pub pipeline_identifier: String,
    pub pipeline_execution_id: String,
    pub repository_url: String,
    pub branch: String,
    pub commit_sha: String,
    pub trigger_type: String,
    pub triggered_by: String,
    pub builder_id: String,
    pub builder_version: BTreeMap<String, String>,
    pub started_on: OffsetDateTime,
    pub finished_on: OffsetDateTime,
    pub status: BuildStatus,
    pub received_at: OffsetDateTime,
    pub attestation: AttestationState,
    pub key_id: Option<String>,
    pub signed_at: Option<OffsetDateTime>,
    pub attested_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    /// The worker (`<worker id>/<job loop>`) whose envelope was stored.
    pub signed_by: Option<String>,
    pub artifacts: A,
}

/// An execution listed without its artifacts' records, only their number: what a summary list
/// reads, without touching the artifacts' rows.
pub type ExecutionSummary = Execution<ArtifactCount>;

/// How many artifacts (images) an execution has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtifactCount(pub u32);

impl<A> Execution<A> {
    /// Whether nothing can change this record any more, so a copy of it stays true: a build that
    /// did not succeed (nothing to attest, no job), or an attestation pushed to every artifact's
    /// registry (the only state `attested` is ever given for) and stamped `attested_at`. Every
    /// later write leaves such a row as it is: the statement and the envelope are written once,
    /// pushed artifacts have no job left to fail or re-drive, and `retry_execution` finds nothing
    /// to re-queue. (`attested_at` is written with the state, in one statement or transaction; a
    /// row with the state and without the time would not count as settled.)
    pub fn is_settled(&self) -> bool {
        self.last_error.is_none()
            && match self.attestation {
                AttestationState::Skipped => true,
                AttestationState::Attested => self.attested_at.is_some(),
                _ => false,
            }
    }
}

impl Execution {
    /// The record exactly as `record_build` has just stored it, without reading it back.
    fn recorded(new: &NewExecution) -> Self {
        let b = &new.build;
        let (attestation, push_state, _) = new.initial_states();
        Self {
            id: new.id,
            account: b.account.clone(),
            pipeline_identifier: b.pipeline_identifier.clone(),
            pipeline_execution_id: b.pipeline_execution_id.clone(),
            repository_url: b.repository_url.clone(),
            branch: b.branch.clone(),
            commit_sha: b.commit_sha.clone(),
            trigger_type: b.trigger_type.clone(),
            triggered_by: b.triggered_by.clone(),
            builder_id: b.builder_id.clone(),
            builder_version: b.builder_version.clone(),
            started_on: b.started_on,
            finished_on: b.finished_on,
            status: b.status,
            received_at: new.received_at,
            attestation,
            key_id: None,
            signed_at: None,
            attested_at: None,
            last_error: None,
            signed_by: None,
            artifacts: new
                .new_artifacts()
                .into_iter()
                .enumerate()
                .map(|(i, a)| ArtifactRecord {
                    position: i as i32,
                    registry: a.image.registry.clone(),
                    repository: a.image.repository.clone(),
                    tag: a.image.tag.clone(),
                    digest: a.digest.cloned(),
                    resolved_at: None,
                    push_state,
                    push_attempts: 0,
                    next_attempt_at: None,
                    last_error: None,
                    pushed_reference: None,
                    manifest_digest: None,
                    pushed_at: None,
                    pushed_by: None,
                })
                .collect(),
        }
    }
}

fn conflict(b: &BuildCompleted) -> StoreError {
    StoreError::Conflict(format!(
        "pipeline execution {} of account {} was already recorded with different content",
        b.pipeline_execution_id, b.account
    ))
}

/// A resolve job's results that cannot be recorded: an image left unresolved, or a statement
/// already stored. The transaction is dropped; the job fails and is retried.
fn unresolvable(job: &Job, unresolved: i64) -> StoreError {
    StoreError::Corrupt(format!(
        "execution {}: {unresolved} image(s) still unresolved, or its statement was already written",
        job.execution_id
    ))
}

#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactRecord {
    pub position: i32,
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    /// `None` while the tag of an image from a template is being resolved.
    pub digest: Option<Digest>,
    /// When the digest was resolved from the tag (images from templates only).
    pub resolved_at: Option<OffsetDateTime>,
    pub push_state: PushState,
    pub push_attempts: i32,
    pub next_attempt_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    /// Where the attestation was written, e.g. `registry/repo:sha256-<hex>.att`.
    pub pushed_reference: Option<String>,
    /// Digest of the manifest that holds the attestation after the push.
    pub manifest_digest: Option<String>,
    pub pushed_at: Option<OffsetDateTime>,
    /// The worker (`<worker id>/<job loop>`) that pushed it.
    pub pushed_by: Option<String>,
}

/// Filters for listing executions. `account: None` only for admin readers.
#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    pub account: Option<AccountId>,
    pub pipeline: Option<String>,
    pub repository: Option<String>,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub status: Option<BuildStatus>,
    pub attestation: Option<AttestationState>,
    pub started_after: Option<OffsetDateTime>,
    pub started_before: Option<OffsetDateTime>,
    pub finished_after: Option<OffsetDateTime>,
    pub finished_before: Option<OffsetDateTime>,
    /// Oldest first instead of newest first.
    pub ascending: bool,
    /// Continue after this execution (exclusive) in the chosen order.
    pub after: Option<ExecutionId>,
    pub limit: u32,
}

/// What a worker is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Resolve the tags of the execution's images from templates to digests, then write the
    /// statement and queue the sign job.
    Resolve,
    /// Sign the execution's statement into a DSSE envelope.
    Sign,
    /// Push the envelope for one artifact to its registry.
    Push,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resolve => "resolve",
            Self::Sign => "sign",
            Self::Push => "push",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "resolve" => Some(Self::Resolve),
            "sign" => Some(Self::Sign),
            "push" => Some(Self::Push),
            _ => None,
        }
    }
}

/// How jobs are leased, and when a job whose worker keeps stopping is given up. Lease times are
/// the database's clock (`now()` on PostgreSQL; on SQLite, the one process's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leasing {
    /// How long a claim (or a renewal) holds the job.
    pub lease: Duration,
    /// Times a job whose lease expired without an outcome is taken over; the next expiry marks
    /// it dead ("the worker processing this job stopped N times").
    pub max_reclaims: u32,
    /// A lease that expires during the job's last allowed attempt marks it dead too.
    pub max_attempts: u32,
}

/// Why a job whose lease expired is dead instead of taken over, or `None` if it may be taken over.
/// `reclaims` counts earlier take-overs, `attempts` includes the attempt whose worker stopped.
pub fn stopped_for_good(reclaims: i32, attempts: i32, leasing: &Leasing) -> Option<String> {
    let stops = i64::from(reclaims) + 1;
    if stops > i64::from(leasing.max_reclaims) {
        Some(format!(
            "the worker processing this job stopped {stops} times"
        ))
    } else if i64::from(attempts) >= i64::from(leasing.max_attempts) {
        Some(format!(
            "the worker processing this job stopped during its last attempt ({attempts} of {})",
            leasing.max_attempts
        ))
    } else {
        None
    }
}

/// A named lock as held by one owner: the fencing token changes whenever the lock changes hands,
/// so a holder that was taken over can tell before it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub name: String,
    pub owner: String,
    pub token: i64,
}

/// What one retention run deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub jobs: u64,
    pub locks: u64,
}

/// The number of jobs of one kind in one state (`queued`, `running`, `done`, `dead`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCount {
    pub kind: String,
    pub state: String,
    pub count: u64,
}

/// One connection pool: open connections, how many of them are idle, and its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// `main` (PostgreSQL), `writer` or `reader` (SQLite).
    pub name: &'static str,
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

/// A job leased to one worker until `lease_expires_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: i64,
    pub kind: JobKind,
    pub execution_id: ExecutionId,
    pub artifact_position: Option<i32>,
    /// Attempts including this one.
    pub attempts: i32,
    pub lease_token: Uuid,
    /// The worker holding the lease, as given to [`Store::claim_job`].
    pub owner: String,
}

/// A job just leased ([`Store::claim_job_to_run`]) with what it reads first.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job: Job,
    /// For a sign job: its execution and statement. `None` for other kinds, and for a sign job
    /// whose execution is gone.
    pub to_sign: Option<(Execution, Option<Vec<u8>>)>,
}

/// What completing a sign job wrote.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The envelope that is stored: this one, or an earlier one another worker stored first.
    pub envelope: Vec<u8>,
    /// The push job leased to the signing worker (see [`Store::complete_sign`]).
    pub push: Option<Job>,
    /// The tag lock taken for that push; `None` while another worker holds it (the push then
    /// waits for it as any push does).
    pub lock: Option<Lock>,
    /// Push jobs queued for any worker.
    pub queued: u64,
}

/// The push a sign job takes on itself (see [`Store::complete_sign`]).
#[derive(Debug, Clone, Copy)]
pub struct HandOff<'a> {
    /// The artifact to push.
    pub position: i32,
    /// The push job's lease.
    pub lease: Duration,
    /// The name of the tag lock the push needs, taken in the same write if it is free.
    pub lock: &'a str,
    /// That lock's lifetime.
    pub lock_ttl: Duration,
}

/// The time from an execution's receipt to `attested_at` (never negative, should the clocks of
/// replicas disagree): what a push completion that attested it reports.
fn attestation_delay(received: OffsetDateTime, attested_at: OffsetDateTime) -> Duration {
    (attested_at - received)
        .max(time::Duration::ZERO)
        .unsigned_abs()
}

/// The result of a successful push, recorded on the artifact.
#[derive(Debug, Clone)]
pub struct PushRecord {
    pub reference: String,
    pub manifest_digest: String,
}

/// One execution as found by an artifact-digest lookup.
#[derive(Debug, Clone)]
pub struct DigestMatch {
    pub execution: Execution,
    pub artifact_position: i32,
}

/// Executions received on one UTC day with one build status and attestation state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DailyCount {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub status: String,
    pub attestation: String,
    pub count: i64,
}

/// Time from webhook receipt to the attestation being in every registry, in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimeToAttest {
    pub count: i64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

/// Dashboard figures over `[from, to)`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub daily: Vec<DailyCount>,
    pub time_to_attest: TimeToAttest,
    /// Time-to-attest percentiles of the executions received on each UTC day.
    pub time_to_attest_daily: Vec<DailyTimeToAttest>,
    /// Executions in the window whose attestation failed, by the code their error starts with.
    pub failures: Vec<FailureCount>,
    /// Jobs waiting or running now (not limited to the window), by kind and state.
    pub backlog: Vec<BacklogCount>,
}

/// Time-to-attest percentiles of one UTC day's executions.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DailyTimeToAttest {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    #[serde(flatten)]
    pub time_to_attest: TimeToAttest,
}

/// Failed attestations with one reason code (`image_not_found`, `registry_unauthorized`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureCount {
    pub reason: String,
    pub count: i64,
}

/// Jobs of one kind in one state (`queued` or `running`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BacklogCount {
    pub kind: String,
    pub state: String,
    pub count: i64,
}

/// The outcome of verifying one of an execution's images in its registry.
#[derive(Debug, Clone)]
pub struct NewVerification {
    pub execution_id: ExecutionId,
    /// `registry/repo@sha256:<hex>` as verified.
    pub image: String,
    pub digest: Digest,
    pub verified: bool,
    pub allowed: bool,
    pub policies: Vec<String>,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
    /// The full report as served by `POST /v1/verify`.
    pub report: serde_json::Value,
}

/// A stored verification result.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationRecord {
    pub image: String,
    pub digest: String,
    pub verified: bool,
    pub allowed: bool,
    pub policies: Vec<String>,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub verified_at: OffsetDateTime,
}

/// A public key attestd loaded to sign with, to remember (see [`Store::remember_signing_key`]).
#[derive(Debug, Clone)]
pub struct NewSigningKey {
    /// Lowercase hex SHA-256 of the SubjectPublicKeyInfo DER, as in envelopes.
    pub key_id: String,
    /// The `[signing.keys]` name (or `development`) it was loaded under.
    pub name: String,
    /// `cosign`, `transit` or `development`.
    pub kind: String,
    pub public_key_pem: String,
}

/// A remembered signing key: every key attestd ever loaded, current or retired.
#[derive(Debug, Clone, PartialEq)]
pub struct SigningKeyRecord {
    pub key_id: String,
    /// The name it was last loaded under.
    pub name: String,
    pub kind: String,
    pub public_key_pem: String,
    /// When an attestd process first and last loaded it.
    pub first_seen_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
}

/// Which stored document of an execution [`Store::document`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    /// The in-toto statement, as serialized once.
    Statement,
    /// The DSSE envelope, as signed.
    Envelope,
}

/// A stored document with what reading it is decided on.
#[derive(Debug)]
pub struct StoredDocument {
    pub account: AccountId,
    pub status: BuildStatus,
    pub attestation: AttestationState,
    /// `None` while there is none (an unsuccessful build's statement; an unsigned envelope).
    pub bytes: Option<Vec<u8>>,
}

/// The persistence operations attestd needs, identical on every backend.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// `"postgres"` or `"sqlite"`.
    fn backend(&self) -> &'static str;
    /// Apply pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// A cheap round trip, for readiness checks.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Record a build idempotently by (account, pipeline execution id). A successful build also
    /// gets its statement and a sign job — or, for images from templates, the statement template
    /// and a resolve job — in the same transaction.
    async fn record_build(&self, new: NewExecution) -> Result<Recorded, StoreError>;
    /// Record several builds with one commit (group commit at ingest). The outcome of each item
    /// is exactly what [`Store::record_build`] would have returned for it alone, in input order:
    /// created, redelivery or conflict, and an item's failure never fails another item. Nothing
    /// is reported before the commit that made it durable.
    ///
    /// Ingest's group commit (`ingest::group_commit`) waits for this answer once a batch has
    /// taken a webhook, so the whole call should wait for a connection at most once
    /// (`database.acquire_timeout_ms`): when the database is unavailable, answer every remaining
    /// item unavailable rather than retrying them one by one, and fall back to one transaction
    /// per item only when a statement was refused.
    async fn record_builds(&self, batch: Vec<NewExecution>) -> Vec<Result<Recorded, StoreError>> {
        let mut outcomes = Vec::with_capacity(batch.len());
        for new in batch {
            outcomes.push(self.record_build(new).await);
        }
        outcomes
    }
    async fn execution(&self, id: ExecutionId) -> Result<Option<Execution>, StoreError>;
    async fn list_executions(&self, filter: &ExecutionFilter)
    -> Result<Vec<Execution>, StoreError>;
    /// The same page as [`Store::list_executions`], each execution with the number of its
    /// artifacts instead of their records: as stored at ingest (counted on the artifacts' key
    /// for executions recorded before it was), never reading an artifact row.
    async fn list_execution_summaries(
        &self,
        filter: &ExecutionFilter,
    ) -> Result<Vec<ExecutionSummary>, StoreError>;
    /// The ids of the page [`Store::list_executions`] reads, in its order, and nothing else:
    /// what a reader that keeps settled executions needs first.
    async fn list_execution_ids(
        &self,
        filter: &ExecutionFilter,
    ) -> Result<Vec<ExecutionId>, StoreError>;
    /// The executions of `ids` (those that exist), in no particular order.
    async fn executions_in(&self, ids: &[ExecutionId]) -> Result<Vec<Execution>, StoreError>;
    /// [`Store::executions_in`] as summaries, like [`Store::list_execution_summaries`]'s.
    async fn execution_summaries_in(
        &self,
        ids: &[ExecutionId],
    ) -> Result<Vec<ExecutionSummary>, StoreError>;
    /// The stored statement bytes, exactly as serialized (at ingest, or once the execution's
    /// image digests were resolved).
    async fn statement(&self, id: ExecutionId) -> Result<Option<Vec<u8>>, StoreError>;
    /// An execution with its stored statement, in one read: what a sign job needs.
    async fn execution_with_statement(
        &self,
        id: ExecutionId,
    ) -> Result<Option<(Execution, Option<Vec<u8>>)>, StoreError>;
    /// The statement without subjects stored for an execution whose images come from templates,
    /// until they are resolved.
    async fn statement_template(&self, id: ExecutionId) -> Result<Option<Vec<u8>>, StoreError>;
    /// The stored DSSE envelope bytes, exactly as serialized when signed.
    async fn envelope(&self, id: ExecutionId) -> Result<Option<Vec<u8>>, StoreError>;
    /// The statement or envelope of an execution with its account, build status and state, in
    /// one read: what the API needs to decide a reader may see it and to answer.
    async fn document(
        &self,
        id: ExecutionId,
        which: Document,
    ) -> Result<Option<StoredDocument>, StoreError>;
    /// Executions with an artifact of this digest, newest first, optionally for one account.
    async fn executions_by_digest(
        &self,
        digest: &Digest,
        account: Option<&AccountId>,
    ) -> Result<Vec<DigestMatch>, StoreError>;

    /// Counts per day/status/state and time-to-attest percentiles for executions received in
    /// `[from, to)`, optionally for one account.
    async fn stats(
        &self,
        account: Option<&AccountId>,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Stats, StoreError>;

    /// Store a verification result for an execution.
    async fn record_verification(&self, v: &NewVerification) -> Result<(), StoreError>;
    /// An execution's verification results, oldest first.
    async fn verifications(&self, id: ExecutionId) -> Result<Vec<VerificationRecord>, StoreError>;

    /// Remember a key attestd is about to sign with, or note that it was loaded again. The first
    /// public key stored for a key id is kept.
    async fn remember_signing_key(&self, key: &NewSigningKey) -> Result<(), StoreError>;
    /// A remembered key by its key id.
    async fn signing_key(&self, key_id: &str) -> Result<Option<SigningKeyRecord>, StoreError>;
    /// Every remembered key, oldest first.
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError>;

    /// Lease the next runnable job: queued and due, or running with an expired lease (a
    /// take-over, which counts the stopped attempt and a reclaim). Jobs whose worker stopped too
    /// often ([`stopped_for_good`]) are marked dead with the reason instead.
    async fn claim_job(&self, owner: &str, leasing: &Leasing) -> Result<Option<Job>, StoreError>;
    /// [`Store::claim_job`], and for a sign job what [`Store::execution_with_statement`] reads, as
    /// of the claim: on PostgreSQL in the claim's own statement, a round trip fewer per execution.
    async fn claim_job_to_run(
        &self,
        owner: &str,
        leasing: &Leasing,
    ) -> Result<Option<Claimed>, StoreError>;
    /// Extend the job's lease by `lease` from now. `false`: it was taken over or finished.
    async fn renew_lease(&self, job: &Job, lease: Duration) -> Result<bool, StoreError>;
    /// Record the digests the resolve job found (by artifact position, for every artifact still
    /// resolving), store `statement` — serialized once, with those digests as subjects — finish the
    /// job and queue the sign job, in one transaction.
    async fn complete_resolve(
        &self,
        job: &Job,
        digests: &[(i32, Digest)],
        statement: &[u8],
    ) -> Result<(), StoreError>;
    /// Store the envelope unless one is stored already, finish the sign job and queue one push
    /// job per artifact waiting for one. With `hand_off`, the sign job itself becomes the push
    /// job of that artifact (if it is waiting for one), leased to the signing worker in the same
    /// write with its tag lock if free, so the worker pushes straight on without a claim and the
    /// outbox holds one job row per image; if it stops, the lease and the lock expire and any
    /// worker takes the push over as from a claim.
    async fn complete_sign(
        &self,
        job: &Job,
        envelope: &[u8],
        key_id: &str,
        hand_off: Option<HandOff<'_>>,
    ) -> Result<Signed, StoreError>;
    /// Record a pushed artifact and finish its job, releasing `lock` (the tag lock the push held)
    /// in the same write; nothing is written, the lock included, if the job is no longer the
    /// caller's. Returns the time from receipt to attestation if this push attested
    /// its execution (its last artifact to be pushed).
    async fn complete_push(
        &self,
        job: &Job,
        record: &PushRecord,
        lock: Option<&Lock>,
    ) -> Result<Option<Duration>, StoreError>;
    /// [`Store::complete_push`], then, if the push was completed, the next job leased to `owner`
    /// as [`Store::claim_job_to_run`] leases it: on PostgreSQL in the completion's own statement,
    /// so a busy worker's completion and next claim are one round trip.
    async fn complete_push_and_claim(
        &self,
        job: &Job,
        record: &PushRecord,
        lock: Option<&Lock>,
        owner: &str,
        leasing: &Leasing,
    ) -> Result<(Option<Duration>, Option<Claimed>), StoreError>;
    /// Record a failed attempt: retried `retry_in` from now, or dead when `None`.
    async fn fail_job(
        &self,
        job: &Job,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<(), StoreError>;
    /// Give a job back without counting the attempt (shutdown).
    async fn release_job(&self, job: &Job) -> Result<(), StoreError>;
    /// Re-queue the execution's dead jobs. Returns how many were re-queued.
    async fn retry_execution(&self, id: ExecutionId) -> Result<u64, StoreError>;
    /// Jobs that are neither done nor dead.
    async fn unfinished_jobs(&self) -> Result<u64, StoreError>;
    /// How many jobs there are of each kind in each state (kinds and states with none left out).
    async fn job_counts(&self) -> Result<Vec<JobCount>, StoreError>;
    /// The connection pools' sizes right now. No I/O.
    fn pool_stats(&self) -> Vec<PoolStats>;
    /// This store for one caller whose statements run one after another (a worker's job): on
    /// PostgreSQL the connection its first statement takes is kept for the next ones, and goes
    /// back to the pool when the returned store is dropped. `None` where that saves nothing
    /// (SQLite's connections are in-process).
    fn session(&self) -> Option<DynStore>;

    /// Take a named lock for `ttl` if it is free, expired or already `owner`'s, with a fencing
    /// token higher than the lock's last one; `None` while someone else holds it. Serializes
    /// manifest updates of one registry tag across workers and replicas.
    async fn try_lock(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lock>, StoreError>;
    /// Extend a held lock by `ttl` from now. `false`: it changed hands.
    async fn renew_lock(&self, lock: &Lock, ttl: Duration) -> Result<bool, StoreError>;
    /// Whether `lock` is still held, unexpired, with its token: the fence before a write.
    async fn holds_lock(&self, lock: &Lock) -> Result<bool, StoreError>;
    /// Release a held lock (it expires now; the row keeps the token until pruned).
    async fn unlock(&self, lock: &Lock) -> Result<(), StoreError>;

    /// Delete up to `limit` done jobs and up to `limit` locks that finished or expired more than
    /// `age` ago. Dead jobs are kept until re-driven. Each delete is one short statement.
    async fn prune(&self, age: Duration, limit: u32) -> Result<Pruned, StoreError>;
}

pub type DynStore = Arc<dyn Store>;

/// Open the store named by a `sqlite:` or `postgres://` URL.
/// Connect to `url`. `acquire_timeout` bounds how long a request waits for a connection, so
/// a database outage is answered `503` within it instead of hanging.
pub async fn connect(
    url: &str,
    max_connections: u32,
    acquire_timeout: std::time::Duration,
) -> Result<DynStore, StoreError> {
    Ok(Arc::new(if url.starts_with("sqlite:") {
        SqlStore::sqlite(url, max_connections, acquire_timeout).await?
    } else {
        SqlStore::postgres(url, max_connections, acquire_timeout).await?
    }))
}

fn split_policies(s: String) -> Vec<String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Per-day percentiles from `(day, seconds)` rows.
fn time_to_attest_by_day(rows: Vec<(String, f64)>) -> Vec<DailyTimeToAttest> {
    let mut days: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for (day, seconds) in rows {
        days.entry(day).or_default().push(seconds);
    }
    days.into_iter()
        .map(|(day, seconds)| DailyTimeToAttest {
            day,
            time_to_attest: time_to_attest(seconds),
        })
        .collect()
}

/// Failure counts by the code an error message starts with (`code: message`).
fn failures_by_reason(errors: Vec<Option<String>>) -> Vec<FailureCount> {
    let mut counts: std::collections::BTreeMap<String, i64> = Default::default();
    for error in errors {
        let reason = error
            .as_deref()
            .and_then(|e| e.split_once(':').map(|(code, _)| code.trim()))
            .filter(|code| !code.is_empty() && !code.contains(' '))
            .unwrap_or("other")
            .to_owned();
        *counts.entry(reason).or_default() += 1;
    }
    let mut out: Vec<FailureCount> = counts
        .into_iter()
        .map(|(reason, count)| FailureCount { reason, count })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    out
}

/// Nearest-rank percentiles of `seconds` (sorted here).
fn time_to_attest(mut seconds: Vec<f64>) -> TimeToAttest {
    seconds.sort_by(f64::total_cmp);
    let rank = |p: f64| -> Option<f64> {
        let n = seconds.len();
        (n > 0).then(|| seconds[((n as f64 * p).ceil() as usize).clamp(1, n) - 1])
    };
    TimeToAttest {
        count: seconds.len() as i64,
        p50: rank(0.50),
        p90: rank(0.90),
        p99: rank(0.99),
        max: seconds.last().copied(),
    }
}

/// Pair digest hits with their loaded executions, keeping the hits' order.
fn match_digest_hits(hits: Vec<(uuid::Uuid, i32)>, executions: Vec<Execution>) -> Vec<DigestMatch> {
    let by_id: std::collections::HashMap<_, _> =
        executions.into_iter().map(|e| (e.id.0, e)).collect();
    hits.into_iter()
        .filter_map(|(id, position)| {
            by_id.get(&id).map(|e| DigestMatch {
                execution: e.clone(),
                artifact_position: position,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_given_up_on_the_stop_past_max_reclaims_or_on_its_last_attempt() {
        let leasing = Leasing {
            lease: Duration::from_secs(30),
            max_reclaims: 3,
            max_attempts: 8,
        };
        let stopped = |reclaims, attempts| stopped_for_good(reclaims, attempts, &leasing);
        assert_eq!(stopped(0, 1), None, "the first stop is taken over");
        assert_eq!(stopped(2, 3), None, "the third too");
        assert_eq!(
            stopped(3, 4).as_deref(),
            Some("the worker processing this job stopped 4 times")
        );
        assert_eq!(
            stopped(0, 8).as_deref(),
            Some("the worker processing this job stopped during its last attempt (8 of 8)")
        );
    }
}
