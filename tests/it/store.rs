//! Store conformance: every behaviour the worker and API rely on, on both SQLite and Postgres.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use attestd::domain::{Digest, ExecutionId, ImageRef, provenance};
use attestd::ingest::parse_build_webhook;
use attestd::store::{
    self, AttestationState, DynStore, JobKind, Leasing, NewExecution, NewSigningKey, PushRecord,
    PushState, Recorded, Signing, StoreError,
};

use crate::backend_tests;
use crate::support::app::webhook;
use crate::support::{Backend, LEASING, TestDatabase};

backend_tests!(
    recording_is_idempotent_by_account_and_pipeline_execution,
    claims_never_hand_the_same_job_to_two_claimers,
    an_expired_lease_is_reclaimed_and_the_old_holder_cannot_finish,
    signing_stores_the_first_envelope_only_and_queues_one_push_per_artifact,
    failures_back_off_then_die_and_retry_redrives_them,
    a_failure_reported_after_the_lease_was_taken_over_writes_nothing,
    released_jobs_do_not_count_an_attempt,
    locks_are_exclusive_until_released_or_expired,
    a_lock_past_its_expiry_on_the_database_clock_changes_hands_and_fences_its_old_holder,
    a_renewed_lease_keeps_the_job_and_a_taken_over_lease_cannot_be_renewed,
    a_push_whose_worker_keeps_stopping_is_dead_with_the_reason,
    a_job_whose_worker_stops_during_its_last_attempt_is_dead,
    pruning_deletes_only_done_jobs_and_locks_older_than_the_age_in_bounded_batches,
    lookup_by_digest_finds_every_execution_of_an_image,
    signing_keys_are_remembered_once_with_their_first_public_key,
    images_from_templates_wait_resolving_until_one_transaction_writes_digests_statement_and_sign_job,
    a_dead_resolve_job_fails_the_execution_and_retry_resolves_again,
    a_batch_records_new_redelivered_conflicting_and_duplicate_items_exactly_as_one_by_one,
    a_poisoned_item_fails_alone_and_its_batch_neighbours_are_stored,
    a_sign_completion_hands_its_first_push_to_the_signer_and_queues_the_rest,
    a_handed_push_whose_signer_stops_is_taken_over_when_its_lease_expires,
    a_push_completion_releases_its_tag_lock_and_says_once_that_it_attested,
    summaries_list_the_same_page_with_artifact_counts_stored_at_ingest_or_counted,
    an_execution_with_its_statement_is_one_read_of_what_the_two_reads_give,
    a_handed_push_whose_tag_is_locked_by_another_worker_comes_without_the_lock,
    a_claimed_sign_job_comes_with_what_its_separate_read_gives_and_other_kinds_without,
    a_push_completion_claims_the_next_job_only_once_it_finished_its_own,
    a_pages_ids_then_its_executions_by_id_read_what_the_page_reads,
);

struct Fixture {
    store: DynStore,
    db: TestDatabase,
}

async fn fixture(backend: Backend) -> Fixture {
    let db = TestDatabase::new(backend).await;
    let store = store::connect(&db.url, 8, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    Fixture { store, db }
}

pub(crate) fn new_execution(pipeline_execution_id: &str, artifacts: usize) -> NewExecution {
    let mut hook = webhook(pipeline_execution_id);
    hook["artifacts"] = (0..artifacts)
        .map(|i| serde_json::json!({"image": format!("127.0.0.1:5999/acme/app{i}"), "digest": format!("sha256:{:064x}", i + 1)}))
        .collect();
    let mut build = parse_build_webhook(hook.to_string().as_bytes()).unwrap();
    build.source = "acme-ci".into();
    let id = ExecutionId::new();
    NewExecution {
        id,
        signing: Signing::Statement(provenance::statement_bytes(&build)),
        request_sha256: attestd::ingest::fingerprint(&build),
        build,
        received_at: id.created_at(),
    }
}

/// A failed build naming no image, as a CI's own webhook records one (the attestd schema needs
/// at least one artifact).
pub(crate) fn failed_execution_without_images(pipeline_execution_id: &str) -> NewExecution {
    let mut new = new_execution(pipeline_execution_id, 1);
    new.build.artifacts.clear();
    new.build.status = attestd::domain::BuildStatus::Failed;
    new.signing = Signing::Nothing;
    new.request_sha256 = attestd::ingest::fingerprint(&new.build);
    new
}

/// A successful build whose two images come from templates, without digests yet.
fn templated_execution(pipeline_execution_id: &str) -> NewExecution {
    let mut new = new_execution(pipeline_execution_id, 1);
    new.build.artifacts.clear();
    new.request_sha256 = attestd::ingest::fingerprint(&new.build);
    let images: Vec<ImageRef> = [
        "127.0.0.1:5999/acme/app:3484a3f",
        "127.0.0.1:5999/acme/sidecar:3484a3f",
    ]
    .iter()
    .map(|i| i.parse().unwrap())
    .collect();
    let template = serde_json::to_vec(&provenance::template(&new.build)).unwrap();
    new.signing = Signing::Resolve { images, template };
    new
}

const LEASE: Duration = Duration::from_secs(60);

async fn recording_is_idempotent_by_account_and_pipeline_execution(backend: Backend) {
    let f = fixture(backend).await;
    let first = match f
        .store
        .record_build(new_execution("run-1", 2))
        .await
        .unwrap()
    {
        Recorded::Created(e) => e,
        other => panic!("expected Created, got {other:?}"),
    };
    assert_eq!(first.artifacts.len(), 2);
    assert_eq!(first.attestation, AttestationState::Pending);
    match f
        .store
        .record_build(new_execution("run-1", 2))
        .await
        .unwrap()
    {
        Recorded::Existing(e) => assert_eq!(e.id, first.id),
        other => panic!("expected Existing, got {other:?}"),
    }
    let mut different = new_execution("run-1", 2);
    different.request_sha256 = "0".repeat(64);
    assert!(matches!(
        f.store.record_build(different).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(f.store.unfinished_jobs().await.unwrap(), 1);
}

async fn claims_never_hand_the_same_job_to_two_claimers(backend: Backend) {
    let f = fixture(backend).await;
    for i in 0..40 {
        f.store
            .record_build(new_execution(&format!("run-{i}"), 1))
            .await
            .unwrap();
    }
    let store = f.store.clone();
    let mut claimers = Vec::new();
    for w in 0..8 {
        let store: Arc<_> = store.clone();
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(job) = store
                .claim_job(&format!("worker-{w}"), &LEASING)
                .await
                .unwrap()
            {
                mine.push(job.id);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for c in claimers {
        all.extend(c.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 40, "every job claimed");
    assert_eq!(unique.len(), 40, "no job claimed twice");
}

async fn an_expired_lease_is_reclaimed_and_the_old_holder_cannot_finish(backend: Backend) {
    let f = fixture(backend).await;
    f.store
        .record_build(new_execution("run-1", 1))
        .await
        .unwrap();
    let stale = f
        .store
        .claim_job(
            "a",
            &Leasing {
                lease: Duration::from_millis(1),
                ..LEASING
            },
        )
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let fresh = f
        .store
        .claim_job("b", &LEASING)
        .await
        .unwrap()
        .expect("expired lease is claimable");
    assert_eq!(fresh.id, stale.id);
    assert_eq!(fresh.attempts, 2, "the crashed attempt counts");
    assert!(matches!(
        f.store.complete_sign(&stale, b"{}", "k", None).await,
        Err(StoreError::LeaseLost(_))
    ));
    assert!(
        matches!(
            f.store
                .complete_sign(&stale, b"{}", "k", Some(hand_off(0, "att:app0")))
                .await,
            Err(StoreError::LeaseLost(_))
        ),
        "nor can it turn the job into its push"
    );
    assert!(
        f.store.claim_job("c", &LEASING).await.unwrap().is_none(),
        "held by b now"
    );
    f.store
        .complete_sign(&fresh, b"envelope-b", "kb", None)
        .await
        .unwrap();
    assert_eq!(
        f.store.envelope(fresh.execution_id).await.unwrap().unwrap(),
        b"envelope-b"
    );
}

async fn signing_stores_the_first_envelope_only_and_queues_one_push_per_artifact(backend: Backend) {
    let f = fixture(backend).await;
    let Recorded::Created(e) = f
        .store
        .record_build(new_execution("run-1", 3))
        .await
        .unwrap()
    else {
        panic!()
    };
    let job = f.store.claim_job("a", &LEASING).await.unwrap().unwrap();
    assert_eq!(job.kind, JobKind::Sign);
    let stored = f
        .store
        .complete_sign(&job, b"first", "key-1", None)
        .await
        .unwrap();
    assert_eq!(stored.envelope, b"first");
    let e = f.store.execution(e.id).await.unwrap().unwrap();
    assert_eq!(e.attestation, AttestationState::Pushing);
    assert_eq!(e.key_id.as_deref(), Some("key-1"));
    assert!(e.signed_at.is_some());

    let mut pushes = Vec::new();
    while let Some(j) = f.store.claim_job("a", &LEASING).await.unwrap() {
        assert_eq!(j.kind, JobKind::Push);
        pushes.push(j);
    }
    let mut positions: Vec<_> = pushes
        .iter()
        .map(|j| j.artifact_position.unwrap())
        .collect();
    positions.sort();
    assert_eq!(positions, vec![0, 1, 2]);
    for (i, j) in pushes.iter().enumerate() {
        let record = PushRecord {
            reference: format!("ref-{i}"),
            manifest_digest: format!("sha256:{:064x}", i),
        };
        f.store.complete_push(j, &record, None).await.unwrap();
        let state = f.store.execution(e.id).await.unwrap().unwrap().attestation;
        let expected = if i == 2 {
            AttestationState::Attested
        } else {
            AttestationState::Pushing
        };
        assert_eq!(state, expected);
    }
    let e = f.store.execution(e.id).await.unwrap().unwrap();
    assert!(e.attested_at.is_some());
    assert!(
        e.artifacts
            .iter()
            .all(|a| a.push_state == PushState::Pushed && a.pushed_reference.is_some())
    );
    assert_eq!(f.store.unfinished_jobs().await.unwrap(), 0);
}

async fn failures_back_off_then_die_and_retry_redrives_them(backend: Backend) {
    let f = fixture(backend).await;
    let e = signed(&f, 1, "a").await;
    let push = f.store.claim_job("a", &LEASING).await.unwrap().unwrap();
    f.store
        .fail_job(
            &push,
            "registry unavailable",
            Some(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let e1 = f.store.execution(e.id).await.unwrap().unwrap();
    assert_eq!(e1.artifacts[0].push_state, PushState::Retrying);
    assert_eq!(e1.artifacts[0].push_attempts, 1);
    assert_eq!(
        e1.artifacts[0].last_error.as_deref(),
        Some("registry unavailable")
    );
    assert!(e1.artifacts[0].next_attempt_at.is_some());
    assert!(
        f.store.claim_job("a", &LEASING).await.unwrap().is_none(),
        "not due before its backoff"
    );

    // Retry re-drives the waiting job now.
    assert_eq!(f.store.retry_execution(e.id).await.unwrap(), 1);
    let push = f.store.claim_job("a", &LEASING).await.unwrap().unwrap();
    f.store
        .fail_job(&push, "image not found", None)
        .await
        .unwrap();
    let dead = f.store.execution(e.id).await.unwrap().unwrap();
    assert_eq!(dead.artifacts[0].push_state, PushState::Dead);
    assert_eq!(dead.attestation, AttestationState::Failed);
    assert_eq!(dead.last_error.as_deref(), Some("image not found"));
    assert_eq!(f.store.unfinished_jobs().await.unwrap(), 0);

    assert_eq!(f.store.retry_execution(e.id).await.unwrap(), 1);
    let again = f.store.execution(e.id).await.unwrap().unwrap();
    assert_eq!(again.attestation, AttestationState::Pushing);
    assert_eq!(again.artifacts[0].push_state, PushState::Pending);
    let push = f.store.claim_job("a", &LEASING).await.unwrap().unwrap();
    f.store
        .complete_push(
            &push,
            &PushRecord {
                reference: "r".into(),
                manifest_digest: "sha256:00".into(),
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        f.store.execution(e.id).await.unwrap().unwrap().attestation,
        AttestationState::Attested
    );
    assert_eq!(
        f.store.envelope(e.id).await.unwrap().unwrap(),
        b"env",
        "retry reuses the stored envelope"
    );
}

async fn a_failure_reported_after_the_lease_was_taken_over_writes_nothing(backend: Backend) {
    let f = fixture(backend).await;
    let e = signed(&f, 1, "a").await;
    let stale = f.store.claim_job("a", &LEASING).await.unwrap().unwrap();
    expire_lease(&f, &stale).await;
    let taken = f.store.claim_job("b", &LEASING).await.unwrap().unwrap();
    assert_eq!(taken.id, stale.id);
    let before = f.store.execution(e.id).await.unwrap().unwrap();

    // The stopped worker comes back and reports the push as failed for good.
    assert!(matches!(
        f.store.fail_job(&stale, "image not found", None).await,
        Err(StoreError::LeaseLost(_))
    ));
    let after = f.store.execution(e.id).await.unwrap().unwrap();
    assert_eq!(after.attestation, AttestationState::Pushing);
    assert_eq!(after.last_error, None);
    assert_eq!(
        after.artifacts[0].push_state,
        before.artifacts[0].push_state
    );
    assert_eq!(after.artifacts[0].last_error, None);
    assert_eq!(
        f.store.unfinished_jobs().await.unwrap(),
        1,
        "b's push still runs"
    );

    // b's own failure is recorded: its job waits to retry, the artifact and execution say why.
    f.store
        .fail_job(
            &taken,
            "registry unavailable",
            Some(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let waiting = f.store.execution(e.id).await.unwrap().unwrap();
    assert_eq!(waiting.attestation, AttestationState::Pushing);
    assert_eq!(waiting.last_error.as_deref(), Some("registry unavailable"));
    assert_eq!(waiting.artifacts[0].push_state, PushState::Retrying);
    assert_eq!(waiting.artifacts[0].push_attempts, 2);
}

async fn released_jobs_do_not_count_an_attempt(backend: Backend) {
    let f = fixture(backend).await;
    f.store
        .record_build(new_execution("run-1", 1))
        .await
        .unwrap();
    let job = f.store.claim_job("a", &LEASING).await.unwrap().unwrap();
    f.store.release_job(&job).await.unwrap();
    let again = f.store.claim_job("b", &LEASING).await.unwrap().unwrap();
    assert_eq!(again.id, job.id);
    assert_eq!(again.attempts, 1);
}

async fn locks_are_exclusive_until_released_or_expired(backend: Backend) {
    let f = fixture(backend).await;
    let a = f.store.try_lock("tag", "a", LEASE).await.unwrap().unwrap();
    assert!(f.store.try_lock("tag", "b", LEASE).await.unwrap().is_none());
    let again = f
        .store
        .try_lock("tag", "a", LEASE)
        .await
        .unwrap()
        .expect("the holder may take it again");
    assert!(again.token > a.token, "under a new fencing token");
    assert!(
        !f.store.holds_lock(&a).await.unwrap(),
        "the old token is fenced"
    );
    let impostor = attestd::store::Lock {
        owner: "b".into(),
        ..again.clone()
    };
    f.store.unlock(&impostor).await.unwrap();
    assert!(
        f.store.try_lock("tag", "b", LEASE).await.unwrap().is_none(),
        "only the holder unlocks"
    );
    f.store.unlock(&again).await.unwrap();
    assert!(!f.store.holds_lock(&again).await.unwrap());
    let b = f
        .store
        .try_lock("tag", "b", Duration::from_millis(1))
        .await
        .unwrap()
        .expect("a released lock is free");
    assert!(b.token > again.token, "tokens only grow");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let c = f
        .store
        .try_lock("tag", "c", LEASE)
        .await
        .unwrap()
        .expect("an expired lock is free");
    assert!(c.token > b.token);
}

async fn a_lock_past_its_expiry_on_the_database_clock_changes_hands_and_fences_its_old_holder(
    backend: Backend,
) {
    let f = fixture(backend).await;
    let a = f.store.try_lock("tag", "a", LEASE).await.unwrap().unwrap();
    assert!(f.store.holds_lock(&a).await.unwrap());
    assert!(f.store.renew_lock(&a, LEASE).await.unwrap());
    // Expire it by the database's clock, as a holder that stopped renewing would find it.
    let past = f.db.seconds_ago(1);
    f.db.execute(&format!(
        "UPDATE locks SET expires_at = {past} WHERE name = 'tag'"
    ))
    .await;
    assert!(
        !f.store.holds_lock(&a).await.unwrap(),
        "the fence refuses an expired lock"
    );
    let b = f
        .store
        .try_lock("tag", "b", LEASE)
        .await
        .unwrap()
        .expect("an expired lock is taken over");
    assert!(b.token > a.token);
    assert!(
        !f.store.renew_lock(&a, LEASE).await.unwrap(),
        "the old holder cannot renew it back"
    );
    f.store.unlock(&a).await.unwrap();
    assert!(
        f.store.holds_lock(&b).await.unwrap(),
        "nor release the new holder's lock"
    );
    assert!(!f.store.holds_lock(&a).await.unwrap());
}

async fn a_renewed_lease_keeps_the_job_and_a_taken_over_lease_cannot_be_renewed(backend: Backend) {
    let f = fixture(backend).await;
    f.store
        .record_build(new_execution("run-1", 1))
        .await
        .unwrap();
    let short = Leasing {
        lease: Duration::from_millis(1),
        ..LEASING
    };
    let job = f.store.claim_job("a", &short).await.unwrap().unwrap();
    assert!(f.store.renew_lease(&job, LEASE).await.unwrap());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        f.store.claim_job("b", &LEASING).await.unwrap().is_none(),
        "the renewed lease holds past the first one"
    );
    expire_lease(&f, &job).await;
    let taken = f
        .store
        .claim_job("b", &LEASING)
        .await
        .unwrap()
        .expect("expired on the database clock");
    assert_eq!(taken.id, job.id);
    assert!(!f.store.renew_lease(&job, LEASE).await.unwrap());
    assert!(f.store.renew_lease(&taken, LEASE).await.unwrap());
}

/// Record a new one-artifact execution.
async fn created(f: &Fixture, pipeline_execution_id: &str) -> attestd::store::Execution {
    created_with(f, pipeline_execution_id, 1).await
}

async fn created_with(
    f: &Fixture,
    pipeline_execution_id: &str,
    images: usize,
) -> attestd::store::Execution {
    match f
        .store
        .record_build(new_execution(pipeline_execution_id, images))
        .await
        .unwrap()
    {
        Recorded::Created(e) => e,
        other => panic!("expected Created, got {other:?}"),
    }
}

/// A new execution of `images` images, and its sign job claimed by `worker`.
async fn signing(
    f: &Fixture,
    images: usize,
    worker: &str,
) -> (attestd::store::Execution, attestd::store::Job) {
    let e = created_with(f, "run-1", images).await;
    let sign = f.store.claim_job(worker, &LEASING).await.unwrap().unwrap();
    assert_eq!((sign.kind, sign.execution_id), (JobKind::Sign, e.id));
    (e, sign)
}

/// A new execution whose two images come from templates (a resolve job is queued).
async fn created_templated(f: &Fixture, pipeline_execution_id: &str) -> attestd::store::Execution {
    match f
        .store
        .record_build(templated_execution(pipeline_execution_id))
        .await
        .unwrap()
    {
        Recorded::Created(e) => e,
        other => panic!("expected Created, got {other:?}"),
    }
}

/// A new execution of `images` images, signed by `worker`: its push jobs are queued.
async fn signed(f: &Fixture, images: usize, worker: &str) -> attestd::store::Execution {
    let (e, sign) = signing(f, images, worker).await;
    f.store
        .complete_sign(&sign, b"env", "k", None)
        .await
        .unwrap();
    e
}

/// Let the job's lease run out, as a worker killed mid-job leaves it.
async fn expire_lease(f: &Fixture, job: &attestd::store::Job) {
    let past = f.db.seconds_ago(1);
    let changed =
        f.db.execute(&format!(
            "UPDATE jobs SET lease_expires_at = {past} WHERE id = {}",
            job.id
        ))
        .await;
    assert_eq!(changed, 1);
}

async fn a_push_whose_worker_keeps_stopping_is_dead_with_the_reason(backend: Backend) {
    let f = fixture(backend).await;
    let e = signed(&f, 1, "w").await;
    let mut push = f.store.claim_job("w0", &LEASING).await.unwrap().unwrap();
    assert_eq!(push.kind, JobKind::Push);
    for stop in 1..=LEASING.max_reclaims {
        expire_lease(&f, &push).await;
        push = f
            .store
            .claim_job(&format!("w{stop}"), &LEASING)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("taken over after stop {stop}"));
        assert_eq!(
            push.attempts,
            stop as i32 + 1,
            "each stop counts an attempt"
        );
    }
    expire_lease(&f, &push).await;
    assert!(
        f.store
            .claim_job("w-last", &LEASING)
            .await
            .unwrap()
            .is_none(),
        "not taken over again"
    );
    let dead = f.store.execution(e.id).await.unwrap().unwrap();
    let reason = format!(
        "the worker processing this job stopped {} times",
        LEASING.max_reclaims + 1
    );
    assert_eq!(dead.attestation, AttestationState::Failed);
    assert_eq!(dead.last_error.as_deref(), Some(reason.as_str()));
    let artifact = &dead.artifacts[0];
    assert_eq!(artifact.push_state, PushState::Dead);
    assert_eq!(artifact.last_error.as_deref(), Some(reason.as_str()));
    assert_eq!(artifact.push_attempts, LEASING.max_reclaims as i32 + 1);
    assert_eq!(f.store.unfinished_jobs().await.unwrap(), 0);

    // Re-driving starts the count afresh.
    assert_eq!(f.store.retry_execution(e.id).await.unwrap(), 1);
    let again = f.store.claim_job("w", &LEASING).await.unwrap().unwrap();
    assert_eq!(again.attempts, 1);
    expire_lease(&f, &again).await;
    let taken = f.store.claim_job("w", &LEASING).await.unwrap();
    assert!(taken.is_some(), "the reclaims were reset by the retry");
}

async fn a_job_whose_worker_stops_during_its_last_attempt_is_dead(backend: Backend) {
    let f = fixture(backend).await;
    let e = created(&f, "run-1").await;
    let two = Leasing {
        max_attempts: 2,
        ..LEASING
    };
    let first = f.store.claim_job("a", &two).await.unwrap().unwrap();
    expire_lease(&f, &first).await;
    let second = f.store.claim_job("b", &two).await.unwrap().unwrap();
    assert_eq!(second.attempts, 2);
    expire_lease(&f, &second).await;
    assert!(f.store.claim_job("c", &two).await.unwrap().is_none());
    let dead = f.store.execution(e.id).await.unwrap().unwrap();
    assert_eq!(dead.attestation, AttestationState::Failed);
    assert_eq!(
        dead.last_error.as_deref(),
        Some("the worker processing this job stopped during its last attempt (2 of 2)")
    );
}

async fn pruning_deletes_only_done_jobs_and_locks_older_than_the_age_in_bounded_batches(
    backend: Backend,
) {
    let f = fixture(backend).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(created(&f, &format!("run-{i}")).await.id);
    }
    // run-0: signed and pushed (2 done jobs); run-1: signed, push waiting to retry (1 done);
    // run-2: signing dead. All of it two hours ago. Then run-3: signed just now.
    for id in &ids {
        let sign = f.store.claim_job("w", &LEASING).await.unwrap().unwrap();
        assert_eq!(sign.execution_id, *id);
        if *id == ids[2] {
            f.store.fail_job(&sign, "key gone", None).await.unwrap();
        } else {
            f.store
                .complete_sign(&sign, b"env", "k", None)
                .await
                .unwrap();
        }
    }
    let push = f.store.claim_job("w", &LEASING).await.unwrap().unwrap();
    assert_eq!(push.execution_id, ids[0]);
    let pushed = PushRecord {
        reference: "r".into(),
        manifest_digest: "sha256:00".into(),
    };
    f.store.complete_push(&push, &pushed, None).await.unwrap();
    let waiting = f.store.claim_job("w", &LEASING).await.unwrap().unwrap();
    assert_eq!(waiting.execution_id, ids[1]);
    let hour = Duration::from_secs(3600);
    f.store
        .fail_job(&waiting, "registry unavailable", Some(hour))
        .await
        .unwrap();
    let two_hours_ago = f.db.seconds_ago(7200);
    let backdated =
        f.db.execute(&format!(
            "UPDATE jobs SET updated_at = {two_hours_ago} WHERE state IN ('done', 'dead')"
        ))
        .await;
    assert_eq!(backdated, 4);
    ids.push(created(&f, "run-3").await.id);
    let sign = f.store.claim_job("w", &LEASING).await.unwrap().unwrap();
    assert_eq!(sign.execution_id, ids[3]);
    f.store
        .complete_sign(&sign, b"env", "k", None)
        .await
        .unwrap();

    let old_lock = f.store.try_lock("old", "w", LEASE).await.unwrap().unwrap();
    f.store.unlock(&old_lock).await.unwrap();
    f.db.execute(&format!(
        "UPDATE locks SET expires_at = {two_hours_ago} WHERE name = 'old'"
    ))
    .await;
    let recent = f
        .store
        .try_lock("recent", "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    f.store.unlock(&recent).await.unwrap();
    let held = f.store.try_lock("held", "w", LEASE).await.unwrap().unwrap();

    let first = f.store.prune(hour, 2).await.unwrap();
    assert_eq!((first.jobs, first.locks), (2, 1), "at most the batch size");
    let second = f.store.prune(hour, 2).await.unwrap();
    assert_eq!((second.jobs, second.locks), (1, 0));
    let third = f.store.prune(hour, 2).await.unwrap();
    assert_eq!((third.jobs, third.locks), (0, 0));

    let by_state = |state: &'static str| {
        let db = &f.db;
        async move {
            db.count(&format!(
                "SELECT COUNT(*) FROM jobs WHERE state = '{state}'"
            ))
            .await
        }
    };
    assert_eq!(by_state("done").await, 1, "the recent sign job of run-3");
    assert_eq!(by_state("dead").await, 1, "dead jobs are kept, however old");
    assert_eq!(by_state("queued").await, 2, "run-1's and run-3's pushes");
    assert_eq!(
        f.db.count("SELECT COUNT(*) FROM locks WHERE name IN ('recent', 'held')")
            .await,
        2
    );
    assert_eq!(f.db.count("SELECT COUNT(*) FROM locks").await, 2);
    assert!(f.store.holds_lock(&held).await.unwrap());
    let run0 = f.store.execution(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        run0.attestation,
        AttestationState::Attested,
        "pruning jobs leaves the execution as it was"
    );
    assert_eq!(
        f.store
            .execution(ids[2])
            .await
            .unwrap()
            .unwrap()
            .attestation,
        AttestationState::Failed
    );
    assert_eq!(f.store.retry_execution(ids[2]).await.unwrap(), 1);
}

async fn lookup_by_digest_finds_every_execution_of_an_image(backend: Backend) {
    let f = fixture(backend).await;
    for i in 0..3 {
        f.store
            .record_build(new_execution(&format!("run-{i}"), 2))
            .await
            .unwrap();
    }
    let digest = format!("sha256:{:064x}", 2).parse().unwrap();
    let hits = f.store.executions_by_digest(&digest, None).await.unwrap();
    assert_eq!(hits.len(), 3);
    assert!(hits.iter().all(|h| h.artifact_position == 1));
    let ids: Vec<_> = hits
        .iter()
        .map(|h| h.execution.pipeline_execution_id.clone())
        .collect();
    assert_eq!(ids, vec!["run-2", "run-1", "run-0"], "newest first");
    let other = "globex".parse().unwrap();
    assert!(
        f.store
            .executions_by_digest(&digest, Some(&other))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn signing_keys_are_remembered_once_with_their_first_public_key(backend: Backend) {
    let f = fixture(backend).await;
    let key = |id: char, name: &str, pem: &str| NewSigningKey {
        key_id: id.to_string().repeat(64),
        name: name.into(),
        kind: "cosign".into(),
        public_key_pem: pem.into(),
    };
    assert!(f.store.signing_keys().await.unwrap().is_empty());
    f.store
        .remember_signing_key(&key('a', "release", "PEM A"))
        .await
        .unwrap();
    let first = f.store.signing_key(&"a".repeat(64)).await.unwrap().unwrap();
    assert_eq!(first.first_seen_at, first.last_seen_at);
    tokio::time::sleep(Duration::from_millis(5)).await;
    f.store
        .remember_signing_key(&key('b', "release", "PEM B"))
        .await
        .unwrap();
    // Loaded again, under another name: the name follows, the PEM and first sighting stay.
    f.store
        .remember_signing_key(&key('a', "old-release", "PEM A, re-encoded"))
        .await
        .unwrap();

    let a = f.store.signing_key(&"a".repeat(64)).await.unwrap().unwrap();
    assert_eq!(a.name, "old-release");
    assert_eq!(a.kind, "cosign");
    assert_eq!(a.public_key_pem, "PEM A");
    assert_eq!(a.first_seen_at, first.first_seen_at);
    assert!(a.last_seen_at > first.last_seen_at, "{a:?}");
    let all: Vec<_> = f
        .store
        .signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.key_id, k.public_key_pem))
        .collect();
    assert_eq!(
        all,
        [
            ("a".repeat(64), "PEM A".to_owned()),
            ("b".repeat(64), "PEM B".to_owned())
        ],
        "oldest first"
    );
    assert!(
        f.store
            .signing_key(&"c".repeat(64))
            .await
            .unwrap()
            .is_none()
    );
}

async fn images_from_templates_wait_resolving_until_one_transaction_writes_digests_statement_and_sign_job(
    backend: Backend,
) {
    let f = fixture(backend).await;
    let Recorded::Created(created) = f
        .store
        .record_build(templated_execution("run-1"))
        .await
        .unwrap()
    else {
        panic!("expected Created")
    };
    let read = f.store.execution(created.id).await.unwrap().unwrap();
    assert_eq!(read, created, "what record_build answers is what is stored");
    assert_eq!(read.attestation, AttestationState::Resolving);
    assert_eq!(read.artifacts.len(), 2);
    for a in &read.artifacts {
        assert_eq!(a.push_state, PushState::Resolving);
        assert_eq!((a.digest.as_ref(), a.resolved_at), (None, None));
        assert_eq!(a.tag.as_deref(), Some("3484a3f"));
    }
    assert_eq!(f.store.statement(read.id).await.unwrap(), None);
    let template = f.store.statement_template(read.id).await.unwrap().unwrap();
    assert!(matches!(
        f.store.record_build(templated_execution("run-1")).await.unwrap(),
        Recorded::Existing(e) if e.id == read.id
    ));

    let job = f.store.claim_job("a", &LEASING).await.unwrap().unwrap();
    assert_eq!(job.kind, JobKind::Resolve);
    assert_eq!(job.artifact_position, None);
    let d0 = Digest::of(b"app");
    let d1 = Digest::of(b"sidecar");
    // One image short: nothing is written and the job stays leased.
    assert!(
        f.store
            .complete_resolve(&job, &[(0, d0.clone())], b"statement")
            .await
            .is_err()
    );
    let unchanged = f.store.execution(read.id).await.unwrap().unwrap();
    assert_eq!(unchanged, read);
    assert_eq!(f.store.statement(read.id).await.unwrap(), None);

    f.store
        .complete_resolve(&job, &[(0, d0.clone()), (1, d1.clone())], b"statement")
        .await
        .unwrap();
    let resolved = f.store.execution(read.id).await.unwrap().unwrap();
    assert_eq!(resolved.attestation, AttestationState::Pending);
    assert_eq!(resolved.artifacts[0].digest.as_ref(), Some(&d0));
    assert_eq!(resolved.artifacts[1].digest.as_ref(), Some(&d1));
    for a in &resolved.artifacts {
        assert_eq!(a.push_state, PushState::Pending);
        assert!(
            a.resolved_at.is_some_and(|t| t >= read.received_at),
            "{a:?}"
        );
    }
    assert_eq!(
        f.store.statement(read.id).await.unwrap().as_deref(),
        Some(&b"statement"[..])
    );
    assert_eq!(f.store.statement_template(read.id).await.unwrap(), None);
    assert!(!template.is_empty());
    let hits = f.store.executions_by_digest(&d1, None).await.unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].artifact_position, 1);

    let sign = f.store.claim_job("a", &LEASING).await.unwrap().unwrap();
    assert_eq!(sign.kind, JobKind::Sign);
    f.store
        .complete_sign(&sign, b"env", "k", None)
        .await
        .unwrap();
    let pushes = [
        f.store.claim_job("a", &LEASING).await.unwrap().unwrap(),
        f.store.claim_job("a", &LEASING).await.unwrap().unwrap(),
    ];
    assert!(pushes.iter().all(|j| j.kind == JobKind::Push));
    assert!(f.store.claim_job("a", &LEASING).await.unwrap().is_none());
}

async fn a_dead_resolve_job_fails_the_execution_and_retry_resolves_again(backend: Backend) {
    let f = fixture(backend).await;
    let Recorded::Created(e) = f
        .store
        .record_build(templated_execution("run-1"))
        .await
        .unwrap()
    else {
        panic!("expected Created")
    };
    let job = f.store.claim_job("a", &LEASING).await.unwrap().unwrap();
    f.store
        .fail_job(&job, "not there yet", Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    let waiting = f.store.execution(e.id).await.unwrap().unwrap();
    assert_eq!(waiting.attestation, AttestationState::Resolving);
    assert_eq!(waiting.last_error.as_deref(), Some("not there yet"));
    assert_eq!(f.store.retry_execution(e.id).await.unwrap(), 1);
    let job = f.store.claim_job("a", &LEASING).await.unwrap().unwrap();
    assert_eq!(job.kind, JobKind::Resolve);
    f.store
        .fail_job(&job, "image_not_found: never appeared", None)
        .await
        .unwrap();
    let dead = f.store.execution(e.id).await.unwrap().unwrap();
    assert_eq!(dead.attestation, AttestationState::Failed);
    assert_eq!(
        dead.last_error.as_deref(),
        Some("image_not_found: never appeared")
    );
    assert!(
        dead.artifacts
            .iter()
            .all(|a| a.push_state == PushState::Resolving && a.digest.is_none()),
        "{dead:?}"
    );

    assert_eq!(f.store.retry_execution(e.id).await.unwrap(), 1);
    let again = f.store.execution(e.id).await.unwrap().unwrap();
    assert_eq!(again.attestation, AttestationState::Resolving);
    assert_eq!(again.last_error, None);
    let job = f.store.claim_job("a", &LEASING).await.unwrap().unwrap();
    assert_eq!((job.kind, job.attempts), (JobKind::Resolve, 1));
}

/// An outcome of `record_build(s)`, comparable across two databases given the same items.
#[derive(Debug, PartialEq)]
enum Outcome {
    Created(attestd::store::Execution),
    Existing(attestd::store::Execution),
    Conflict,
    Failed,
}

fn outcome(r: Result<Recorded, StoreError>) -> Outcome {
    match r {
        Ok(Recorded::Created(e)) => Outcome::Created(e),
        Ok(Recorded::Existing(e)) => Outcome::Existing(e),
        Err(StoreError::Conflict(_)) => Outcome::Conflict,
        Err(_) => Outcome::Failed,
    }
}

/// Every execution (with artifacts) and the job counts: what a batch must leave as one-by-one does.
async fn contents(f: &Fixture) -> (Vec<attestd::store::Execution>, Vec<(String, String, u64)>) {
    let executions = f
        .store
        .list_executions(&attestd::store::ExecutionFilter {
            ascending: true,
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let jobs = f
        .store
        .job_counts()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.kind, c.state, c.count))
        .collect();
    (executions, jobs)
}

async fn a_batch_records_new_redelivered_conflicting_and_duplicate_items_exactly_as_one_by_one(
    backend: Backend,
) {
    let earlier = [new_execution("run-old", 1), new_execution("run-changed", 2)];
    let mut changed = new_execution("run-changed", 2);
    changed.request_sha256 = "0".repeat(64);
    let mut failed_build = new_execution("run-failed", 1);
    failed_build.signing = Signing::Nothing;
    let mut duplicate_changed = new_execution("run-c", 1);
    duplicate_changed.request_sha256 = "1".repeat(64);
    let batch = vec![
        new_execution("run-a", 2),
        new_execution("run-old", 1), // redelivery of an earlier request
        changed,                     // same key as an earlier request, other content
        new_execution("run-b", 1),
        new_execution("run-b", 1), // redelivery within the batch
        new_execution("run-c", 1),
        duplicate_changed, // same key as an item before it in the batch, other content
        templated_execution("run-t"),
        failed_build,
    ];

    let one_by_one = fixture(backend).await;
    let batched = fixture(backend).await;
    for f in [&one_by_one, &batched] {
        for new in &earlier {
            assert!(matches!(
                f.store.record_build(new.clone()).await,
                Ok(Recorded::Created(_))
            ));
        }
    }
    let mut expected = Vec::new();
    for new in batch.clone() {
        expected.push(outcome(one_by_one.store.record_build(new).await));
    }
    let got: Vec<Outcome> = batched
        .store
        .record_builds(batch.clone())
        .await
        .into_iter()
        .map(outcome)
        .collect();

    let kinds: Vec<&str> = expected
        .iter()
        .map(|o| match o {
            Outcome::Created(_) => "created",
            Outcome::Existing(_) => "existing",
            Outcome::Conflict => "conflict",
            Outcome::Failed => "failed",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "created", "existing", "conflict", "created", "existing", "created", "conflict",
            "created", "created"
        ],
        "the one-by-one baseline itself"
    );
    assert_eq!(got, expected);
    // The in-batch redelivery is the execution its first occurrence created.
    match (&got[3], &got[4]) {
        (Outcome::Created(first), Outcome::Existing(again)) => {
            assert_eq!(again.id, first.id);
            assert_eq!(first.id, batch[3].id);
        }
        other => panic!("run-b: {other:?}"),
    }
    assert_eq!(contents(&batched).await, contents(&one_by_one).await);
    let (executions, _) = contents(&batched).await;
    assert_eq!(executions.len(), 2 + 5);
    assert_eq!(batched.store.unfinished_jobs().await.unwrap(), 2 + 4);
}

async fn a_poisoned_item_fails_alone_and_its_batch_neighbours_are_stored(backend: Backend) {
    let f = fixture(backend).await;
    // A real failure inside the database for one item only.
    match backend {
        Backend::Postgres => {
            f.db.execute(
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.pipeline_execution_id = 'run-poison' THEN RAISE EXCEPTION 'poisoned'; END IF; \
                 RETURN NEW; END $$",
            )
            .await;
            f.db.execute(
                "CREATE TRIGGER poison BEFORE INSERT ON executions FOR EACH ROW EXECUTE FUNCTION poison()",
            )
            .await;
        }
        Backend::Sqlite => {
            f.db.execute(
                "CREATE TRIGGER poison BEFORE INSERT ON executions \
                 WHEN NEW.pipeline_execution_id = 'run-poison' BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
            )
            .await;
        }
    }
    let already = created(&f, "run-0").await;
    let batch = vec![
        new_execution("run-1", 2),
        new_execution("run-poison", 1),
        new_execution("run-0", 1),
        new_execution("run-2", 1),
    ];
    let ids: Vec<ExecutionId> = batch.iter().map(|n| n.id).collect();
    let outcomes = f.store.record_builds(batch).await;
    assert_eq!(outcomes.len(), 4);
    assert!(
        matches!(&outcomes[0], Ok(Recorded::Created(e)) if e.id == ids[0] && e.artifacts.len() == 2)
    );
    match &outcomes[1] {
        Err(StoreError::Database(e)) => assert!(e.to_string().contains("poisoned"), "{e}"),
        other => panic!("the poisoned item: {other:?}"),
    }
    assert!(matches!(&outcomes[2], Ok(Recorded::Existing(e)) if e.id == already.id));
    assert!(matches!(&outcomes[3], Ok(Recorded::Created(e)) if e.id == ids[3]));
    for (id, stored) in [(ids[0], true), (ids[1], false), (ids[3], true)] {
        assert_eq!(f.store.execution(id).await.unwrap().is_some(), stored);
    }
    // run-0's sign job, then one for each stored item of the batch.
    assert_eq!(f.store.unfinished_jobs().await.unwrap(), 3);
}

/// Two pushes of one execution completing at the same moment, on PostgreSQL: each completion's
/// statement sees the other artifact unpushed, so each alone would leave the execution
/// `pushing` for ever. A third connection holds the execution row until both completions are
/// waiting on it, so their snapshots are taken before either commits — the race, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_pushes_of_one_execution_completing_at_once_leave_it_attested() {
    use sqlx::Connection as _;

    let f = fixture(Backend::Postgres).await;
    let e = signed(&f, 2, "a").await;
    let first = f.store.claim_job("a", &LEASING).await.unwrap().unwrap();
    let second = f.store.claim_job("b", &LEASING).await.unwrap().unwrap();
    assert_eq!((first.kind, second.kind), (JobKind::Push, JobKind::Push));

    let mut holder = sqlx::PgConnection::connect(&f.db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT 1 FROM executions WHERE id = $1 FOR UPDATE")
        .bind(e.id.0)
        .execute(&mut holder)
        .await
        .unwrap();
    let complete = |job: attestd::store::Job, n: usize| {
        let store = f.store.clone();
        tokio::spawn(async move {
            let record = PushRecord {
                reference: format!("ref-{n}"),
                manifest_digest: format!("sha256:{n:064x}"),
            };
            store.complete_push(&job, &record, None).await
        })
    };
    let (a, b) = (complete(first, 1), complete(second, 2));
    let mut waiting = 0;
    for _ in 0..200 {
        waiting = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut holder)
        .await
        .unwrap();
        if waiting == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(waiting, 2, "both completions wait on the execution row");
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();

    let e = f.store.execution(e.id).await.unwrap().unwrap();
    assert!(
        e.artifacts
            .iter()
            .all(|a| a.push_state == PushState::Pushed),
        "{:?}",
        e.artifacts
    );
    assert_eq!(e.attestation, AttestationState::Attested);
    assert!(e.attested_at.is_some());
}

/// A worker's job runs its statements through a session ([`store::Store::session`]): on
/// PostgreSQL, one connection from the claim to the completion, back in the pool when the session
/// is dropped. Its backend killed midway costs the one statement that was sent to it, not the
/// session: the next statement runs on a fresh connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_session_keeps_one_connection_and_outlives_its_backend_being_killed() {
    use sqlx::Connection as _;

    let f = fixture(Backend::Postgres).await;
    let e = created_with(&f, "run-1", 2).await;
    let mut admin = sqlx::PgConnection::connect(&f.db.url).await.unwrap();
    // The backends whose last statement starts with `prefix`.
    async fn backends_of(admin: &mut sqlx::PgConnection, prefix: &str) -> Vec<i32> {
        sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() AND starts_with(query, $1)",
        )
        .bind(prefix)
        .fetch_all(admin)
        .await
        .unwrap()
    }

    let busy = |s: &DynStore| s.pool_stats().iter().map(|p| p.size - p.idle).sum::<u32>();
    // Connections go back to the pool in the background (sqlx pings them first): wait for
    // `f.store`'s pool to have `want` connections in use.
    let settled = async |want: u32| {
        for _ in 0..100 {
            if busy(&f.store) == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        busy(&f.store)
    };
    assert_eq!(settled(0).await, 0, "the set-up's connections are back");

    let session = f.store.session().expect("PostgreSQL stores have sessions");
    let sign = session.claim_job("w", &LEASING).await.unwrap().unwrap();
    assert_eq!((sign.kind, sign.execution_id), (JobKind::Sign, e.id));
    let claimed_on = backends_of(&mut admin, "UPDATE jobs SET state = 'running'").await;
    assert_eq!(claimed_on.len(), 1, "one backend ran the claim");
    let (read, _) = session
        .execution_with_statement(e.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.id, e.id);
    let signed = session
        .complete_sign(&sign, b"env", "k", None)
        .await
        .unwrap();
    assert_eq!(signed.envelope, b"env");
    let completed_on = backends_of(&mut admin, "WITH handed AS MATERIALIZED").await;
    assert_eq!(
        completed_on, claimed_on,
        "the completion ran on the claim's connection"
    );
    assert_eq!(
        busy(&f.store),
        1,
        "the session holds its connection between statements"
    );

    // The session's backend is killed: the statement sent to it fails, the next one does not.
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(claimed_on[0])
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(killed);
    // A terminated backend answers its client before it leaves `pg_stat_activity`.
    for _ in 0..100 {
        let gone: bool =
            sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
                .bind(claimed_on[0])
                .fetch_one(&mut admin)
                .await
                .unwrap();
        if gone {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lost = session.execution(e.id).await;
    assert!(
        matches!(lost, Err(StoreError::Database(_))),
        "the killed backend's statement fails: {lost:?}"
    );
    let push = session.claim_job("w", &LEASING).await.unwrap().unwrap();
    assert_eq!((push.kind, push.execution_id), (JobKind::Push, e.id));
    let reclaimed_on = backends_of(&mut admin, "UPDATE jobs SET state = 'running'").await;
    assert_eq!(reclaimed_on.len(), 1);
    assert_ne!(
        reclaimed_on, claimed_on,
        "a fresh connection replaced the dead one"
    );

    drop(session);
    assert_eq!(
        settled(0).await,
        0,
        "a dropped session's connection is back in the pool"
    );
    assert!(
        fixture(Backend::Sqlite).await.store.session().is_none(),
        "SQLite runs in-process: no session to keep"
    );
}

async fn a_sign_completion_hands_its_first_push_to_the_signer_and_queues_the_rest(
    backend: Backend,
) {
    let f = fixture(backend).await;
    let (e, sign) = signing(&f, 3, "signer").await;
    let signed = f
        .store
        .complete_sign(&sign, b"env", "k", Some(hand_off(1, "att:app1")))
        .await
        .unwrap();
    let handed = signed.push.expect("the push is handed to the signer");
    assert_eq!(
        (handed.kind, handed.execution_id, handed.artifact_position),
        (JobKind::Push, e.id, Some(1))
    );
    assert_eq!((handed.owner.as_str(), handed.attempts), ("signer", 1));
    assert_eq!(signed.queued, 2);
    assert_eq!(handed.id, sign.id, "the sign job's own row became the push");
    assert_eq!(
        f.db.count("SELECT COUNT(*) FROM jobs").await,
        3,
        "one job per image, none left over from signing"
    );
    let lock = signed.lock.expect("with its tag lock");
    assert_eq!(
        (lock.name.as_str(), lock.owner.as_str()),
        ("att:app1", "signer")
    );
    assert!(f.store.holds_lock(&lock).await.unwrap());
    assert!(
        f.store
            .try_lock("att:app1", "other", LEASE)
            .await
            .unwrap()
            .is_none(),
        "the tag is the signer's"
    );

    // Other workers get the other two pushes and never the handed one.
    let mut claimed = Vec::new();
    while let Some(j) = f.store.claim_job("other", &LEASING).await.unwrap() {
        claimed.push(j.artifact_position.unwrap());
    }
    claimed.sort();
    assert_eq!(claimed, vec![0, 2]);
    assert!(
        f.store.renew_lease(&handed, LEASING.lease).await.unwrap(),
        "the handed push is leased to the signer"
    );
    let record = PushRecord {
        reference: "r".into(),
        manifest_digest: "sha256:00".into(),
    };
    f.store
        .complete_push(&handed, &record, Some(&lock))
        .await
        .unwrap();
    let e = f.store.execution(e.id).await.unwrap().unwrap();
    assert_eq!(e.artifacts[1].push_state, PushState::Pushed);
    assert_eq!(e.artifacts[1].pushed_by.as_deref(), Some("signer"));
    assert!(!f.store.holds_lock(&lock).await.unwrap(), "released");
}

async fn a_claimed_sign_job_comes_with_what_its_separate_read_gives_and_other_kinds_without(
    backend: Backend,
) {
    let f = fixture(backend).await;
    let templated = created_templated(&f, "run-t").await;
    let one = created_with(&f, "run-1", 1).await;
    let three = created_with(&f, "run-3", 3).await;

    let mut kinds = Vec::new();
    while let Some(claimed) = f.store.claim_job_to_run("w", &LEASING).await.unwrap() {
        let job = &claimed.job;
        assert!(
            f.store.renew_lease(job, LEASING.lease).await.unwrap(),
            "the job is leased to the claimer"
        );
        match job.kind {
            JobKind::Sign => {
                let (execution, statement) = claimed.to_sign.expect("a sign job's read");
                let read = f.store.execution_with_statement(job.execution_id).await;
                assert_eq!(Some((execution.clone(), statement.clone())), read.unwrap());
                assert!(
                    statement.is_some(),
                    "a sign job's execution has its statement"
                );
                let images = if execution.id == one.id { 1 } else { 3 };
                assert_eq!(execution.artifacts.len(), images);
            }
            _ => assert!(claimed.to_sign.is_none(), "{:?} reads nothing", job.kind),
        }
        kinds.push((job.kind, job.execution_id));
        if job.kind == JobKind::Sign && job.execution_id == one.id {
            // Its push job is queued, to be claimed below without a read.
            f.store.complete_sign(job, b"env", "k", None).await.unwrap();
        }
    }
    kinds.sort_by_key(|(kind, id)| (kind.as_str(), id.0));
    let mut want = vec![
        (JobKind::Push, one.id),
        (JobKind::Resolve, templated.id),
        (JobKind::Sign, one.id),
        (JobKind::Sign, three.id),
    ];
    want.sort_by_key(|(kind, id)| (kind.as_str(), id.0));
    assert_eq!(kinds, want);
}

async fn a_push_completion_claims_the_next_job_only_once_it_finished_its_own(backend: Backend) {
    let f = fixture(backend).await;
    let two = signed(&f, 2, "signer").await;
    let record = PushRecord {
        reference: "r".into(),
        manifest_digest: "sha256:00".into(),
    };
    let complete = async |job: &attestd::store::Job, owner: &str| {
        f.store
            .complete_push_and_claim(job, &record, None, owner, &LEASING)
            .await
    };
    let first = f.store.claim_job("w", &LEASING).await.unwrap().unwrap();
    assert_eq!((first.kind, first.execution_id), (JobKind::Push, two.id));
    let waiting = created_with(&f, "run-2", 1).await;

    // The completion records the push and leases the next due job, the other push, to "w".
    let (attested, next) = complete(&first, "w").await.unwrap();
    assert!(attested.is_none(), "one artifact is still to push");
    let second = next.expect("the next job").job;
    assert_eq!((second.kind, second.execution_id), (JobKind::Push, two.id));
    assert_ne!(second.artifact_position, first.artifact_position);
    assert_eq!(second.owner, "w");
    assert!(f.store.renew_lease(&second, LEASING.lease).await.unwrap());
    let e = f.store.execution(two.id).await.unwrap().unwrap();
    let pushed = |e: &attestd::store::Execution, p: Option<i32>| {
        e.artifacts
            .iter()
            .find(|a| Some(a.position) == p)
            .unwrap()
            .push_state
            == PushState::Pushed
    };
    assert!(pushed(&e, first.artifact_position) && !pushed(&e, second.artifact_position));

    // The last push attests its execution, and the next job is a sign job with its read.
    let (attested, next) = complete(&second, "w").await.unwrap();
    assert!(attested.is_some(), "the execution is attested");
    let sign = next.expect("the sign job");
    assert_eq!(
        (sign.job.kind, sign.job.execution_id),
        (JobKind::Sign, waiting.id)
    );
    assert_eq!(
        sign.to_sign,
        f.store.execution_with_statement(waiting.id).await.unwrap()
    );

    // A completion whose lease was taken over writes nothing and claims nothing.
    f.store
        .complete_sign(&sign.job, b"env", "k", None)
        .await
        .unwrap();
    let push = f.store.claim_job("w", &LEASING).await.unwrap().unwrap();
    expire_lease(&f, &push).await;
    let theirs = f.store.claim_job("other", &LEASING).await.unwrap().unwrap();
    assert_eq!(theirs.id, push.id);
    let queued = created_with(&f, "run-3", 1).await;
    let lost = complete(&push, "w").await;
    assert!(matches!(lost, Err(StoreError::LeaseLost(_))), "{lost:?}");
    assert_eq!(
        f.db.count("SELECT COUNT(*) FROM jobs WHERE state = 'running' AND lease_owner = 'w'")
            .await,
        0,
        "nothing leased to the loser"
    );
    let e = f.store.execution(waiting.id).await.unwrap().unwrap();
    assert_eq!(e.artifacts[0].push_state, PushState::Pending, "{e:?}");

    // The winner's completion claims the job left queued, and then finds none.
    let (_, next) = complete(&theirs, "other").await.unwrap();
    let last = next.expect("run-3's sign job").job;
    assert_eq!(last.execution_id, queued.id);
    f.store
        .complete_sign(&last, b"env", "k", None)
        .await
        .unwrap();
    let final_push = f.store.claim_job("other", &LEASING).await.unwrap().unwrap();
    let (_, none) = complete(&final_push, "other").await.unwrap();
    assert!(none.is_none(), "nothing left to claim");
}

/// The push of artifact `position` handed to the signer, with the tag lock `lock`.
fn hand_off(position: i32, lock: &str) -> store::HandOff<'_> {
    store::HandOff {
        position,
        lease: LEASING.lease,
        lock,
        lock_ttl: LEASE,
    }
}

async fn a_handed_push_whose_tag_is_locked_by_another_worker_comes_without_the_lock(
    backend: Backend,
) {
    let f = fixture(backend).await;
    let (e, sign) = signing(&f, 1, "signer").await;
    let theirs = f
        .store
        .try_lock("att:app0", "other", LEASE)
        .await
        .unwrap()
        .unwrap();
    let signed = f
        .store
        .complete_sign(&sign, b"env", "k", Some(hand_off(0, "att:app0")))
        .await
        .unwrap();
    assert_eq!(signed.push.unwrap().execution_id, e.id);
    assert!(
        signed.lock.is_none(),
        "the push waits for the lock as any push does"
    );
    assert!(f.store.holds_lock(&theirs).await.unwrap(), "still theirs");
}

async fn a_handed_push_whose_signer_stops_is_taken_over_when_its_lease_expires(backend: Backend) {
    let f = fixture(backend).await;
    let (e, sign) = signing(&f, 1, "signer").await;
    let signed = f
        .store
        .complete_sign(&sign, b"env", "k", Some(hand_off(0, "att:app0")))
        .await
        .unwrap();
    let handed = signed.push.unwrap();
    assert_eq!(signed.queued, 0);
    assert!(
        f.store.claim_job("b", &LEASING).await.unwrap().is_none(),
        "held by the signer while its lease runs"
    );

    // The signer stops (killed) before pushing: nobody renews the lease.
    expire_lease(&f, &handed).await;
    let taken = f.store.claim_job("b", &LEASING).await.unwrap().unwrap();
    assert_eq!((taken.id, taken.kind), (handed.id, JobKind::Push));
    assert_eq!(taken.attempts, 2, "the stopped attempt counts");
    let record = PushRecord {
        reference: "r".into(),
        manifest_digest: "sha256:00".into(),
    };
    assert!(matches!(
        f.store.complete_push(&handed, &record, None).await,
        Err(StoreError::LeaseLost(_))
    ));
    f.store.complete_push(&taken, &record, None).await.unwrap();
    let e = f.store.execution(e.id).await.unwrap().unwrap();
    assert_eq!(e.attestation, AttestationState::Attested);
    assert_eq!(e.artifacts[0].pushed_by.as_deref(), Some("b"));
}

async fn a_push_completion_releases_its_tag_lock_and_says_once_that_it_attested(backend: Backend) {
    let f = fixture(backend).await;
    let e = signed(&f, 2, "w").await;
    let first = f.store.claim_job("w", &LEASING).await.unwrap().unwrap();
    let second = f.store.claim_job("w", &LEASING).await.unwrap().unwrap();
    let record = PushRecord {
        reference: "r".into(),
        manifest_digest: "sha256:00".into(),
    };
    let tag = "att:127.0.0.1:5999/acme/app0@sha256:01";

    // A completion that finds its job taken over writes nothing: the lock stays held.
    let lock = f
        .store
        .try_lock(tag, "w", LEASING.lease)
        .await
        .unwrap()
        .unwrap();
    expire_lease(&f, &first).await;
    let first = {
        let taken = f.store.claim_job("w2", &LEASING).await.unwrap().unwrap();
        assert!(matches!(
            f.store.complete_push(&first, &record, Some(&lock)).await,
            Err(StoreError::LeaseLost(_))
        ));
        taken
    };
    assert!(
        f.store
            .try_lock(tag, "w2", LEASING.lease)
            .await
            .unwrap()
            .is_none(),
        "still held by w"
    );
    assert!(f.store.holds_lock(&lock).await.unwrap());

    let attested = f
        .store
        .complete_push(&first, &record, Some(&lock))
        .await
        .unwrap();
    assert_eq!(attested, None, "one artifact is still to push");
    assert!(!f.store.holds_lock(&lock).await.unwrap());
    assert!(
        f.store
            .try_lock(tag, "w2", LEASING.lease)
            .await
            .unwrap()
            .is_some(),
        "released by the completion"
    );

    let attested = f
        .store
        .complete_push(&second, &record, None)
        .await
        .unwrap()
        .expect("the last push attests the execution");
    let e = f.store.execution(e.id).await.unwrap().unwrap();
    assert_eq!(e.attestation, AttestationState::Attested);
    let stamped = (e.attested_at.unwrap() - e.received_at).unsigned_abs();
    assert!(
        attested.abs_diff(stamped) < Duration::from_millis(1),
        "{attested:?} from receipt, stored {stamped:?}"
    );
}

async fn summaries_list_the_same_page_with_artifact_counts_stored_at_ingest_or_counted(
    backend: Backend,
) {
    let f = fixture(backend).await;
    for new in [new_execution("run-2", 2), templated_execution("run-t")] {
        assert!(matches!(
            f.store.record_build(new).await,
            Ok(Recorded::Created(_))
        ));
    }
    let batch = vec![
        new_execution("run-3", 3),
        new_execution("run-1", 1),
        failed_execution_without_images("run-0"),
    ];
    for outcome in f.store.record_builds(batch).await {
        assert!(matches!(outcome, Ok(Recorded::Created(_))));
    }
    let expected: std::collections::BTreeMap<&str, u32> = [
        ("run-2", 2),
        ("run-t", 2),
        ("run-3", 3),
        ("run-1", 1),
        ("run-0", 0),
    ]
    .into();
    assert_eq!(
        f.db.count("SELECT COUNT(*) FROM executions WHERE artifact_count IS NULL")
            .await,
        0,
        "every ingest path stores the count"
    );

    let filter = store::ExecutionFilter {
        limit: 50,
        ..Default::default()
    };
    let full = f.store.list_executions(&filter).await.unwrap();
    let check = |summaries: Vec<store::ExecutionSummary>, when: &str| {
        let ids = |e: &[store::ExecutionSummary]| e.iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(
            ids(&summaries),
            full.iter().map(|e| e.id).collect::<Vec<_>>(),
            "{when}: the same page in the same order"
        );
        for (s, e) in summaries.iter().zip(&full) {
            assert_eq!(s.artifacts.0 as usize, e.artifacts.len(), "{when}");
            assert_eq!(
                s.artifacts.0,
                expected[s.pipeline_execution_id.as_str()],
                "{when}: {}",
                s.pipeline_execution_id
            );
        }
    };
    check(
        f.store.list_execution_summaries(&filter).await.unwrap(),
        "stored",
    );
    // Executions recorded before their count was stored (migration 0009) have none.
    f.db.execute("UPDATE executions SET artifact_count = NULL")
        .await;
    check(
        f.store.list_execution_summaries(&filter).await.unwrap(),
        "counted",
    );
}

async fn an_execution_with_its_statement_is_one_read_of_what_the_two_reads_give(backend: Backend) {
    let f = fixture(backend).await;
    let templated = created_templated(&f, "run-t").await;
    for (e, images) in [
        (created_with(&f, "run-1", 1).await, 1),
        (created_with(&f, "run-3", 3).await, 3),
        (templated, 2),
    ] {
        let (execution, statement) = f
            .store
            .execution_with_statement(e.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(execution, f.store.execution(e.id).await.unwrap().unwrap());
        assert_eq!(execution.artifacts.len(), images);
        assert_eq!(statement, f.store.statement(e.id).await.unwrap());
        // An execution whose images come from templates has none until they are resolved.
        assert_eq!(statement.is_some(), e.pipeline_execution_id != "run-t");
    }
    assert!(
        f.store
            .execution_with_statement(ExecutionId::new())
            .await
            .unwrap()
            .is_none()
    );
}

async fn a_pages_ids_then_its_executions_by_id_read_what_the_page_reads(backend: Backend) {
    let f = fixture(backend).await;
    let now = f.db.seconds_ago(0);
    // (run, images, attestation state, attested_at, last_error): every state, to check which
    // `Execution::is_settled` calls settled on the way.
    let cases = [
        ("skipped", 1, "skipped", "NULL", "NULL"),
        ("skipped-with-error", 1, "skipped", "NULL", "'x'"),
        ("attested", 2, "attested", now.as_str(), "NULL"),
        ("attested-unstamped", 2, "attested", "NULL", "NULL"),
        ("attested-with-error", 1, "attested", now.as_str(), "'x'"),
        ("resolving", 1, "resolving", "NULL", "NULL"),
        ("pending", 3, "pending", "NULL", "NULL"),
        ("pushing", 2, "pushing", "NULL", "'x'"),
        ("failed", 1, "failed", "NULL", "'x'"),
    ];
    for (run, images, state, attested_at, error) in cases {
        created_with(&f, run, images).await;
        f.db.execute(&format!(
            "UPDATE executions SET attestation_state = '{state}', attested_at = {attested_at}, \
             last_error = {error} WHERE pipeline_execution_id = '{run}'"
        ))
        .await;
    }
    let mut settled = Vec::new();
    for ascending in [false, true] {
        let mut filter = store::ExecutionFilter {
            limit: 4,
            ascending,
            ..Default::default()
        };
        loop {
            let page = f.store.list_executions(&filter).await.unwrap();
            let ids = f.store.list_execution_ids(&filter).await.unwrap();
            assert_eq!(
                ids,
                page.iter().map(|e| e.id).collect::<Vec<_>>(),
                "ascending: {ascending}"
            );
            let by_id = |mut v: Vec<store::Execution>| {
                v.sort_by_key(|e| e.id);
                v
            };
            assert_eq!(
                by_id(f.store.executions_in(&ids).await.unwrap()),
                by_id(page.clone())
            );
            let mut summaries = f.store.list_execution_summaries(&filter).await.unwrap();
            let mut in_ids = f.store.execution_summaries_in(&ids).await.unwrap();
            summaries.sort_by_key(|e| e.id);
            in_ids.sort_by_key(|e| e.id);
            assert_eq!(in_ids, summaries);
            settled.extend(
                page.iter()
                    .filter(|e| e.is_settled())
                    .map(|e| e.pipeline_execution_id.clone()),
            );
            if page.len() < 4 {
                break;
            }
            filter.after = page.last().map(|e| e.id);
        }
    }
    settled.sort();
    assert_eq!(
        settled,
        ["attested", "attested", "skipped", "skipped"],
        "settled: skipped, and attested with its time, without an error (once per order)"
    );
}
