//! Fenced delivery: a worker that loses its tag lock mid-push writes nothing and is retried, a
//! push stops the moment its lock renewal fails, a panicking push is counted and released, a job
//! whose worker keeps stopping ends dead with the reason, and the worker prunes done jobs. Faults
//! are made with a stalling proxy in front of a real registry and with SQL a crashed or competing
//! replica would leave behind; the checks are the registry's `.att` manifest and the API.

use std::time::Duration;

use attestd::config::{PushFormat, Settings};
use attestd::domain::Digest;
use attestd::registry::{ErrorCode, PushRequest, Registries, RegistryError, Unfenced, WriteFence};
use serde_json::Value;

use crate::attestation::{REPO, att_layers, drive_until, execution, hook_for};
use crate::backend_tests;
use crate::support::Backend;
use crate::support::app::*;
use crate::support::proxy::FaultProxy;
use crate::support::registry::{MapSecrets, OCI_MANIFEST, TestRegistry};

backend_tests!(
    a_worker_whose_lock_was_taken_over_mid_push_writes_nothing_and_its_retry_keeps_both_layers,
    a_push_stops_as_soon_as_renewing_its_tag_lock_fails,
    a_panic_inside_a_push_counts_an_attempt_and_releases_the_job_and_its_lock,
    a_job_whose_worker_keeps_stopping_is_dead_with_the_reason_and_retry_redrives_it,
    the_worker_prunes_done_jobs_past_their_age_and_the_execution_stays_attested,
    a_manifest_write_the_registry_refused_releases_the_tag_lock_at_once,
);

/// An app whose registry `reg` is reached at `host` (its own, or a proxy's). A failed push is
/// retried 1–2 s later, so the `run_pending_jobs` that failed it returns and leaves it for the
/// test to see.
async fn spawn_at(
    backend: Backend,
    reg: &TestRegistry,
    host: String,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let mut registry = reg.settings(PushFormat::Att);
    registry.host = host;
    TestApp::spawn_with(backend, move |s| {
        s.registries = vec![registry];
        s.worker.backoff_base_ms = 2000;
        s.worker.backoff_max_secs = 2;
        configure(s);
    })
    .await
}

/// Drive the worker in the background until a push holds its tag lock and stalls uploading its
/// layer; the task ends when the worker has nothing left to do.
async fn run_until_a_push_stalls(
    app: &TestApp,
    proxy: &FaultProxy,
) -> tokio::task::JoinHandle<usize> {
    proxy.stall_next(&format!("POST /v2/{REPO}/blobs/uploads/"));
    let worker = tokio::spawn({
        let app = app.app.clone();
        async move { app.run_pending_jobs().await.unwrap() }
    });
    proxy.stalled(Duration::from_secs(20)).await;
    worker
}

async fn retry(app: &TestApp, id: &str) {
    let resp = app
        .http
        .post(app.url(&format!("/v1/executions/{id}/retry")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
}

/// The blobs of the `.att` layers, in manifest order.
async fn att_blobs(reg: &TestRegistry, digest: &Digest) -> Vec<Vec<u8>> {
    att_layers(reg, digest)
        .await
        .into_iter()
        .map(|(_, blob)| blob)
        .collect()
}

fn push_of(e: &Value) -> &Value {
    &e["artifacts"][0]["push"]
}

async fn a_worker_whose_lock_was_taken_over_mid_push_writes_nothing_and_its_retry_keeps_both_layers(
    backend: Backend,
) {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "1.4.0").await;
    let proxy = FaultProxy::start(&reg.host()).await;
    // A long lock TTL: its heartbeat does not come round during the test, so only the fencing
    // token check before the manifest write can notice the take-over.
    let app = spawn_at(backend, &reg, proxy.host(), |s| {
        s.worker.lock_ttl_secs = 60;
        s.worker.push_deadline_secs = 40;
    })
    .await;
    let first = &app.record(&hook_for("run-1", &proxy.host(), &digest)).await;
    let second = &app.record(&hook_for("run-2", &proxy.host(), &digest)).await;

    // Worker A signs run-1 and goes straight on to its push (handed over by the signing), and
    // stalls there uploading the layer.
    let a = run_until_a_push_stalls(&app, &proxy).await;

    // A's lock runs out on the database's clock; worker B takes it over and delivers run-2.
    let past = app.db.seconds_ago(1);
    let expired = app
        .db
        .execute(&format!("UPDATE locks SET expires_at = {past}"))
        .await;
    assert_eq!(expired, 1, "A holds the one tag lock");
    assert_eq!(
        app.app.run_pending_jobs().await.unwrap(),
        2,
        "B signs and pushes run-2"
    );
    assert_eq!(
        att_blobs(&reg, &digest).await,
        [app.attestation(second).await]
    );

    proxy.release();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(20), a)
            .await
            .expect("A finishes its attempt")
            .unwrap(),
        2,
        "A: run-1's signature and the push it gave up"
    );
    assert_eq!(
        att_blobs(&reg, &digest).await,
        [app.attestation(second).await],
        "A wrote no manifest: run-2's layer is still there, alone"
    );
    let e = execution(&app, first).await;
    let push = push_of(&e);
    assert_eq!(push["state"], "retrying", "{push}");
    assert_eq!(push["attempts"], 1, "{push}");
    let error = push["lastError"].as_str().unwrap();
    assert!(
        error.starts_with("tag_lock_lost: another worker took over the tag lock before the manifest write; nothing was written"),
        "{error}"
    );
    assert_eq!(e["attestation"]["state"], "pushing");

    // Its retry reads run-2's layer and appends run-1's.
    let e = drive_until(&app, first, |e| e["attestation"]["state"] != "pushing").await;
    assert_eq!(e["attestation"]["state"], "attested", "{e}");
    assert_eq!(
        push_of(&e)["attempts"],
        2,
        "the attempt that lost its lock counts"
    );
    assert_eq!(
        att_blobs(&reg, &digest).await,
        [app.attestation(second).await, app.attestation(first).await],
        "the .att manifest holds both layers"
    );
}

async fn a_push_stops_as_soon_as_renewing_its_tag_lock_fails(backend: Backend) {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "1.4.0").await;
    let proxy = FaultProxy::start(&reg.host()).await;
    // Renewed every 2 s; the deadline would only cut the push after 5 s.
    let app = spawn_at(backend, &reg, proxy.host(), |s| {
        s.worker.lock_ttl_secs = 6;
        s.worker.push_deadline_secs = 5;
    })
    .await;
    let id = &app.record(&hook_for("run-1", &proxy.host(), &digest)).await;
    let worker = run_until_a_push_stalls(&app, &proxy).await;
    let started = tokio::time::Instant::now();

    // Another replica takes the lock over (as if it had found it expired).
    let stolen = app
        .db
        .execute("UPDATE locks SET owner = 'another-replica', token = token + 1")
        .await;
    assert_eq!(stolen, 1);
    let ran = tokio::time::timeout(Duration::from_secs(20), worker)
        .await
        .expect("the worker gives the push up")
        .unwrap();
    assert_eq!(ran, 2);
    let stopped_after = started.elapsed();
    assert!(
        stopped_after < Duration::from_secs(5),
        "stopped at the next renewal, before the deadline: {stopped_after:?}"
    );
    let e = execution(&app, id).await;
    let push = push_of(&e);
    assert_eq!(push["state"], "retrying", "{push}");
    assert_eq!(push["attempts"], 1, "{push}");
    let error = push["lastError"].as_str().unwrap();
    assert!(
        error.starts_with("tag_lock_lost: another worker took over the lock on att:")
            && error.ends_with("the push was stopped"),
        "{error}"
    );
    assert!(
        reg.manifest(REPO, &format!("sha256-{}.att", digest.hex()))
            .await
            .is_none(),
        "nothing was written"
    );

    // The other replica is done with the tag; the re-driven push delivers exactly one layer.
    let past = app.db.seconds_ago(1);
    app.db
        .execute(&format!("UPDATE locks SET expires_at = {past}"))
        .await;
    proxy.release();
    let e = drive_until(&app, id, |e| e["attestation"]["state"] != "pushing").await;
    assert_eq!(e["attestation"]["state"], "attested", "{e}");
    assert_eq!(push_of(&e)["attempts"], 2);
    assert_eq!(att_blobs(&reg, &digest).await, [app.attestation(id).await]);
}

async fn a_panic_inside_a_push_counts_an_attempt_and_releases_the_job_and_its_lock(
    backend: Backend,
) {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "1.4.0").await;
    // A lock left behind would hold the retry for a minute.
    let app = spawn_at(backend, &reg, reg.host(), |s| {
        s.worker.lock_ttl_secs = 60;
        s.worker.push_deadline_secs = 40;
    })
    .await;
    app.app.faults.panic_in_next_pushes(1);
    let id = &app.record(&hook_for("run-1", &reg.host(), &digest)).await;
    assert_eq!(app.app.run_pending_jobs().await.unwrap(), 2);
    let e = execution(&app, id).await;
    let push = push_of(&e);
    assert_eq!(
        push["state"], "retrying",
        "released, not left leased: {push}"
    );
    assert_eq!(push["attempts"], 1, "{push}");
    assert!(push["nextAttemptAt"].is_string(), "{push}");
    assert_eq!(
        push["lastError"],
        "internal error (panic: injected fault: panic in push)"
    );

    let e = tokio::time::timeout(
        Duration::from_secs(20),
        drive_until(&app, id, |e| e["attestation"]["state"] != "pushing"),
    )
    .await
    .expect("the retry did not wait for a lock the panic left behind");
    assert_eq!(e["attestation"]["state"], "attested", "{e}");
    assert_eq!(push_of(&e)["attempts"], 2, "the panicked attempt counts");
    assert_eq!(att_blobs(&reg, &digest).await, [app.attestation(id).await]);
}

async fn a_job_whose_worker_keeps_stopping_is_dead_with_the_reason_and_retry_redrives_it(
    backend: Backend,
) {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "1.4.0").await;
    let app = spawn_at(backend, &reg, reg.host(), |_| {}).await;
    let id = &app.record(&hook_for("run-1", &reg.host(), &digest)).await;
    let w = &app.app.settings.worker;
    assert_eq!(w.max_reclaims, 3, "the default in config/default.toml");
    let leasing = attestd::store::Leasing {
        lease: Duration::from_secs(w.lease_secs),
        max_reclaims: w.max_reclaims,
        max_attempts: w.max_attempts,
    };
    // Four worker processes in turn take the sign job and are killed before finishing it.
    for n in 0..=w.max_reclaims {
        let job = app
            .app
            .store
            .claim_job(&format!("killed-{n}"), &leasing)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("taken over after {n} stops"));
        let past = app.db.seconds_ago(1);
        app.db
            .execute(&format!(
                "UPDATE jobs SET lease_expires_at = {past} WHERE id = {}",
                job.id
            ))
            .await;
    }
    assert_eq!(app.app.run_pending_jobs().await.unwrap(), 0);
    let e = execution(&app, id).await;
    assert_eq!(e["attestation"]["state"], "failed", "{e}");
    assert_eq!(
        e["attestation"]["lastError"],
        "the worker processing this job stopped 4 times"
    );

    retry(&app, id).await;
    assert_eq!(app.app.run_pending_jobs().await.unwrap(), 2);
    let e = execution(&app, id).await;
    assert_eq!(e["attestation"]["state"], "attested", "{e}");
    assert!(e["attestation"]["lastError"].is_null());
    assert_eq!(att_blobs(&reg, &digest).await, [app.attestation(id).await]);
}

async fn the_worker_prunes_done_jobs_past_their_age_and_the_execution_stays_attested(
    backend: Backend,
) {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "1.4.0").await;
    let app = spawn_at(backend, &reg, reg.host(), |s| {
        s.worker.enabled = true;
        s.worker.prune_interval_secs = 1;
    })
    .await;
    let hook = hook_for("run-1", &reg.host(), &digest);
    let id = &app.record(&hook).await;
    let done = || {
        app.db
            .count("SELECT COUNT(*) FROM jobs WHERE state = 'done'")
    };
    // One image, one worker: the sign job's row became the push job, so one done job is left.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while execution(&app, id).await["attestation"]["state"] != "attested" || done().await < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not attested in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(done().await, 1, "younger than retain_done_hours: kept");
    assert_eq!(app.db.count("SELECT COUNT(*) FROM jobs").await, 1);

    let retain = app.app.settings.worker.retain_done_hours as u32;
    let older = app.db.seconds_ago((retain + 1) * 3600);
    app.db
        .execute(&format!(
            "UPDATE jobs SET updated_at = {older} WHERE state = 'done'"
        ))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.db.count("SELECT COUNT(*) FROM jobs").await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker did not prune the done jobs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let e = execution(&app, id).await;
    assert_eq!(e["attestation"]["state"], "attested");
    // A redelivery of the pruned execution queues nothing and pushes nothing again.
    assert_eq!(app.post_webhook(&hook).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.db.count("SELECT COUNT(*) FROM jobs").await, 0);
    assert_eq!(att_blobs(&reg, &digest).await, [app.attestation(id).await]);
    app.app.shutdown.cancel();
}

async fn a_manifest_write_the_registry_refused_releases_the_tag_lock_at_once(backend: Backend) {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "1.4.0").await;
    let proxy = FaultProxy::start(&reg.host()).await;
    // A lock left to expire would hold the tag for a minute.
    let app = spawn_at(backend, &reg, proxy.host(), |s| {
        s.worker.lock_ttl_secs = 60;
        s.worker.push_deadline_secs = 40;
    })
    .await;
    let first = &app.record(&hook_for("run-1", &proxy.host(), &digest)).await;

    // Hold run-1's manifest write, and meanwhile delete the layer it names: distribution answers
    // the write with 400 MANIFEST_BLOB_UNKNOWN, an answer that settles it (nothing stored).
    proxy.stall_next(&format!(
        "PUT /v2/{REPO}/manifests/sha256-{}.att",
        digest.hex()
    ));
    let worker = tokio::spawn({
        let app = app.app.clone();
        async move { app.run_pending_jobs().await.unwrap() }
    });
    proxy.stalled(Duration::from_secs(20)).await;
    let layer = Digest::of(&app.attestation(first).await);
    let deleted = reqwest::Client::new()
        .delete(format!("{}/v2/{REPO}/blobs/{layer}", reg.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 202, "delete the layer blob");
    proxy.release();
    worker.await.unwrap();
    let e = execution(&app, first).await;
    let push = push_of(&e);
    assert_eq!(push["state"], "retrying", "{push}");
    assert!(
        push["lastError"]
            .as_str()
            .unwrap()
            .contains("the registry lost an uploaded blob"),
        "{push}"
    );
    assert!(
        reg.manifest(REPO, &format!("sha256-{}.att", digest.hex()))
            .await
            .is_none()
    );

    // The lock was released: run-2 on the same tag is pushed now, not after the lock's TTL.
    let second = &app.record(&hook_for("run-2", &proxy.host(), &digest)).await;
    tokio::time::timeout(Duration::from_secs(15), app.app.run_pending_jobs())
        .await
        .expect("run-2 does not wait for run-1's lock")
        .unwrap();
    let e = execution(&app, second).await;
    assert_eq!(e["attestation"]["state"], "attested", "{e}");
    assert_eq!(push_of(&e)["attempts"], 1, "{e}");
    // And run-1's retry appends to it.
    let e = drive_until(&app, first, |e| e["attestation"]["state"] != "pushing").await;
    assert_eq!(e["attestation"]["state"], "attested", "{e}");
    assert_eq!(
        att_blobs(&reg, &digest).await,
        [app.attestation(second).await, app.attestation(first).await]
    );
}

/// A fence that refuses, as the worker's does once its tag lock changed hands.
struct Refused;

#[async_trait::async_trait]
impl WriteFence for Refused {
    async fn check(&self) -> Result<(), RegistryError> {
        Err(RegistryError::retryable(ErrorCode::LockLost, "lock lost"))
    }
}

/// A fence that passes and then has `proxy` hold the push's read-back of the `.att` tag.
struct StallReadBack<'a> {
    proxy: &'a FaultProxy,
    tag: String,
}

#[async_trait::async_trait]
impl WriteFence for StallReadBack<'_> {
    async fn check(&self) -> Result<(), RegistryError> {
        self.proxy
            .stall_next(&format!("HEAD /v2/{REPO}/manifests/{}", self.tag));
        Ok(())
    }
}

fn registries(host: &str, reg: &TestRegistry) -> Registries {
    let mut settings = reg.settings(PushFormat::Att);
    settings.host = host.to_owned();
    Registries::new(&[settings], std::sync::Arc::new(MapSecrets::empty())).expect("registries")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_fence_leaves_the_att_manifest_as_it_was() {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "v1").await;
    let regs = registries(&reg.host(), &reg);
    let image = format!("{}/{REPO}:v1", reg.host()).parse().unwrap();
    let request = |envelope: &'static [u8]| PushRequest {
        image: &image,
        digest: &digest,
        envelope,
        predicate_type: "https://slsa.dev/provenance/v1",
        key_id: "k",
    };
    regs.push_fenced(&request(br#"{"n":1}"#), &Unfenced)
        .await
        .unwrap();
    let err = regs
        .push_fenced(&request(br#"{"n":2}"#), &Refused)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::LockLost);
    assert!(err.is_retryable());
    assert_eq!(att_blobs(&reg, &digest).await, [br#"{"n":1}"#.to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_back_that_lost_a_layer_the_push_read_fails_it_as_retryable() {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "v1").await;
    let proxy = FaultProxy::start(&reg.host()).await;
    let regs = registries(&proxy.host(), &reg);
    let image = format!("{}/{REPO}:v1", proxy.host()).parse().unwrap();
    let request = |envelope: &'static [u8]| PushRequest {
        image: &image,
        digest: &digest,
        envelope,
        predicate_type: "https://slsa.dev/provenance/v1",
        key_id: "k",
    };
    let tag = format!("sha256-{}.att", digest.hex());
    regs.push(&request(br#"{"n":1}"#)).await.unwrap();

    let fence = StallReadBack {
        proxy: &proxy,
        tag: tag.clone(),
    };
    let second = request(br#"{"n":2}"#);
    let pushing = regs.push_fenced(&second, &fence);
    let clobber = async {
        proxy.stalled(Duration::from_secs(20)).await;
        // Another writer replaces the manifest, keeping only the new layer.
        let mut manifest = reg.manifest_json(REPO, &tag).await;
        let layers = manifest["layers"].as_array_mut().unwrap();
        assert_eq!(layers.len(), 2, "the push wrote both layers");
        layers.remove(0);
        let body = serde_json::to_vec(&manifest).unwrap();
        reg.put_manifest(REPO, &tag, OCI_MANIFEST, &body).await;
        proxy.release();
    };
    let (pushed, ()) = tokio::join!(pushing, clobber);
    let err = pushed.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotVisible, "{err}");
    assert!(err.is_retryable());
    let lost = Digest::of(br#"{"n":1}"#);
    assert!(
        err.message().contains(&format!(
            "no longer lists 1 layer written with it ({lost}); another writer replaced it"
        )),
        "{err}"
    );
}
