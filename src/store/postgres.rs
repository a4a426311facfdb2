//! PostgreSQL store: the production backend, shared by any number of stateless replicas.
//! Job claims use `FOR UPDATE SKIP LOCKED`, so two workers never lease the same job.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::rows::{self, ARTIFACT_COLUMNS, ArtifactRow, EXECUTION_COLUMNS, ExecutionRow};
use super::sql;
use super::*;

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?.application_name("attestd");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    async fn load(
        &self,
        ids: &[Uuid],
        rows: Vec<ExecutionRow>,
    ) -> Result<Vec<Execution>, StoreError> {
        let artifacts = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE execution_id = ANY($1)"
        )))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(artifact_row)
        .collect::<Result<Vec<_>, _>>()?;
        rows::assemble(rows, artifacts)
    }

    /// Mark dead the jobs whose lease expired once too often ([`stopped_for_good`]), with the
    /// reason on the job, its artifact and its execution. A cheap probe comes first: usually
    /// there is none, and no transaction is opened.
    async fn bury_stopped_jobs(&self, leasing: &Leasing) -> Result<(), StoreError> {
        const STOPPED: &str = "SELECT id, kind, execution_id, artifact_position, attempts, \
            lease_token, reclaims FROM jobs WHERE state = 'running' AND lease_expires_at <= now() \
            AND (reclaims >= $1 OR attempts >= $2) ORDER BY lease_expires_at, id LIMIT 1";
        for _ in 0..16 {
            let probe = sqlx::query(STOPPED)
                .bind(i64::from(leasing.max_reclaims))
                .bind(i64::from(leasing.max_attempts))
                .fetch_optional(&self.pool)
                .await?;
            if probe.is_none() {
                return Ok(());
            }
            let mut tx = self.pool.begin().await?;
            let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!(
                "{STOPPED} FOR UPDATE SKIP LOCKED"
            )))
            .bind(i64::from(leasing.max_reclaims))
            .bind(i64::from(leasing.max_attempts))
            .fetch_optional(&mut *tx)
            .await?
            else {
                return Ok(());
            };
            let job = job_row(&row)?;
            let reclaims: i32 = row.try_get("reclaims")?;
            let Some(reason) = stopped_for_good(reclaims, job.attempts, leasing) else {
                return Ok(());
            };
            fail_in(&mut tx, &job, &reason, None).await?;
            tx.commit().await?;
            tracing::warn!(job.id = job.id, execution.id = %job.execution_id, reason = %reason, "job is dead");
        }
        Ok(())
    }

    async fn finish_job<'c>(
        tx: &mut sqlx::Transaction<'c, Postgres>,
        job: &Job,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(sql::FINISH_JOB)
            .bind(job.id)
            .bind(job.lease_token)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::LeaseLost(job.id));
        }
        Ok(())
    }
}

fn execution_row(r: &sqlx::postgres::PgRow) -> Result<ExecutionRow, sqlx::Error> {
    let Json(builder_version): Json<BTreeMap<String, String>> = r.try_get("builder_version")?;
    Ok(ExecutionRow {
        id: r.try_get("id")?,
        account_id: r.try_get("account_id")?,
        pipeline_execution_id: r.try_get("pipeline_execution_id")?,
        pipeline_identifier: r.try_get("pipeline_identifier")?,
        repository_url: r.try_get("repository_url")?,
        branch: r.try_get("branch")?,
        commit_sha: r.try_get("commit_sha")?,
        trigger_type: r.try_get("trigger_type")?,
        triggered_by: r.try_get("triggered_by")?,
        builder_id: r.try_get("builder_id")?,
        builder_version,
        started_on: r.try_get("started_on")?,
        finished_on: r.try_get("finished_on")?,
        status: r.try_get("status")?,
        received_at: r.try_get("received_at")?,
        attestation_state: r.try_get("attestation_state")?,
        key_id: r.try_get("key_id")?,
        signed_at: r.try_get("signed_at")?,
        attested_at: r.try_get("attested_at")?,
        last_error: r.try_get("last_error")?,
    })
}

fn artifact_row(r: &sqlx::postgres::PgRow) -> Result<ArtifactRow, sqlx::Error> {
    Ok(ArtifactRow {
        execution_id: r.try_get("execution_id")?,
        position: r.try_get("position")?,
        registry: r.try_get("registry")?,
        repository: r.try_get("repository")?,
        tag: r.try_get("tag")?,
        digest: r.try_get("digest")?,
        push_state: r.try_get("push_state")?,
        push_attempts: r.try_get("push_attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_error: r.try_get("last_error")?,
        pushed_reference: r.try_get("pushed_reference")?,
        manifest_digest: r.try_get("manifest_digest")?,
        pushed_at: r.try_get("pushed_at")?,
    })
}

#[async_trait::async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query(sql::PING).execute(&self.pool).await?;
        Ok(())
    }

    async fn record_build(&self, new: NewExecution) -> Result<Recorded, StoreError> {
        let b = &new.build;
        let succeeded = b.status == BuildStatus::Succeeded;
        let state = if succeeded { "pending" } else { "skipped" };
        // One statement, so one round trip and one implicit transaction: the execution, its
        // artifacts and (for a successful build) its sign job, or nothing on a conflict.
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "WITH e AS ( \
                INSERT INTO executions (id, account_id, pipeline_execution_id, pipeline_identifier, \
                    repository_url, branch, commit_sha, trigger_type, triggered_by, builder_id, \
                    builder_version, started_on, finished_on, status, request_sha256, received_at, \
                    statement, attestation_state) \
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
                ON CONFLICT (account_id, pipeline_execution_id) DO NOTHING RETURNING id), \
             a AS ( \
                INSERT INTO artifacts (execution_id, position, registry, repository, tag, digest, push_state) \
                SELECT e.id, u.position, u.registry, u.repository, u.tag, u.digest, $18 FROM e, \
                    unnest($19::int[], $20::text[], $21::text[], $22::text[], $23::text[]) \
                    AS u(position, registry, repository, tag, digest)), \
             j AS ( \
                INSERT INTO jobs (kind, execution_id, state, run_after, created_at, updated_at) \
                SELECT 'sign', e.id, 'queued', $16, $16, $16 FROM e WHERE $24) \
             SELECT id FROM e",
        )
        .bind(new.id.0)
        .bind(b.account.as_str())
        .bind(&b.pipeline_execution_id)
        .bind(&b.pipeline_identifier)
        .bind(&b.repository_url)
        .bind(&b.branch)
        .bind(&b.commit_sha)
        .bind(&b.trigger_type)
        .bind(&b.triggered_by)
        .bind(&b.builder_id)
        .bind(Json(&b.builder_version))
        .bind(b.started_on)
        .bind(b.finished_on)
        .bind(b.status.as_str())
        .bind(&new.request_sha256)
        .bind(new.received_at)
        .bind(new.statement.as_deref())
        .bind(state)
        .bind((0..b.artifacts.len() as i32).collect::<Vec<_>>())
        .bind(b.artifacts.iter().map(|a| a.image.registry.as_str()).collect::<Vec<_>>())
        .bind(b.artifacts.iter().map(|a| a.image.repository.as_str()).collect::<Vec<_>>())
        .bind(b.artifacts.iter().map(|a| a.image.tag.as_deref()).collect::<Vec<_>>())
        .bind(b.artifacts.iter().map(|a| a.digest.as_str()).collect::<Vec<_>>())
        .bind(succeeded)
        .fetch_optional(&self.pool)
        .await?;
        if inserted.is_some() {
            return Ok(Recorded::Created(Execution::recorded(&new)));
        }
        let existing = sqlx::query(sql::EXISTING_EXECUTION)
            .bind(b.account.as_str())
            .bind(&b.pipeline_execution_id)
            .fetch_one(&self.pool)
            .await?;
        let id: Uuid = existing.try_get("id")?;
        let hash: String = existing.try_get("request_sha256")?;
        if hash != new.request_sha256 {
            return Err(super::conflict(b));
        }
        let execution = self
            .execution(ExecutionId(id))
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(Recorded::Existing(execution))
    }

    async fn execution(&self, id: ExecutionId) -> Result<Option<Execution>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = $1"
        )))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(self.load(&[id.0], vec![execution_row(&row)?]).await?.pop())
    }

    async fn list_executions(&self, f: &ExecutionFilter) -> Result<Vec<Execution>, StoreError> {
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions WHERE TRUE"
        ));
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
        q.push(" LIMIT ").push_bind(i64::from(f.limit));
        let rows = q
            .build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(execution_row)
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        self.load(&ids, rows).await
    }

    async fn statement(&self, id: ExecutionId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(sql::SELECT_STATEMENT)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?
            .flatten())
    }

    async fn envelope(&self, id: ExecutionId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(sql::SELECT_ENVELOPE)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?
            .flatten())
    }

    async fn executions_by_digest(
        &self,
        digest: &Digest,
        account: Option<&AccountId>,
    ) -> Result<Vec<DigestMatch>, StoreError> {
        let hits: Vec<(Uuid, i32)> = sqlx::query_as(
            "SELECT a.execution_id, a.position FROM artifacts a JOIN executions e ON e.id = a.execution_id \
             WHERE a.digest = $1 AND ($2::text IS NULL OR e.account_id = $2) ORDER BY a.execution_id DESC, a.position",
        )
        .bind(digest.as_str())
        .bind(account.map(AccountId::as_str))
        .fetch_all(&self.pool)
        .await?;
        let ids: Vec<Uuid> = hits.iter().map(|(id, _)| *id).collect();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = ANY($1)"
        )))
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(execution_row)
        .collect::<Result<Vec<_>, _>>()?;
        let executions = self.load(&ids, rows).await?;
        Ok(super::match_digest_hits(hits, executions))
    }

    async fn stats(
        &self,
        account: Option<&AccountId>,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Stats, StoreError> {
        let daily = sqlx::query_as::<_, (String, String, String, i64)>(
            "SELECT to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, status, attestation_state, COUNT(*) \
             FROM executions WHERE id >= $1 AND id < $2 AND ($3::text IS NULL OR account_id = $3) \
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        )
        .bind(ExecutionId::lower_bound(from))
        .bind(ExecutionId::lower_bound(to))
        .bind(account.map(AccountId::as_str))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|(day, status, attestation, count)| DailyCount { day, status, attestation, count })
        .collect();
        // percentile_disc is the nearest-rank percentile, the same definition SQLite's path uses.
        let (count, p50, p90, p99, max): (i64, Option<f64>, Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(
            "WITH d AS (SELECT EXTRACT(EPOCH FROM (attested_at - received_at))::float8 AS s FROM executions \
             WHERE id >= $1 AND id < $2 AND ($3::text IS NULL OR account_id = $3) \
             AND attested_at IS NOT NULL) \
             SELECT COUNT(*), percentile_disc(0.5) WITHIN GROUP (ORDER BY s), \
             percentile_disc(0.9) WITHIN GROUP (ORDER BY s), percentile_disc(0.99) WITHIN GROUP (ORDER BY s), MAX(s) FROM d",
        )
        .bind(ExecutionId::lower_bound(from))
        .bind(ExecutionId::lower_bound(to))
        .bind(account.map(AccountId::as_str))
        .fetch_one(&self.pool)
        .await?;
        Ok(Stats {
            daily,
            time_to_attest: TimeToAttest {
                count,
                p50,
                p90,
                p99,
                max,
            },
        })
    }

    async fn record_verification(&self, v: &NewVerification) -> Result<(), StoreError> {
        sqlx::query(sql::INSERT_VERIFICATION)
            .bind(v.execution_id.0)
            .bind(&v.image)
            .bind(v.digest.as_str())
            .bind(v.verified)
            .bind(v.allowed)
            .bind(v.policies.join(","))
            .bind(&v.reason_code)
            .bind(&v.reason)
            .bind(Json(&v.report))
            .bind(OffsetDateTime::now_utc())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn verifications(&self, id: ExecutionId) -> Result<Vec<VerificationRecord>, StoreError> {
        let rows = sqlx::query(sql::SELECT_VERIFICATIONS)
            .bind(id.0)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(VerificationRecord {
                    image: r.try_get("image")?,
                    digest: r.try_get("digest")?,
                    verified: r.try_get("verified")?,
                    allowed: r.try_get("allowed")?,
                    policies: super::split_policies(r.try_get("policies")?),
                    reason_code: r.try_get("reason_code")?,
                    reason: r.try_get("reason")?,
                    verified_at: r.try_get("created_at")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn remember_signing_key(&self, key: &NewSigningKey) -> Result<(), StoreError> {
        sqlx::query(sql::REMEMBER_SIGNING_KEY)
            .bind(&key.key_id)
            .bind(&key.name)
            .bind(&key.kind)
            .bind(&key.public_key_pem)
            .bind(OffsetDateTime::now_utc())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn signing_key(&self, key_id: &str) -> Result<Option<SigningKeyRecord>, StoreError> {
        let row = sqlx::query(sql::SELECT_SIGNING_KEY)
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(signing_key_row).transpose()?)
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let rows = sqlx::query(sql::SELECT_SIGNING_KEYS)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(signing_key_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    async fn claim_job(&self, owner: &str, leasing: &Leasing) -> Result<Option<Job>, StoreError> {
        self.bury_stopped_jobs(leasing).await?;
        let row = sqlx::query(
            // Each subquery walks its own partial index in order and stops at the first row;
            // SKIP LOCKED keeps concurrent claimers off each other's rows. Times are the
            // database's clock, so replicas with skewed clocks agree on what has expired.
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, \
             reclaims = reclaims + CASE WHEN state = 'running' THEN 1 ELSE 0 END, lease_owner = $1, \
             lease_token = $2, lease_expires_at = now() + $3 * interval '1 millisecond', updated_at = now() \
             WHERE id = COALESCE( \
                (SELECT id FROM jobs WHERE state = 'queued' AND run_after <= now() \
                 ORDER BY run_after, id LIMIT 1 FOR UPDATE SKIP LOCKED), \
                (SELECT id FROM jobs WHERE state = 'running' AND lease_expires_at <= now() \
                 AND reclaims < $4 AND attempts < $5 \
                 ORDER BY lease_expires_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)) \
             RETURNING id, kind, execution_id, artifact_position, attempts, lease_token",
        )
        .bind(owner)
        .bind(Uuid::new_v4())
        .bind(millis(leasing.lease))
        .bind(i64::from(leasing.max_reclaims))
        .bind(i64::from(leasing.max_attempts))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(job_row).transpose()
    }

    async fn renew_lease(&self, job: &Job, lease: Duration) -> Result<bool, StoreError> {
        let renewed = sqlx::query(
            "UPDATE jobs SET lease_expires_at = now() + $3 * interval '1 millisecond' \
             WHERE id = $1 AND lease_token = $2 AND state = 'running'",
        )
        .bind(job.id)
        .bind(job.lease_token)
        .bind(millis(lease))
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    async fn complete_sign(
        &self,
        job: &Job,
        envelope: &[u8],
        key_id: &str,
    ) -> Result<Vec<u8>, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut tx = self.pool.begin().await?;
        Self::finish_job(&mut tx, job, now).await?;
        let stored: Vec<u8> = sqlx::query_scalar(sql::STORE_ENVELOPE)
            .bind(job.execution_id.0)
            .bind(envelope)
            .bind(key_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(sql::QUEUE_PUSH_JOBS)
            .bind(job.execution_id.0)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        refresh_state(&mut tx, job.execution_id.0).await?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn complete_push(&self, job: &Job, record: &PushRecord) -> Result<(), StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut tx = self.pool.begin().await?;
        Self::finish_job(&mut tx, job, now).await?;
        sqlx::query(sql::MARK_PUSHED)
            .bind(job.execution_id.0)
            .bind(job.artifact_position)
            .bind(job.attempts)
            .bind(&record.reference)
            .bind(&record.manifest_digest)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        refresh_state(&mut tx, job.execution_id.0).await?;
        sqlx::query(sql::MARK_ATTESTED)
            .bind(job.execution_id.0)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn fail_job(
        &self,
        job: &Job,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        fail_in(&mut tx, job, error, retry_in).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release_job(&self, job: &Job) -> Result<(), StoreError> {
        sqlx::query(sql::RELEASE_JOB)
            .bind(job.id)
            .bind(job.lease_token)
            .bind(OffsetDateTime::now_utc())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn retry_execution(&self, id: ExecutionId) -> Result<u64, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut tx = self.pool.begin().await?;
        let requeued = sqlx::query(sql::REQUEUE_JOBS)
            .bind(id.0)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(sql::RESET_ARTIFACTS)
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query(sql::CLEAR_LAST_ERROR)
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        refresh_state(&mut tx, id.0).await?;
        tx.commit().await?;
        Ok(requeued)
    }

    async fn unfinished_jobs(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(sql::COUNT_UNFINISHED_JOBS)
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn try_lock(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lock>, StoreError> {
        let token: Option<i64> = sqlx::query_scalar(
            "INSERT INTO locks (name, owner, expires_at, token) \
             VALUES ($1, $2, now() + $3 * interval '1 millisecond', 1) \
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, \
             expires_at = excluded.expires_at, token = locks.token + 1 \
             WHERE locks.expires_at <= now() OR locks.owner = excluded.owner RETURNING token",
        )
        .bind(name)
        .bind(owner)
        .bind(millis(ttl))
        .fetch_optional(&self.pool)
        .await?;
        Ok(token.map(|token| Lock {
            name: name.to_owned(),
            owner: owner.to_owned(),
            token,
        }))
    }

    async fn renew_lock(&self, lock: &Lock, ttl: Duration) -> Result<bool, StoreError> {
        let renewed = sqlx::query(
            "UPDATE locks SET expires_at = now() + $4 * interval '1 millisecond' \
             WHERE name = $1 AND owner = $2 AND token = $3",
        )
        .bind(&lock.name)
        .bind(&lock.owner)
        .bind(lock.token)
        .bind(millis(ttl))
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    async fn holds_lock(&self, lock: &Lock) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM locks WHERE name = $1 AND owner = $2 AND token = $3 \
             AND expires_at > now())",
        )
        .bind(&lock.name)
        .bind(&lock.owner)
        .bind(lock.token)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn unlock(&self, lock: &Lock) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE locks SET expires_at = now() \
             WHERE name = $1 AND owner = $2 AND token = $3 AND expires_at > now()",
        )
        .bind(&lock.name)
        .bind(&lock.owner)
        .bind(lock.token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn prune(&self, age: Duration, limit: u32) -> Result<Pruned, StoreError> {
        // Bounded deletes that skip rows someone else has locked: never a long transaction,
        // never a wait on the claim path (which only touches queued and running jobs).
        let jobs = sqlx::query(
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state = 'done' \
             AND updated_at < now() - $1 * interval '1 millisecond' \
             ORDER BY updated_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(millis(age))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?
        .rows_affected();
        let locks = sqlx::query(
            "DELETE FROM locks WHERE name IN (SELECT name FROM locks \
             WHERE expires_at < now() - $1 * interval '1 millisecond' \
             ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(millis(age))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(Pruned { jobs, locks })
    }
}

/// Milliseconds for `now() + $n * interval '1 millisecond'`.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn job_row(row: &sqlx::postgres::PgRow) -> Result<Job, StoreError> {
    let kind: String = row.try_get("kind")?;
    Ok(Job {
        id: row.try_get("id")?,
        kind: JobKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("job kind {kind:?}")))?,
        execution_id: ExecutionId(row.try_get("execution_id")?),
        artifact_position: row.try_get("artifact_position")?,
        attempts: row.try_get("attempts")?,
        lease_token: row.try_get("lease_token")?,
    })
}

/// Record a failed attempt inside the caller's transaction: the job is queued again `retry_in`
/// from now (database clock), or dead; a push job's artifact and the execution show the error.
async fn fail_in(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    job: &Job,
    error: &str,
    retry_in: Option<Duration>,
) -> Result<(), StoreError> {
    let retry_ms = retry_in.map(millis);
    let updated = sqlx::query(
        "UPDATE jobs SET state = CASE WHEN $3::bigint IS NULL THEN 'dead' ELSE 'queued' END, \
         run_after = COALESCE(now() + $3 * interval '1 millisecond', run_after), attempts = $5, \
         last_error = $4, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, \
         updated_at = now() \
         WHERE id = $1 AND lease_token = $2 AND state = 'running'",
    )
    .bind(job.id)
    .bind(job.lease_token)
    .bind(retry_ms)
    .bind(error)
    .bind(job.attempts)
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(StoreError::LeaseLost(job.id));
    }
    if job.kind == JobKind::Push {
        sqlx::query(
            "UPDATE artifacts SET push_state = CASE WHEN $3::bigint IS NULL THEN 'dead' ELSE 'retrying' END, \
             push_attempts = $4, next_attempt_at = now() + $3 * interval '1 millisecond', last_error = $5 \
             WHERE execution_id = $1 AND position = $2",
        )
        .bind(job.execution_id.0)
        .bind(job.artifact_position)
        .bind(retry_ms)
        .bind(job.attempts)
        .bind(error)
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query(sql::SET_LAST_ERROR)
        .bind(job.execution_id.0)
        .bind(error)
        .execute(&mut **tx)
        .await?;
    refresh_state(tx, job.execution_id.0).await
}

fn signing_key_row(r: &sqlx::postgres::PgRow) -> Result<SigningKeyRecord, sqlx::Error> {
    Ok(SigningKeyRecord {
        key_id: r.try_get("key_id")?,
        name: r.try_get("name")?,
        kind: r.try_get("kind")?,
        public_key_pem: r.try_get("public_key_pem")?,
        first_seen_at: r.try_get("first_seen_at")?,
        last_seen_at: r.try_get("last_seen_at")?,
    })
}

/// Recompute the execution's attestation state inside the caller's transaction.
async fn refresh_state(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    id: Uuid,
) -> Result<(), StoreError> {
    sqlx::query(sql::REFRESH_STATE)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
