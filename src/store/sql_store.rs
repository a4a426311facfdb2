//! The one implementation of every [`Store`] use case, on PostgreSQL or SQLite alike: what differs
//! between them is behind [`super::dialect`] (connections, encodings, the clock) and the markers
//! of [`super::sql`]; written per dialect are only ingest's insert ([`Db::insert_build`],
//! [`Db::insert_builds`]) and, on PostgreSQL, completing a job in one statement (SQLite runs the
//! shared transaction here) and claiming a sign job with its execution in one statement, on its
//! own or with a push completion (SQLite reads it after the claim, and claims after completing).

use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use super::dialect::{Clock, Db, On, Query, Row, Tx, with_conn};
use super::rows::{self, ArtifactRow, ExecutionRow};
use super::*;

/// A [`Store`] over a PostgreSQL or SQLite database.
pub struct SqlStore {
    db: Db,
    /// When stopped jobs were last looked for ([`SqlStore::bury_stopped_jobs`]), shared with
    /// this store's sessions.
    buried_at: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// While claims keep finding work, stopped jobs are looked for at most this often: they cannot
/// be claimed anyway (the claim skips them), so burying them only makes them visible as dead,
/// and a probe per claim was a round trip per job.
const BURY_EVERY: Duration = Duration::from_secs(5);

impl SqlStore {
    /// The rows of a summary page's query ([`sql::execution_summaries_where`]).
    async fn summaries(&self, q: Query<'_>) -> Result<Vec<ExecutionSummary>, StoreError> {
        self.db
            .fetch_all(On::Read, q)
            .await?
            .iter()
            .map(summary)
            .collect()
    }

    /// Connect to PostgreSQL at a `postgres://` URL.
    pub async fn postgres(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            db: postgres::connect(url, max_connections, acquire_timeout).await?,
            buried_at: Arc::default(),
        })
    }

    /// Open (creating if missing) the SQLite database at a `sqlite:` URL.
    pub async fn sqlite(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            db: sqlite::connect(url, max_connections, acquire_timeout).await?,
            buried_at: Arc::default(),
        })
    }

    async fn execution_on(&self, on: On, id: ExecutionId) -> Result<Option<Execution>, StoreError> {
        let q = Query::new(&self.db.sql().execution_by_id).bind(id.0);
        Ok(joined(self.db.fetch_all(on, q).await?)?.pop())
    }

    /// The executions of `rows` with their artifacts (fetched in one query).
    async fn load(&self, on: On, rows: Vec<ExecutionRow>) -> Result<Vec<Execution>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let mut q = Query::dynamic(sql::artifacts_of());
        self.db.push_in(&mut q, "execution_id", &ids);
        let artifacts = self
            .db
            .fetch_all(on, q)
            .await?
            .iter()
            .map(artifact_row)
            .collect::<Result<Vec<_>, _>>()?;
        rows::assemble(rows, artifacts)
    }

    /// What recording `new` gave, once committed: created, or for an idempotency key already
    /// recorded (`existing`: its id and request hash) a redelivery or a conflict.
    async fn recorded(
        &self,
        new: NewExecution,
        existing: Option<(Uuid, String)>,
    ) -> Result<Recorded, StoreError> {
        let Some((id, hash)) = existing else {
            return Ok(Recorded::Created(match self.db {
                // PostgreSQL keeps the times as given; SQLite's record is read back, with the
                // milliseconds it stores.
                Db::Postgres(_) => Execution::recorded(&new),
                Db::Sqlite { .. } => self
                    .execution_on(On::Write, new.id)
                    .await?
                    .ok_or(StoreError::NotFound)?,
            }));
        };
        if hash != new.request_sha256 {
            return Err(super::conflict(&new.build));
        }
        let execution = self
            .execution_on(On::Write, ExecutionId(id))
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(Recorded::Existing(execution))
    }

    /// Run a claim statement (`$1` owner, `$2` token, `$3` max reclaims, `$4` max attempts,
    /// `$5` lease, `$6` now), burying stopped jobs when they are due to be looked for: every
    /// [`BURY_EVERY`] while claims find work, and whenever one finds none.
    async fn claim(
        &self,
        owner: &str,
        leasing: &Leasing,
        statement: &'static str,
    ) -> Result<Vec<Row>, StoreError> {
        let due = self.bury_due();
        if due {
            self.bury(leasing).await?;
        }
        let now = OffsetDateTime::now_utc();
        let rows = self
            .db
            .fetch_all(
                On::Write,
                Query::new(statement)
                    .bind(owner)
                    .bind(Uuid::new_v4())
                    .bind(i64::from(leasing.max_reclaims))
                    .bind(i64::from(leasing.max_attempts))
                    .bind(Clock::Later(now, Some(leasing.lease)))
                    .bind(Clock::Now(now)),
            )
            .await?;
        // Idle: a stopped job may be what is left; bury it now rather than at the next probe.
        if rows.is_empty() && !due {
            self.bury(leasing).await?;
        }
        Ok(rows)
    }

    /// Whether stopped jobs are due to be looked for ([`BURY_EVERY`]).
    fn bury_due(&self) -> bool {
        self.buried_at
            .lock()
            .map(|at| at.is_none_or(|at| at.elapsed() >= BURY_EVERY))
            .unwrap_or(true)
    }

    /// Mark dead the jobs whose lease expired once too often ([`stopped_for_good`]), with the
    /// reason on the job, its artifact and its execution. A cheap probe comes first (on a SQLite
    /// reader): usually there is none, and no transaction is opened.
    async fn bury(&self, leasing: &Leasing) -> Result<(), StoreError> {
        self.bury_stopped_jobs(leasing).await?;
        if let Ok(mut at) = self.buried_at.lock() {
            *at = Some(std::time::Instant::now());
        }
        Ok(())
    }

    async fn bury_stopped_jobs(&self, leasing: &Leasing) -> Result<(), StoreError> {
        let sql = self.db.sql();
        let stopped = |sql: &'static str| {
            Query::new(sql)
                .bind(i64::from(leasing.max_reclaims))
                .bind(i64::from(leasing.max_attempts))
                .bind(Clock::Now(OffsetDateTime::now_utc()))
        };
        for _ in 0..16 {
            let probe = self
                .db
                .fetch_optional(On::Read, stopped(&sql.stopped_jobs))
                .await?;
            if probe.is_none() {
                return Ok(());
            }
            let mut tx = self.db.begin().await?;
            let Some(row) = tx.fetch_optional(stopped(&sql.stopped_jobs_locked)).await? else {
                return Ok(());
            };
            let job = job_row(&row)?;
            let reclaims: i32 = row.get("reclaims")?;
            let Some(reason) = stopped_for_good(reclaims, job.attempts, leasing) else {
                return Ok(());
            };
            fail_in(&mut tx, &job, &reason, None).await?;
            tx.commit().await?;
            tracing::warn!(job.id = job.id, execution.id = %job.execution_id, reason = %reason, "job is dead");
        }
        Ok(())
    }

    /// The one `bytea`/`BLOB` column `sql` selects for an execution; `None` if either is missing.
    async fn bytes(
        &self,
        sql: &'static str,
        id: ExecutionId,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row = self
            .db
            .fetch_optional(On::Read, Query::new(sql).bind(id.0))
            .await?;
        Ok(row
            .map(|r| r.get::<Option<Vec<u8>>, _>(0))
            .transpose()?
            .flatten())
    }
}

/// Finish a leased job inside the caller's transaction.
async fn finish_job(tx: &mut Tx, job: &Job, now: OffsetDateTime) -> Result<(), StoreError> {
    let done = tx
        .execute(
            Query::new(sql::FINISH_JOB)
                .bind(job.id)
                .bind(job.lease_token)
                .bind(now),
        )
        .await?;
    if done == 0 {
        return Err(StoreError::LeaseLost(job.id));
    }
    Ok(())
}

/// Record a failed attempt inside the caller's transaction: the job is queued again
/// `retry_in` from now, or dead; a push job's artifact and the execution show the error.
/// One statement on PostgreSQL; SQLite's steps here.
async fn fail_in(
    tx: &mut Tx,
    job: &Job,
    error: &str,
    retry_in: Option<Duration>,
) -> Result<(), StoreError> {
    if let Tx::Postgres(pg) = tx {
        return postgres::fail_job(pg, job, error, retry_in).await;
    }
    let now = OffsetDateTime::now_utc();
    let retry_at = Clock::Later(now, retry_in);
    let updated = tx
        .execute(
            Query::new(sqlite::FAIL_JOB)
                .bind(job.id)
                .bind(job.lease_token)
                .bind(retry_at)
                .bind(error)
                .bind(job.attempts)
                .bind(Clock::Now(now)),
        )
        .await?;
    if updated == 0 {
        return Err(StoreError::LeaseLost(job.id));
    }
    if job.kind == JobKind::Push {
        tx.execute(
            Query::new(sqlite::FAIL_ARTIFACT)
                .bind(job.execution_id.0)
                .bind(job.artifact_position)
                .bind(retry_at)
                .bind(job.attempts)
                .bind(error),
        )
        .await?;
    }
    tx.execute(
        Query::new(sql::SET_LAST_ERROR)
            .bind(job.execution_id.0)
            .bind(error),
    )
    .await?;
    refresh_state(tx, job.execution_id.0).await
}

/// Recompute the execution's attestation state inside the caller's transaction.
async fn refresh_state(tx: &mut Tx, id: Uuid) -> Result<(), StoreError> {
    tx.execute(Query::new(sql::REFRESH_STATE).bind(id)).await?;
    Ok(())
}

/// An execution from the row's first [`rows::EXECUTION_COLUMNS`], read by position (a page is
/// 50 rows of 21 columns: no lookup of each name).
fn execution_row(r: &Row) -> Result<ExecutionRow, sqlx::Error> {
    Ok(ExecutionRow {
        id: r.get(0)?,
        account_id: r.get(1)?,
        pipeline_execution_id: r.get(2)?,
        pipeline_identifier: r.get(3)?,
        repository_url: r.get(4)?,
        branch: r.get(5)?,
        commit_sha: r.get(6)?,
        trigger_type: r.get(7)?,
        triggered_by: r.get(8)?,
        builder_id: r.get(9)?,
        builder_version: r.json(10)?,
        started_on: r.time(11)?,
        finished_on: r.time(12)?,
        status: r.get(13)?,
        received_at: r.time(14)?,
        attestation_state: r.get(15)?,
        key_id: r.get(16)?,
        signed_at: r.opt_time(17)?,
        attested_at: r.opt_time(18)?,
        last_error: r.get(19)?,
        signed_by: r.get(20)?,
    })
}

fn artifact_row(r: &Row) -> Result<ArtifactRow, sqlx::Error> {
    artifact_row_at(r, 0)
}

/// An artifact from [`rows::ARTIFACT_NAMES`]' columns, read by position from the row's column
/// `at` on (0, or [`rows::EXECUTION_COLUMN_COUNT`] in a joined row).
fn artifact_row_at(r: &Row, at: usize) -> Result<ArtifactRow, sqlx::Error> {
    Ok(ArtifactRow {
        execution_id: r.get(at)?,
        position: r.get(at + 1)?,
        registry: r.get(at + 2)?,
        repository: r.get(at + 3)?,
        tag: r.get(at + 4)?,
        digest: r.get(at + 5)?,
        push_state: r.get(at + 6)?,
        push_attempts: r.get(at + 7)?,
        next_attempt_at: r.opt_time(at + 8)?,
        last_error: r.get(at + 9)?,
        pushed_reference: r.get(at + 10)?,
        manifest_digest: r.get(at + 11)?,
        pushed_at: r.opt_time(at + 12)?,
        resolved_at: r.opt_time(at + 13)?,
        pushed_by: r.get(at + 14)?,
    })
}

/// Append `f`'s filters, order and limit to a page select ([`sql::executions_where`] or
/// [`sql::execution_summaries_where`]).
fn push_page<'a>(q: &mut Query<'a>, f: &'a ExecutionFilter) {
    if let Some(v) = &f.account {
        q.push(" AND account_id = ").push_bind(v.as_str());
    }
    if let Some(v) = &f.pipeline {
        q.push(" AND pipeline_identifier = ").push_bind(v);
    }
    if let Some(v) = &f.repository {
        q.push(" AND repository_url = ").push_bind(v);
    }
    if let Some(v) = &f.branch {
        q.push(" AND branch = ").push_bind(v);
    }
    if let Some(v) = &f.commit {
        q.push(" AND commit_sha = ").push_bind(v);
    }
    if let Some(v) = f.status {
        q.push(" AND status = ").push_bind(v.as_str());
    }
    if let Some(v) = f.attestation {
        q.push(" AND attestation_state = ").push_bind(v.as_str());
    }
    if let Some(v) = f.started_after {
        q.push(" AND started_on >= ").push_bind(v);
    }
    if let Some(v) = f.started_before {
        q.push(" AND started_on < ").push_bind(v);
    }
    if let Some(v) = f.finished_after {
        q.push(" AND finished_on >= ").push_bind(v);
    }
    if let Some(v) = f.finished_before {
        q.push(" AND finished_on < ").push_bind(v);
    }
    if let Some(after) = f.after {
        q.push(if f.ascending {
            " AND id > "
        } else {
            " AND id < "
        })
        .push_bind(after.0);
    }
    q.push(if f.ascending {
        " ORDER BY id ASC"
    } else {
        " ORDER BY id DESC"
    });
    // The limit is written into the text, not bound: with `LIMIT $n` PostgreSQL cannot cost
    // a generic plan and plans every page anew; with the number (an integer, never text
    // from the request) it keeps one plan per filter shape and page size.
    q.push(&format!(" LIMIT {}", f.limit));
}

/// Executions read joined with their artifacts ([`rows::JOINED_COLUMNS`]): one row per artifact
/// (one with NULL artifact columns for an execution without any), executions in query order.
fn joined(rows: Vec<Row>) -> Result<Vec<Execution>, StoreError> {
    let mut executions: Vec<ExecutionRow> = Vec::new();
    let mut artifacts = Vec::with_capacity(rows.len());
    let at = rows::EXECUTION_COLUMN_COUNT;
    for r in &rows {
        let id: Uuid = r.get(0)?;
        if executions.last().is_none_or(|e| e.id != id) {
            executions.push(execution_row(r)?);
        }
        // The artifact's position: NULL in the row of an execution without artifacts.
        if r.get::<Option<i32>, _>(at + 1)?.is_some() {
            artifacts.push(artifact_row_at(r, at)?);
        }
    }
    rows::assemble(executions, artifacts)
}

/// An execution of a summary page with its artifact count.
fn summary(r: &Row) -> Result<ExecutionSummary, StoreError> {
    let count: i64 = r.get(sql::SUMMARY_COUNT_COLUMN)?;
    let count =
        u32::try_from(count).map_err(|_| StoreError::Corrupt(format!("artifact count {count}")))?;
    execution_row(r)?.into_execution(ArtifactCount(count))
}

/// A job from its columns `id, kind, execution_id, artifact_position, attempts, lease_token,
/// lease_owner`, in that order from position `at`.
fn job_row_at(row: &Row, at: usize) -> Result<Job, StoreError> {
    let kind: String = row.get(at + 1)?;
    Ok(Job {
        id: row.get(at)?,
        kind: JobKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("job kind {kind:?}")))?,
        execution_id: ExecutionId(row.get(at + 2)?),
        artifact_position: row.get(at + 3)?,
        attempts: row.get(at + 4)?,
        lease_token: row.get(at + 5)?,
        owner: row.get::<Option<String>, _>(at + 6)?.unwrap_or_default(),
    })
}

/// The job a PostgreSQL claim leased with its read ([`postgres::CLAIM_TO_RUN`]), from its rows:
/// none, or NULL job columns, when there was nothing to claim.
fn claimed(rows: Vec<Row>) -> Result<Option<Claimed>, StoreError> {
    let at = postgres::CLAIM_TO_RUN_JOB_AT;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    if first.get::<Option<i64>, _>(at)?.is_none() {
        return Ok(None);
    }
    let job = job_row_at(first, at)?;
    // The execution's columns are NULL beside a job of another kind or a vanished execution.
    let to_sign = match first.get::<Option<Uuid>, _>(0)? {
        Some(_) => {
            let statement = first.get::<Option<Vec<u8>>, _>("statement")?;
            joined(rows)?.pop().map(|e| (e, statement))
        }
        None => None,
    };
    Ok(Some(Claimed { job, to_sign }))
}

fn job_row(row: &Row) -> Result<Job, StoreError> {
    job_row_at(row, 0)
}

fn signing_key_row(r: &Row) -> Result<SigningKeyRecord, sqlx::Error> {
    Ok(SigningKeyRecord {
        key_id: r.get("key_id")?,
        name: r.get("name")?,
        kind: r.get("kind")?,
        public_key_pem: r.get("public_key_pem")?,
        first_seen_at: r.time("first_seen_at")?,
        last_seen_at: r.time("last_seen_at")?,
    })
}

/// Take the lock `name` for `ttl` if it is free, expired or already `owner`'s.
fn take_lock<'a>(sql: &'static str, name: &'a str, owner: &'a str, ttl: Duration) -> Query<'a> {
    let now = OffsetDateTime::now_utc();
    Query::new(sql)
        .bind(name)
        .bind(owner)
        .bind(Clock::Later(now, Some(ttl)))
        .bind(Clock::Now(now))
}

/// The lock [`take_lock`] took, if it did.
fn taken(row: Option<Row>, name: &str, owner: &str) -> Result<Option<Lock>, StoreError> {
    Ok(row
        .map(|r| r.get::<i64, _>(0))
        .transpose()?
        .map(|token| Lock {
            name: name.to_owned(),
            owner: owner.to_owned(),
            token,
        }))
}

fn lock_query<'a>(sql: &'static str, lock: &'a Lock) -> Query<'a> {
    Query::new(sql)
        .bind(lock.name.as_str())
        .bind(lock.owner.as_str())
        .bind(lock.token)
}

#[async_trait::async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        self.db.backend()
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.db.migrate().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db.execute(On::Read, Query::new(sql::PING)).await?;
        Ok(())
    }

    async fn record_build(&self, new: NewExecution) -> Result<Recorded, StoreError> {
        let existing = self.db.insert_build(&new).await?;
        self.recorded(new, existing).await
    }

    async fn record_builds(&self, batch: Vec<NewExecution>) -> Vec<Result<Recorded, StoreError>> {
        let mut outcomes = Vec::with_capacity(batch.len());
        let results = match batch.len() {
            0 | 1 => Err(None),
            _ => self.db.insert_builds(&batch).await.map_err(Some),
        };
        match results {
            // An unreachable database fails every item the same way; one by one would make
            // each wait for a connection in turn.
            Err(Some(e)) if e.is_unavailable() => {
                let e = e.to_string();
                outcomes.extend(
                    batch
                        .iter()
                        .map(|_| Err(StoreError::Unavailable(e.clone()))),
                );
            }
            Ok(results) => {
                for (new, result) in batch.into_iter().zip(results) {
                    outcomes.push(match result {
                        Ok(existing) => self.recorded(new, existing).await,
                        Err(e) => Err(e),
                    });
                }
            }
            Err(failed) => {
                if let Some(e) = failed {
                    // The batch as a whole failed (on PostgreSQL one bad item fails its whole
                    // statement): record each alone, so a bad item fails alone.
                    tracing::warn!(error = %e, batch.size = batch.len(), "batched insert failed, recording one by one");
                }
                for new in batch {
                    outcomes.push(self.record_build(new).await);
                }
            }
        }
        outcomes
    }

    async fn execution(&self, id: ExecutionId) -> Result<Option<Execution>, StoreError> {
        self.execution_on(On::Read, id).await
    }

    async fn list_executions(&self, f: &ExecutionFilter) -> Result<Vec<Execution>, StoreError> {
        let mut q = Query::dynamic(sql::executions_where());
        push_page(&mut q, f);
        q.push(sql::executions_where_end(f.ascending));
        joined(self.db.fetch_all(On::Read, q).await?)
    }

    async fn list_execution_summaries(
        &self,
        f: &ExecutionFilter,
    ) -> Result<Vec<ExecutionSummary>, StoreError> {
        let mut q = Query::dynamic(sql::execution_summaries_where());
        push_page(&mut q, f);
        q.push(sql::execution_summaries_where_end(f.ascending));
        self.summaries(q).await
    }

    async fn list_execution_ids(
        &self,
        f: &ExecutionFilter,
    ) -> Result<Vec<ExecutionId>, StoreError> {
        let mut q = Query::dynamic(sql::EXECUTION_IDS_WHERE.to_owned());
        push_page(&mut q, f);
        self.db
            .fetch_all(On::Read, q)
            .await?
            .iter()
            .map(|r| Ok(ExecutionId(r.get(0)?)))
            .collect()
    }

    async fn executions_in(&self, ids: &[ExecutionId]) -> Result<Vec<Execution>, StoreError> {
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        let mut q = Query::dynamic(sql::executions_where());
        q.push(" AND ");
        self.db.push_in(&mut q, "id", &ids);
        q.push(sql::executions_where_end(false));
        joined(self.db.fetch_all(On::Read, q).await?)
    }

    async fn execution_summaries_in(
        &self,
        ids: &[ExecutionId],
    ) -> Result<Vec<ExecutionSummary>, StoreError> {
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        let mut q = Query::dynamic(sql::execution_summaries_where());
        q.push(" AND ");
        self.db.push_in(&mut q, "id", &ids);
        q.push(sql::execution_summaries_where_end(false));
        self.summaries(q).await
    }

    async fn statement(&self, id: ExecutionId) -> Result<Option<Vec<u8>>, StoreError> {
        self.bytes(sql::SELECT_STATEMENT, id).await
    }

    async fn execution_with_statement(
        &self,
        id: ExecutionId,
    ) -> Result<Option<(Execution, Option<Vec<u8>>)>, StoreError> {
        let q = Query::new(&self.db.sql().execution_with_statement).bind(id.0);
        let rows = self.db.fetch_all(On::Read, q).await?;
        let statement = match rows.first() {
            Some(row) => row.get::<Option<Vec<u8>>, _>("statement")?,
            None => return Ok(None),
        };
        Ok(joined(rows)?.pop().map(|e| (e, statement)))
    }

    async fn statement_template(&self, id: ExecutionId) -> Result<Option<Vec<u8>>, StoreError> {
        self.bytes(sql::SELECT_STATEMENT_TEMPLATE, id).await
    }

    async fn envelope(&self, id: ExecutionId) -> Result<Option<Vec<u8>>, StoreError> {
        self.bytes(sql::SELECT_ENVELOPE, id).await
    }

    async fn document(
        &self,
        id: ExecutionId,
        which: Document,
    ) -> Result<Option<StoredDocument>, StoreError> {
        let sql = match which {
            Document::Statement => sql::SELECT_STATEMENT_OWNED,
            Document::Envelope => sql::SELECT_ENVELOPE_OWNED,
        };
        let Some(r) = self
            .db
            .fetch_optional(On::Read, Query::new(sql).bind(id.0))
            .await?
        else {
            return Ok(None);
        };
        let corrupt = |what: &str, v: &str| StoreError::Corrupt(format!("{what} {v:?}"));
        let account: String = r.get("account_id")?;
        let status: String = r.get("status")?;
        let attestation: String = r.get("attestation_state")?;
        Ok(Some(StoredDocument {
            account: account
                .parse()
                .map_err(|_| corrupt("account_id", &account))?,
            status: status.parse().map_err(|_| corrupt("status", &status))?,
            attestation: AttestationState::parse(&attestation)
                .ok_or_else(|| corrupt("attestation_state", &attestation))?,
            bytes: r.get("bytes")?,
        }))
    }

    async fn executions_by_digest(
        &self,
        digest: &Digest,
        account: Option<&AccountId>,
    ) -> Result<Vec<DigestMatch>, StoreError> {
        let hits = self
            .db
            .fetch_all(
                On::Read,
                Query::new(&self.db.sql().digest_hits)
                    .bind(digest.as_str())
                    .bind(account.map(AccountId::as_str)),
            )
            .await?
            .iter()
            .map(|r| Ok((r.get("execution_id")?, r.get("position")?)))
            .collect::<Result<Vec<(Uuid, i32)>, sqlx::Error>>()?;
        if hits.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = hits.iter().map(|(id, _)| *id).collect();
        let mut q = Query::dynamic(sql::executions_of());
        self.db.push_in(&mut q, "id", &ids);
        let rows = self
            .db
            .fetch_all(On::Read, q)
            .await?
            .iter()
            .map(execution_row)
            .collect::<Result<Vec<_>, _>>()?;
        let executions = self.load(On::Read, rows).await?;
        Ok(super::match_digest_hits(hits, executions))
    }

    async fn stats(
        &self,
        account: Option<&AccountId>,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Stats, StoreError> {
        let sql = self.db.sql();
        let account = account.map(AccountId::as_str);
        let window = |sql: &'static str| {
            Query::new(sql)
                .bind(ExecutionId::lower_bound(from))
                .bind(ExecutionId::lower_bound(to))
                .bind(account)
        };
        let daily = self
            .db
            .fetch_all(On::Read, window(&sql.stats_daily))
            .await?
            .iter()
            .map(|r| {
                Ok(DailyCount {
                    day: r.get(0)?,
                    status: r.get(1)?,
                    attestation: r.get(2)?,
                    count: r.get(3)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let per_day = self
            .db
            .fetch_all(On::Read, window(&sql.stats_seconds))
            .await?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .collect::<Result<Vec<(String, f64)>, sqlx::Error>>()?;
        let errors = self
            .db
            .fetch_all(On::Read, window(&sql.stats_failures))
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect::<Result<Vec<Option<String>>, sqlx::Error>>()?;
        let backlog = self
            .db
            .fetch_all(On::Read, Query::new(&sql.stats_backlog).bind(account))
            .await?
            .iter()
            .map(|r| {
                Ok(BacklogCount {
                    kind: r.get(0)?,
                    state: r.get(1)?,
                    count: r.get(2)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Stats {
            daily,
            time_to_attest: super::time_to_attest(per_day.iter().map(|(_, s)| *s).collect()),
            time_to_attest_daily: super::time_to_attest_by_day(per_day),
            failures: super::failures_by_reason(errors),
            backlog,
        })
    }

    async fn record_verification(&self, v: &NewVerification) -> Result<(), StoreError> {
        let policies = v.policies.join(",");
        self.db
            .execute(
                On::Write,
                Query::new(sql::INSERT_VERIFICATION)
                    .bind(v.execution_id.0)
                    .bind(v.image.as_str())
                    .bind(v.digest.as_str())
                    .bind(v.verified)
                    .bind(v.allowed)
                    .bind(policies.as_str())
                    .bind(v.reason_code.as_deref())
                    .bind(v.reason.as_deref())
                    .bind(&v.report)
                    .bind(OffsetDateTime::now_utc()),
            )
            .await?;
        Ok(())
    }

    async fn verifications(&self, id: ExecutionId) -> Result<Vec<VerificationRecord>, StoreError> {
        let rows = self
            .db
            .fetch_all(On::Read, Query::new(sql::SELECT_VERIFICATIONS).bind(id.0))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(VerificationRecord {
                    image: r.get("image")?,
                    digest: r.get("digest")?,
                    verified: r.get("verified")?,
                    allowed: r.get("allowed")?,
                    policies: super::split_policies(r.get("policies")?),
                    reason_code: r.get("reason_code")?,
                    reason: r.get("reason")?,
                    verified_at: r.time("created_at")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn remember_signing_key(&self, key: &NewSigningKey) -> Result<(), StoreError> {
        self.db
            .execute(
                On::Write,
                Query::new(sql::REMEMBER_SIGNING_KEY)
                    .bind(&key.key_id)
                    .bind(&key.name)
                    .bind(&key.kind)
                    .bind(&key.public_key_pem)
                    .bind(OffsetDateTime::now_utc()),
            )
            .await?;
        Ok(())
    }

    async fn signing_key(&self, key_id: &str) -> Result<Option<SigningKeyRecord>, StoreError> {
        let row = self
            .db
            .fetch_optional(On::Read, Query::new(sql::SELECT_SIGNING_KEY).bind(key_id))
            .await?;
        Ok(row.as_ref().map(signing_key_row).transpose()?)
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let rows = self
            .db
            .fetch_all(On::Read, Query::new(sql::SELECT_SIGNING_KEYS))
            .await?;
        Ok(rows
            .iter()
            .map(signing_key_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    async fn claim_job(&self, owner: &str, leasing: &Leasing) -> Result<Option<Job>, StoreError> {
        let rows = self.claim(owner, leasing, &self.db.sql().claim_job).await?;
        rows.first().map(job_row).transpose()
    }

    async fn claim_job_to_run(
        &self,
        owner: &str,
        leasing: &Leasing,
    ) -> Result<Option<Claimed>, StoreError> {
        if !matches!(self.db, Db::Postgres(_)) {
            let Some(job) = self.claim_job(owner, leasing).await? else {
                return Ok(None);
            };
            let to_sign = match job.kind {
                JobKind::Sign => self.execution_with_statement(job.execution_id).await?,
                _ => None,
            };
            return Ok(Some(Claimed { job, to_sign }));
        }
        let rows = self.claim(owner, leasing, &postgres::CLAIM_TO_RUN).await?;
        claimed(rows)
    }

    async fn complete_push_and_claim(
        &self,
        job: &Job,
        record: &PushRecord,
        lock: Option<&Lock>,
        owner: &str,
        leasing: &Leasing,
    ) -> Result<(Option<Duration>, Option<Claimed>), StoreError> {
        let Db::Postgres(pg) = &self.db else {
            let attested = self.complete_push(job, record, lock).await?;
            return Ok((attested, self.claim_job_to_run(owner, leasing).await?));
        };
        let (attested, rows) = with_conn!(pg, |c| postgres::complete_push_and_claim(
            &mut c, job, record, lock, owner, leasing
        )
        .await)?;
        let claimed = claimed(rows.into_iter().map(Row::Postgres).collect())?;
        // Burying stopped jobs comes after the completion here: it is housekeeping, and its
        // failure must neither undo a completed push nor strand the job just claimed.
        if (claimed.is_none() || self.bury_due())
            && let Err(e) = self.bury(leasing).await
        {
            tracing::warn!(error = %e, "looking for stopped jobs failed; the next claim looks again");
        }
        Ok((attested, claimed))
    }

    async fn renew_lease(&self, job: &Job, lease: Duration) -> Result<bool, StoreError> {
        let renewed = self
            .db
            .execute(
                On::Write,
                Query::new(&self.db.sql().renew_lease)
                    .bind(job.id)
                    .bind(job.lease_token)
                    .bind(Clock::Later(OffsetDateTime::now_utc(), Some(lease))),
            )
            .await?;
        Ok(renewed == 1)
    }

    async fn complete_resolve(
        &self,
        job: &Job,
        digests: &[(i32, Digest)],
        statement: &[u8],
    ) -> Result<(), StoreError> {
        if let Db::Postgres(pg) = &self.db {
            return with_conn!(pg, |c| postgres::complete_resolve(
                &mut c, job, digests, statement
            )
            .await);
        }
        let now = OffsetDateTime::now_utc();
        let id = job.execution_id.0;
        let mut tx = self.db.begin().await?;
        finish_job(&mut tx, job, now).await?;
        for (position, digest) in digests {
            tx.execute(
                Query::new(sql::MARK_RESOLVED)
                    .bind(id)
                    .bind(*position)
                    .bind(digest.as_str())
                    .bind(now),
            )
            .await?;
        }
        let unresolved: i64 = tx
            .fetch_one(Query::new(sql::COUNT_RESOLVING).bind(id))
            .await?
            .get(0)?;
        let stored = tx
            .execute(
                Query::new(sql::STORE_RESOLVED_STATEMENT)
                    .bind(id)
                    .bind(statement),
            )
            .await?;
        if unresolved != 0 || stored != 1 {
            return Err(super::unresolvable(job, unresolved));
        }
        tx.execute(Query::new(sql::QUEUE_SIGN_JOB).bind(id).bind(now))
            .await?;
        refresh_state(&mut tx, id).await?;
        tx.commit().await
    }

    async fn complete_sign(
        &self,
        job: &Job,
        envelope: &[u8],
        key_id: &str,
        hand_off: Option<HandOff<'_>>,
    ) -> Result<Signed, StoreError> {
        if let Db::Postgres(pg) = &self.db {
            return with_conn!(pg, |c| postgres::complete_sign(
                &mut c, job, envelope, key_id, hand_off
            )
            .await);
        }
        let now = OffsetDateTime::now_utc();
        let id = job.execution_id.0;
        let mut tx = self.db.begin().await?;
        // The sign job's row becomes the handed push job, or the sign job is done.
        let mut push = None;
        if let Some(h) = hand_off {
            push = tx
                .fetch_optional(
                    Query::new(sqlite::HAND_OVER)
                        .bind(job.id)
                        .bind(job.lease_token)
                        .bind(&job.owner)
                        .bind(Uuid::new_v4())
                        .bind(Clock::Later(now, Some(h.lease)))
                        .bind(h.position),
                )
                .await?
                .as_ref()
                .map(job_row)
                .transpose()?;
        }
        if push.is_none() {
            finish_job(&mut tx, job, now).await?;
        }
        let stored: Vec<u8> = tx
            .fetch_one(
                Query::new(sql::STORE_ENVELOPE)
                    .bind(id)
                    .bind(envelope)
                    .bind(key_id)
                    .bind(now)
                    .bind(&job.owner),
            )
            .await?
            .get(0)?;
        let mut lock = None;
        if let (Some(h), Some(_)) = (hand_off, &push) {
            let q = take_lock(&self.db.sql().try_lock, h.lock, &job.owner, h.lock_ttl);
            lock = taken(tx.fetch_optional(q).await?, h.lock, &job.owner)?;
        }
        let queued = tx
            .execute(Query::new(sql::QUEUE_PUSH_JOBS).bind(id).bind(now))
            .await?;
        refresh_state(&mut tx, id).await?;
        tx.commit().await?;
        Ok(Signed {
            envelope: stored,
            push,
            lock,
            queued,
        })
    }

    async fn complete_push(
        &self,
        job: &Job,
        record: &PushRecord,
        lock: Option<&Lock>,
    ) -> Result<Option<Duration>, StoreError> {
        if let Db::Postgres(pg) = &self.db {
            return with_conn!(pg, |c| postgres::complete_push(&mut c, job, record, lock)
                .await);
        }
        let now = OffsetDateTime::now_utc();
        let id = job.execution_id.0;
        let mut tx = self.db.begin().await?;
        if let Some(lock) = lock {
            tx.execute(lock_query(&self.db.sql().unlock, lock).bind(Clock::Now(now)))
                .await?;
        }
        finish_job(&mut tx, job, now).await?;
        tx.execute(
            Query::new(sql::MARK_PUSHED)
                .bind(id)
                .bind(job.artifact_position)
                .bind(job.attempts)
                .bind(&record.reference)
                .bind(&record.manifest_digest)
                .bind(now)
                .bind(&job.owner),
        )
        .await?;
        refresh_state(&mut tx, id).await?;
        let attested = tx
            .fetch_optional(Query::new(sql::MARK_ATTESTED).bind(id).bind(now))
            .await?;
        tx.commit().await?;
        let received = attested.map(|row| row.time("received_at")).transpose()?;
        Ok(received.map(|r| attestation_delay(r, now)))
    }

    async fn fail_job(
        &self,
        job: &Job,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<(), StoreError> {
        if let Db::Postgres(pg) = &self.db {
            return with_conn!(pg, |c| postgres::fail_job(&mut c, job, error, retry_in)
                .await);
        }
        let mut tx = self.db.begin().await?;
        fail_in(&mut tx, job, error, retry_in).await?;
        tx.commit().await
    }

    async fn release_job(&self, job: &Job) -> Result<(), StoreError> {
        self.db
            .execute(
                On::Write,
                Query::new(sql::RELEASE_JOB)
                    .bind(job.id)
                    .bind(job.lease_token)
                    .bind(OffsetDateTime::now_utc()),
            )
            .await?;
        Ok(())
    }

    async fn retry_execution(&self, id: ExecutionId) -> Result<u64, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut tx = self.db.begin().await?;
        let requeued = tx
            .execute(Query::new(sql::REQUEUE_JOBS).bind(id.0).bind(now))
            .await?;
        tx.execute(Query::new(sql::RESET_ARTIFACTS).bind(id.0))
            .await?;
        tx.execute(Query::new(sql::CLEAR_LAST_ERROR).bind(id.0))
            .await?;
        refresh_state(&mut tx, id.0).await?;
        tx.commit().await?;
        Ok(requeued)
    }

    async fn unfinished_jobs(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .db
            .fetch_one(On::Write, Query::new(sql::COUNT_UNFINISHED_JOBS))
            .await?
            .get(0)?;
        Ok(n as u64)
    }

    async fn job_counts(&self) -> Result<Vec<JobCount>, StoreError> {
        self.db
            .fetch_all(On::Read, Query::new(sql::COUNT_JOBS_BY_KIND_AND_STATE))
            .await?
            .iter()
            .map(|r| {
                Ok(JobCount {
                    kind: r.get("kind")?,
                    state: r.get("state")?,
                    count: u64::try_from(r.get::<i64, _>("n")?).unwrap_or(0),
                })
            })
            .collect()
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        self.db.pool_stats()
    }

    fn session(&self) -> Option<DynStore> {
        match &self.db {
            Db::Postgres(pg) => Some(Arc::new(SqlStore {
                db: Db::Postgres(pg.session()),
                buried_at: Arc::clone(&self.buried_at),
            })),
            Db::Sqlite { .. } => None,
        }
    }

    async fn try_lock(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lock>, StoreError> {
        let q = take_lock(&self.db.sql().try_lock, name, owner, ttl);
        taken(self.db.fetch_optional(On::Write, q).await?, name, owner)
    }

    async fn renew_lock(&self, lock: &Lock, ttl: Duration) -> Result<bool, StoreError> {
        let q = lock_query(&self.db.sql().renew_lock, lock)
            .bind(Clock::Later(OffsetDateTime::now_utc(), Some(ttl)));
        Ok(self.db.execute(On::Write, q).await? == 1)
    }

    async fn holds_lock(&self, lock: &Lock) -> Result<bool, StoreError> {
        // On SQLite's writer: the fence must see the latest take-over, not a reader's snapshot.
        let q =
            lock_query(&self.db.sql().holds_lock, lock).bind(Clock::Now(OffsetDateTime::now_utc()));
        Ok(self.db.fetch_one(On::Write, q).await?.get(0)?)
    }

    async fn unlock(&self, lock: &Lock) -> Result<(), StoreError> {
        let q = lock_query(&self.db.sql().unlock, lock).bind(Clock::Now(OffsetDateTime::now_utc()));
        self.db.execute(On::Write, q).await?;
        Ok(())
    }

    async fn prune(&self, age: Duration, limit: u32) -> Result<Pruned, StoreError> {
        // Each bounded DELETE is short (SQLite: holds the single writer for milliseconds; claims
        // run in between).
        let sql = self.db.sql();
        let before = Clock::Earlier(OffsetDateTime::now_utc(), age);
        let prune = |sql: &'static str| Query::new(sql).bind(before).bind(i64::from(limit));
        let jobs = self.db.execute(On::Write, prune(&sql.prune_jobs)).await?;
        let locks = self.db.execute(On::Write, prune(&sql.prune_locks)).await?;
        Ok(Pruned { jobs, locks })
    }
}
