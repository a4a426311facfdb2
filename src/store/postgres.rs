//! PostgreSQL, the production dialect, shared by any number of stateless replicas: `timestamptz`
//! and `jsonb` columns, the database's clock (`now()`), `FOR UPDATE SKIP LOCKED` so two workers
//! never lease the same job, and an ingest that is one statement.

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use serde::de::DeserializeOwned;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::dialect::{Clock, Db, Encoding, SqlxQuery, millis};
use super::sql::{self, Marker, Statements};
use super::{Digest, JobKind, NewExecution, StoreError};

pub async fn connect(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<Db, StoreError> {
    let options = PgConnectOptions::from_str(url)?.application_name("attestd");
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_with(options)
        .await?;
    Ok(Db::Postgres(pool))
}

pub static STATEMENTS: LazyLock<Statements> = LazyLock::new(|| Statements::render(marker));

fn marker(m: Marker<'_>) -> String {
    match m {
        Marker::Now(_) => "now()".to_owned(),
        Marker::Later(p) => format!("now() + {p} * interval '1 millisecond'"),
        Marker::Earlier(p) => format!("now() - {p} * interval '1 millisecond'"),
        Marker::SkipLocked => "FOR UPDATE SKIP LOCKED".to_owned(),
        Marker::Bigint(p) => format!("{p}::bigint"),
        Marker::Text(p) => format!("{p}::text"),
        Marker::Day(column) => format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"),
        Marker::Seconds(from, to) => format!("EXTRACT(EPOCH FROM ({to} - {from}))::float8"),
    }
}

impl Encoding for Postgres {
    fn bind_time(q: SqlxQuery<Self>, t: Option<OffsetDateTime>) -> SqlxQuery<Self> {
        q.bind(t)
    }

    fn bind_json(q: SqlxQuery<Self>, v: &serde_json::Value) -> SqlxQuery<Self> {
        q.bind(Json(v))
    }

    fn bind_clock(q: SqlxQuery<Self>, c: Clock) -> SqlxQuery<Self> {
        match c {
            // The SQL reads `now()` itself.
            Clock::Now(_) => q,
            Clock::Later(_, d) => q.bind(d.map(millis)),
            Clock::Earlier(_, d) => q.bind(millis(d)),
        }
    }

    fn bind_uuids(q: SqlxQuery<Self>, ids: &[Uuid]) -> Result<SqlxQuery<Self>, StoreError> {
        Ok(q.bind(ids))
    }

    fn time(row: &PgRow, col: &str) -> Result<Option<OffsetDateTime>, sqlx::Error> {
        row.try_get(col)
    }

    fn json<T: DeserializeOwned>(row: &PgRow, col: &str) -> Result<T, sqlx::Error> {
        let Json(v) = row.try_get::<Json<T>, _>(col)?;
        Ok(v)
    }
}

/// Insert a new execution with its artifacts and first job, or return the `(id, request hash)`
/// of the one already recorded under its idempotency key.
pub async fn insert_build(
    pool: &PgPool,
    new: &NewExecution,
) -> Result<Option<(Uuid, String)>, StoreError> {
    let b = &new.build;
    let (state, push_state, job) = new.initial_states();
    let artifacts = new.new_artifacts();
    // One statement, so one round trip and one implicit transaction: the execution, its
    // artifacts and (for a successful build) its first job, or nothing on a conflict.
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "WITH e AS ( \
            INSERT INTO executions (id, account_id, pipeline_execution_id, pipeline_identifier, \
                repository_url, branch, commit_sha, trigger_type, triggered_by, builder_id, \
                builder_version, started_on, finished_on, status, request_sha256, received_at, \
                statement, attestation_state, statement_template) \
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $25) \
            ON CONFLICT (account_id, pipeline_execution_id) DO NOTHING RETURNING id), \
         a AS ( \
            INSERT INTO artifacts (execution_id, position, registry, repository, tag, digest, push_state) \
            SELECT e.id, u.position, u.registry, u.repository, u.tag, u.digest, $26 FROM e, \
                unnest($19::int[], $20::text[], $21::text[], $22::text[], $23::text[]) \
                AS u(position, registry, repository, tag, digest)), \
         j AS ( \
            INSERT INTO jobs (kind, execution_id, state, run_after, created_at, updated_at) \
            SELECT $24, e.id, 'queued', $16, $16, $16 FROM e WHERE $24::text IS NOT NULL) \
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
    .bind(new.statement())
    .bind(state.as_str())
    .bind((0..artifacts.len() as i32).collect::<Vec<_>>())
    .bind(artifacts.iter().map(|a| a.image.registry.as_str()).collect::<Vec<_>>())
    .bind(artifacts.iter().map(|a| a.image.repository.as_str()).collect::<Vec<_>>())
    .bind(artifacts.iter().map(|a| a.image.tag.as_deref()).collect::<Vec<_>>())
    .bind(artifacts.iter().map(|a| a.digest.map_or("", Digest::as_str)).collect::<Vec<_>>())
    .bind(job.map(JobKind::as_str))
    .bind(new.statement_template())
    .bind(push_state.as_str())
    .fetch_optional(pool)
    .await?;
    if inserted.is_some() {
        return Ok(None);
    }
    Ok(Some(
        sqlx::query_as(sql::EXISTING_EXECUTION)
            .bind(b.account.as_str())
            .bind(&b.pipeline_execution_id)
            .fetch_one(pool)
            .await?,
    ))
}
