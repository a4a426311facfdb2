//! Prometheus metrics: every metric's name, labels, help text and buckets, the functions the rest
//! of attestd records through, and the process-wide recorder `GET /metrics` renders. Label values
//! come from bounded sets only — configured names (webhook sources, registry hosts), kinds,
//! states, status classes and stable error codes — never an execution id, a digest, a repository
//! or anything secret.
//!
//! The `metrics` facade is process-global, so the recorder is installed once ([`handle`]) and
//! shared by every [`App`](crate::App) in the process: one per process in production; tests that
//! run several apps in one process tell their series apart by labels they alone use (a source
//! name, a registry port).

pub mod refresh;

use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::store::{JobCount, PoolStats};

pub const BUILD_INFO: &str = "attestd_build_info";
pub const WEBHOOKS_RECEIVED: &str = "attestd_webhooks_received_total";
pub const WEBHOOK_DURATION: &str = "attestd_webhook_duration_seconds";
pub const JOBS: &str = "attestd_jobs";
pub const JOBS_REFRESHED: &str = "attestd_jobs_refreshed_timestamp_seconds";
pub const JOB_ATTEMPTS: &str = "attestd_job_attempts_total";
pub const JOBS_COMPLETED: &str = "attestd_jobs_completed_total";
pub const JOB_FAILURES: &str = "attestd_job_failures_total";
pub const PUSH_DURATION: &str = "attestd_push_duration_seconds";
pub const RECEIPT_TO_ATTESTED: &str = "attestd_receipt_to_attested_seconds";
pub const SIGNING_DURATION: &str = "attestd_signing_duration_seconds";
pub const SECRET_ERRORS: &str = "attestd_secret_backend_errors_total";
pub const REGISTRY_ERRORS: &str = "attestd_registry_errors_total";
pub const DB_CONNECTIONS: &str = "attestd_db_connections";
pub const DB_CONNECTIONS_MAX: &str = "attestd_db_connections_max";
pub const INGEST_BATCH_ROWS: &str = "attestd_ingest_batch_rows";
pub const INGEST_BATCH_DURATION: &str = "attestd_ingest_batch_duration_seconds";
pub const READ_CACHE_LOOKUPS: &str = "attestd_read_cache_lookups_total";
pub const READ_CACHE_BYTES: &str = "attestd_read_cache_bytes";

/// Webhook handling is milliseconds unless the database is slow.
const WEBHOOK_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Webhooks per group commit: 1 when idle, up to `ingest.batch_max_rows` under load.
const BATCH_ROWS_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// One commit of a batch: a few milliseconds, up to the pool's acquire timeout when it is down.
const BATCH_DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// A push is several registry round trips, cut off at `worker.push_deadline_secs`.
const PUSH_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// In-memory keys sign in microseconds, Transit keys take a round trip.
const SIGNING_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Seconds when all is well; hours when a registry was down and pushes backed off.
const ATTESTED_BUCKETS: &[f64] = &[
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4.0 * 3600.0,
    24.0 * 3600.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The recorder's handle, installing the recorder on first use. `None` when another recorder
/// was installed in this process first (attestd embedded in a program with its own).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get_or_init(install).as_ref()
}

fn install() -> Option<PrometheusHandle> {
    let buckets = [
        (WEBHOOK_DURATION, WEBHOOK_BUCKETS),
        (PUSH_DURATION, PUSH_BUCKETS),
        (SIGNING_DURATION, SIGNING_BUCKETS),
        (RECEIPT_TO_ATTESTED, ATTESTED_BUCKETS),
        (INGEST_BATCH_ROWS, BATCH_ROWS_BUCKETS),
        (INGEST_BATCH_DURATION, BATCH_DURATION_BUCKETS),
    ];
    let mut builder = PrometheusBuilder::new();
    for (name, values) in buckets {
        builder = match builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), values) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, metric = name, "metrics disabled: bad buckets");
                return None;
            }
        };
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if let Err(e) = ::metrics::set_global_recorder(recorder) {
        tracing::warn!(error = %e, "another metrics recorder is installed; /metrics is unavailable");
        return None;
    }
    describe();
    Some(handle)
}

fn describe() {
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels say which attestd version runs on which store."
    );
    describe_counter!(
        WEBHOOKS_RECEIVED,
        "Webhook requests answered, by source, source kind, status class and error code."
    );
    describe_histogram!(
        WEBHOOK_DURATION,
        Unit::Seconds,
        "Time from a webhook request's arrival to its answer."
    );
    describe_gauge!(
        JOBS,
        "Jobs in the database by kind and state, read every metrics.refresh_secs."
    );
    describe_gauge!(
        JOBS_REFRESHED,
        Unit::Seconds,
        "Unix time attestd_jobs was last read from the database."
    );
    describe_counter!(
        JOB_ATTEMPTS,
        "Job attempts this process started, by job kind."
    );
    describe_counter!(
        JOBS_COMPLETED,
        "Job attempts that completed their job, by job kind."
    );
    describe_counter!(
        JOB_FAILURES,
        "Failed job attempts by job kind, reason class and whether the job is retried or dead."
    );
    describe_histogram!(
        PUSH_DURATION,
        Unit::Seconds,
        "Time one attestation push took, by registry host and outcome."
    );
    describe_histogram!(
        RECEIPT_TO_ATTESTED,
        Unit::Seconds,
        "Time from a webhook's receipt to its attestation being in every registry."
    );
    describe_histogram!(
        SIGNING_DURATION,
        Unit::Seconds,
        "Time one DSSE signature took, by key type and outcome."
    );
    describe_counter!(
        SECRET_ERRORS,
        "Failed reads from the secret backend, by backend and error."
    );
    describe_counter!(
        REGISTRY_ERRORS,
        "Failed registry operations, by registry host, operation and error code."
    );
    describe_gauge!(
        DB_CONNECTIONS,
        "Database connections by pool and state (in_use or idle)."
    );
    describe_gauge!(DB_CONNECTIONS_MAX, "The size limit of each database pool.");
    describe_histogram!(
        INGEST_BATCH_ROWS,
        "Webhooks recorded by one group commit at ingest."
    );
    describe_histogram!(
        INGEST_BATCH_DURATION,
        Unit::Seconds,
        "Time one group commit at ingest took, connection wait included."
    );
    describe_counter!(
        READ_CACHE_LOOKUPS,
        "Responses looked up in memory (server.read_cache_mib), by response and whether one was kept (hit) or the database was read (miss)."
    );
    describe_gauge!(
        READ_CACHE_BYTES,
        Unit::Bytes,
        "Bytes of responses kept in memory, as weighed against server.read_cache_mib."
    );
}

/// The counters of one kind of kept response: lookups that found it, and that did not.
pub fn read_cache_lookups(body: &'static str) -> (::metrics::Counter, ::metrics::Counter) {
    (
        counter!(READ_CACHE_LOOKUPS, "body" => body, "result" => "hit"),
        counter!(READ_CACHE_LOOKUPS, "body" => body, "result" => "miss"),
    )
}

/// The gauge of the bytes kept in memory.
pub fn read_cache_bytes() -> ::metrics::Gauge {
    gauge!(READ_CACHE_BYTES)
}

/// `attestd_build_info{version, store} 1`.
pub fn build_info(store: &'static str) {
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "store" => store).set(1.0);
}

/// One answered webhook request. `source` is empty when no source authenticated it.
pub fn webhook_answered(
    source: &str,
    kind: &'static str,
    status: u16,
    error: &'static str,
    elapsed: Duration,
) {
    let class = status_class(status);
    counter!(WEBHOOKS_RECEIVED, "source" => source.to_owned(), "kind" => kind, "status" => class, "error" => error)
        .increment(1);
    histogram(
        WEBHOOK_DURATION,
        elapsed,
        [
            ("source", source.to_owned()),
            ("kind", kind.to_owned()),
            ("status", class.to_owned()),
        ],
    );
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

fn histogram<const N: usize>(
    name: &'static str,
    value: Duration,
    labels: [(&'static str, String); N],
) {
    let labels: Vec<::metrics::Label> = labels
        .into_iter()
        .map(|(k, v)| ::metrics::Label::new(k, v))
        .collect();
    ::metrics::histogram!(name, labels).record(value.as_secs_f64());
}

/// One group commit at ingest recorded `rows` webhooks (each succeeded or failed on its own).
pub fn ingest_batch(rows: usize, elapsed: Duration) {
    ::metrics::histogram!(INGEST_BATCH_ROWS).record(rows as f64);
    histogram(INGEST_BATCH_DURATION, elapsed, []);
}

/// A worker took a job (first attempt, retry or take-over).
pub fn job_attempt(kind: &'static str) {
    counter!(JOB_ATTEMPTS, "kind" => kind).increment(1);
}

/// A job attempt completed its job.
pub fn job_completed(kind: &'static str) {
    counter!(JOBS_COMPLETED, "kind" => kind).increment(1);
}

/// A job attempt failed for `reason` (a stable class such as `store` or a registry error code).
pub fn job_failed(kind: &'static str, reason: &'static str, retried: bool) {
    let outcome = if retried { "retry" } else { "dead" };
    counter!(JOB_FAILURES, "kind" => kind, "reason" => reason, "outcome" => outcome).increment(1);
}

/// One push attempt to `registry` (a configured host) ended with `outcome`.
pub fn push_finished(registry: &str, outcome: &'static str, elapsed: Duration) {
    histogram(
        PUSH_DURATION,
        elapsed,
        [
            ("registry", registry.to_owned()),
            ("outcome", outcome.to_owned()),
        ],
    );
}

/// An execution's attestation reached every registry, `delay` after its webhook was received.
pub fn attested(delay: Duration) {
    histogram(RECEIPT_TO_ATTESTED, delay, []);
}

/// One signature with a key of `key_type` ended with `outcome`.
pub fn signed(key_type: &'static str, outcome: &'static str, elapsed: Duration) {
    histogram(
        SIGNING_DURATION,
        elapsed,
        [
            ("key_type", key_type.to_owned()),
            ("outcome", outcome.to_owned()),
        ],
    );
}

/// A read from the secret backend failed.
pub fn secret_error(backend: &'static str, error: &'static str) {
    counter!(SECRET_ERRORS, "backend" => backend, "error" => error).increment(1);
}

/// A registry operation against `registry` (a configured host) failed with `code`.
pub fn registry_error(registry: &str, operation: &'static str, code: &'static str) {
    counter!(REGISTRY_ERRORS, "registry" => registry.to_owned(), "operation" => operation, "code" => code)
        .increment(1);
}

/// The job counts just read from the store. Series seen before but absent now are set to 0, so
/// a state that emptied does not keep its last count.
pub fn jobs(counts: &[JobCount], seen: &mut std::collections::BTreeSet<(String, String)>) {
    let now: std::collections::BTreeSet<(String, String)> = counts
        .iter()
        .map(|c| (c.kind.clone(), c.state.clone()))
        .collect();
    for (kind, state) in seen.difference(&now) {
        gauge!(JOBS, "kind" => kind.clone(), "state" => state.clone()).set(0.0);
    }
    for c in counts {
        gauge!(JOBS, "kind" => c.kind.clone(), "state" => c.state.clone()).set(c.count as f64);
    }
    seen.extend(now);
    let unix = time::OffsetDateTime::now_utc().unix_timestamp();
    gauge!(JOBS_REFRESHED).set(unix as f64);
}

/// The database pools' connections right now.
pub fn pools(pools: &[PoolStats]) {
    for p in pools {
        let in_use = p.size.saturating_sub(p.idle);
        gauge!(DB_CONNECTIONS, "pool" => p.name, "state" => "in_use").set(f64::from(in_use));
        gauge!(DB_CONNECTIONS, "pool" => p.name, "state" => "idle").set(f64::from(p.idle));
        gauge!(DB_CONNECTIONS_MAX, "pool" => p.name).set(f64::from(p.max));
    }
}

#[cfg(test)]
mod tests {
    use super::status_class;

    #[test]
    fn statuses_fall_into_their_classes() {
        let classes: Vec<_> = [200, 202, 301, 401, 422, 503]
            .into_iter()
            .map(status_class)
            .collect();
        assert_eq!(classes, ["2xx", "2xx", "3xx", "4xx", "4xx", "5xx"]);
    }
}
