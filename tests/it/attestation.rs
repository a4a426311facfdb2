//! The whole path: webhook → worker signs → worker pushes to a real registry → the attestation
//! there verifies with the public key, by code that did not produce it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use attestd::config::{KeySettings, PushFormat};
use attestd::domain::Digest;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::support::Backend;
use crate::support::app::*;
use crate::support::bao::Bao;
use crate::support::registry::{OCI_MANIFEST, TestRegistry};

backend_tests!(
    webhook_becomes_a_verified_attestation_in_the_registry,
    redelivered_webhook_never_produces_a_second_envelope,
    missing_image_fails_for_good_after_its_retries_and_retry_redrives_the_same_envelope,
    image_pushed_after_the_webhook_is_attested_on_a_later_attempt,
    registry_outage_is_retried_until_the_registry_is_back,
    fifty_executions_of_one_image_append_fifty_layers,
);

pub(crate) const REPO: &str = "acme/app";

async fn spawn_with_registry(backend: Backend, reg: &TestRegistry) -> TestApp {
    let settings = reg.settings(PushFormat::Att);
    TestApp::spawn_with(backend, move |s| {
        s.registries = vec![settings];
        s.worker.backoff_base_ms = 20;
        s.worker.backoff_max_secs = 1;
    })
    .await
}

pub(crate) fn hook_for(id: &str, host: &str, digest: &Digest) -> Value {
    let mut hook = webhook(id);
    hook["artifacts"] =
        json!([{"image": format!("{host}/{REPO}:1.4.0"), "digest": digest.as_str()}]);
    hook
}

fn python() -> String {
    std::env::var("ATTESTD_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("ATTESTD_TEST_PYTHON is not set: run ./scripts/test (it prepares the Python venv with the independent DSSE verifier)")
    })
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Verify a DSSE envelope with the independent Python (cryptography/OpenSSL) verifier.
pub(crate) fn python_verifies(envelope: &[u8], public_key_pem: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let env_path = dir.path().join("envelope.json");
    let pub_path = dir.path().join("key.pub");
    std::fs::write(&env_path, envelope).unwrap();
    std::fs::write(&pub_path, public_key_pem).unwrap();
    let out = std::process::Command::new(python())
        .arg(repo_root().join("scripts/fixtures/verify_dsse.py"))
        .arg(&env_path)
        .arg(&pub_path)
        .output()
        .expect("run verify_dsse.py");
    out.status.success()
}

pub(crate) async fn dev_public_key(app: &TestApp) -> (String, String) {
    let keys: Value = app
        .http
        .get(app.url("/v1/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &keys["keys"][0];
    assert_eq!(key["kind"], "development");
    (
        key["keyId"].as_str().unwrap().to_owned(),
        key["publicKeyPem"].as_str().unwrap().to_owned(),
    )
}

/// The DSSE layers under the image's `.att` tag, as (layer descriptor, blob) pairs.
pub(crate) async fn att_layers(reg: &TestRegistry, digest: &Digest) -> Vec<(Value, Vec<u8>)> {
    att_layers_in(reg, REPO, digest).await
}

/// [`att_layers`] of an image in another repository than [`REPO`].
pub(crate) async fn att_layers_in(
    reg: &TestRegistry,
    repo: &str,
    digest: &Digest,
) -> Vec<(Value, Vec<u8>)> {
    let manifest = reg
        .manifest_json(repo, &format!("sha256-{}.att", digest.hex()))
        .await;
    let mut out = Vec::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let blob = reg.blob(repo, layer["digest"].as_str().unwrap()).await;
        out.push((layer.clone(), blob));
    }
    out
}

pub(crate) async fn execution(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/v1/executions/{id}"), TOKEN)
        .await
        .json()
        .await
        .unwrap()
}

async fn webhook_becomes_a_verified_attestation_in_the_registry(backend: Backend) {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "1.4.0").await;
    let app = spawn_with_registry(backend, &reg).await;
    let id = &app.record(&hook_for("run-1", &reg.host(), &digest)).await;
    assert_eq!(
        app.app.run_pending_jobs().await.unwrap(),
        2,
        "one sign job, one push job"
    );
    assert_eq!(app.app.store.unfinished_jobs().await.unwrap(), 0);

    let e = execution(&app, id).await;
    assert_eq!(e["attestation"]["state"], "attested");
    let push = &e["artifacts"][0]["push"];
    assert_eq!(push["state"], "pushed");
    assert_eq!(
        push["reference"],
        format!("{}/{REPO}:sha256-{}.att", reg.host(), digest.hex())
    );
    let (key_id, pem) = dev_public_key(&app).await;
    assert_eq!(e["attestation"]["keyId"], key_id.as_str());

    // What the registry holds, read with plain HTTP.
    let layers = att_layers(&reg, &digest).await;
    assert_eq!(layers.len(), 1);
    let (layer, blob) = &layers[0];
    assert_eq!(layer["mediaType"], "application/vnd.dsse.envelope.v1+json");
    assert_eq!(
        layer["annotations"]["predicateType"],
        "https://slsa.dev/provenance/v1"
    );
    let served = app.attestation(id).await;
    assert_eq!(
        blob.as_slice(),
        served.as_slice(),
        "the registry holds the stored envelope byte for byte"
    );
    assert!(
        python_verifies(blob, &pem),
        "signature over PAE verifies with the public key"
    );
    let mut tampered = blob.clone();
    let envelope: Value = serde_json::from_slice(blob).unwrap();
    let payload = envelope["payload"].as_str().unwrap();
    let flipped = if payload.starts_with('e') { 'f' } else { 'e' };
    let pos = blob
        .windows(payload.len())
        .position(|w| w == payload.as_bytes())
        .unwrap();
    tampered[pos] = flipped as u8;
    assert!(
        !python_verifies(&tampered, &pem),
        "a changed payload must not verify"
    );

    use base64::Engine as _;
    let statement: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(statement["subject"][0]["digest"]["sha256"], digest.hex());
    let provenance = app
        .get(&format!("/v1/executions/{id}/provenance"), TOKEN)
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(payload)
            .unwrap(),
        provenance.as_ref(),
        "the signed payload is the stored statement"
    );

    // The same verification through the API, with a policy, recorded on the execution.
    let image = format!("{}/{REPO}@{}", reg.host(), digest);
    let report: Value = app
        .http
        .post(app.url("/v1/verify"))
        .bearer_auth(TOKEN)
        .json(&json!({
            "image": image,
            "publicKey": pem,
            "executionId": id,
            "policies": [{"name": "branch-main", "rego": include_str!("../../policies/examples/branch-main.rego")}],
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["allowed"], true, "{report}");
    let by_tag: Value = app
        .http
        .post(app.url("/v1/verify"))
        .bearer_auth(TOKEN)
        .json(&json!({"image": format!("{}/{REPO}:1.4.0", reg.host()), "keyId": key_id}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        by_tag["verified"], true,
        "a tag resolves to the same digest: {by_tag}"
    );
    let recorded = app
        .app
        .store
        .verifications(id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(recorded.len(), 1);
    assert!(recorded[0].allowed && recorded[0].policies == vec!["branch-main".to_owned()]);
}

async fn redelivered_webhook_never_produces_a_second_envelope(backend: Backend) {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "1.4.0").await;
    let app = spawn_with_registry(backend, &reg).await;
    let hook = hook_for("run-1", &reg.host(), &digest);
    let created: Value = app.post_webhook(&hook).await.json().await.unwrap();
    app.app.run_pending_jobs().await.unwrap();
    let id = created["id"].as_str().unwrap();
    let first = app.attestation(id).await;
    assert_eq!(app.post_webhook(&hook).await.status(), 200);
    assert_eq!(
        app.app.run_pending_jobs().await.unwrap(),
        0,
        "a redelivery queues no work"
    );
    let again = app.attestation(id).await;
    assert_eq!(first, again);
    assert_eq!(att_layers(&reg, &digest).await.len(), 1);
}

/// Push an image whose content (and so digest) is the same every time.
async fn push_fixed_image(reg: &TestRegistry, repo: &str) -> Digest {
    let layer = b"fixed layer".to_vec();
    let layer_digest = reg.put_blob(repo, &layer).await;
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer_digest.as_str()]}})).unwrap();
    let config_digest = reg.put_blob(repo, &config).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.as_str(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest.as_str(), "size": layer.len()}],
    }))
    .unwrap();
    reg.put_manifest(repo, "fixed", OCI_MANIFEST, &manifest)
        .await;
    Digest::of(&manifest)
}

/// Run due jobs until `done` holds for the execution, or fail after 30 s showing it.
pub(crate) async fn drive_until(app: &TestApp, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        app.app.run_pending_jobs().await.unwrap();
        let e = execution(app, id).await;
        if done(&e) {
            return e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "execution did not get there in 30 s: {e}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn missing_image_fails_for_good_after_its_retries_and_retry_redrives_the_same_envelope(
    backend: Backend,
) {
    let reg = TestRegistry::anonymous().await;
    // The digest exists in another repository only.
    let digest = push_fixed_image(&reg, "elsewhere/app").await;
    let app = spawn_with_registry(backend, &reg).await;
    let id = &app.record(&hook_for("run-1", &reg.host(), &digest)).await;
    let e = drive_until(&app, id, |e| e["artifacts"][0]["push"]["state"] == "dead").await;
    assert_eq!(e["attestation"]["state"], "failed");
    let push = &e["artifacts"][0]["push"];
    let retries = app.app.settings.worker.missing_image_retries;
    assert_eq!(retries, 3, "the default in config/default.toml");
    assert_eq!(
        push["attempts"],
        retries + 1,
        "the first attempt and its retries, then no more: {push}"
    );
    let error = push["lastError"].as_str().unwrap();
    assert!(
        error.starts_with("image_not_found: ")
            && error.contains("not found")
            && error.contains(digest.as_str()),
        "{error}"
    );
    let envelope = app.attestation(id).await;
    let signed_at = e["attestation"]["signedAt"].clone();

    // The image shows up; a user re-drives the delivery.
    push_fixed_image(&reg, REPO).await;
    let retry = app
        .http
        .post(app.url(&format!("/v1/executions/{id}/retry")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 202);
    assert_eq!(
        app.app.run_pending_jobs().await.unwrap(),
        1,
        "only the push runs again, not the signing"
    );
    let e = execution(&app, id).await;
    assert_eq!(e["attestation"]["state"], "attested");
    assert_eq!(e["attestation"]["signedAt"], signed_at);
    let layers = att_layers(&reg, &digest).await;
    assert_eq!(layers[0].1, envelope, "the same stored envelope was pushed");
}

async fn image_pushed_after_the_webhook_is_attested_on_a_later_attempt(backend: Backend) {
    let reg = TestRegistry::anonymous().await;
    // A registry replica that has not caught up yet: the digest is only in another repository.
    let digest = push_fixed_image(&reg, "elsewhere/app").await;
    let settings = reg.settings(PushFormat::Att);
    // A backoff long enough that the failed attempt cannot come due again inside the same
    // `run_pending_jobs` pass, even on a loaded machine (see the registry outage test).
    let app = TestApp::spawn_with(backend, move |s| {
        s.registries = vec![settings];
        s.worker.backoff_base_ms = 500;
        s.worker.backoff_max_secs = 1;
    })
    .await;
    let id = &app.record(&hook_for("run-1", &reg.host(), &digest)).await;
    app.app.run_pending_jobs().await.unwrap();
    let e = execution(&app, id).await;
    assert_eq!(e["attestation"]["state"], "pushing", "{e}");
    let push = &e["artifacts"][0]["push"];
    assert_eq!(push["state"], "retrying", "{push}");
    assert_eq!(push["attempts"], 1);
    assert!(push["nextAttemptAt"].is_string(), "{push}");
    let error = push["lastError"].as_str().unwrap();
    assert!(
        error.starts_with("image_not_found: ") && error.contains(digest.as_str()),
        "{error}"
    );

    push_fixed_image(&reg, REPO).await;
    let e = drive_until(&app, id, |e| e["attestation"]["state"] != "pushing").await;
    assert_eq!(e["attestation"]["state"], "attested", "{e}");
    let push = &e["artifacts"][0]["push"];
    assert_eq!(push["state"], "pushed");
    assert!(push["attempts"].as_i64().unwrap() >= 2, "{push}");
    let layers = att_layers(&reg, &digest).await;
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0].1, app.attestation(id).await);
    let (_, pem) = dev_public_key(&app).await;
    assert!(python_verifies(&layers[0].1, &pem));

    // Attested everywhere, it is settled: read from the database no more (a change behind
    // attestd's back, which no write of its own makes, tells).
    app.db
        .execute("UPDATE executions SET branch = 'rewritten' WHERE pipeline_execution_id = 'run-1'")
        .await;
    assert_eq!(execution(&app, id).await, e);
}

async fn registry_outage_is_retried_until_the_registry_is_back(backend: Backend) {
    let mut reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "1.4.0").await;
    let settings = reg.settings(PushFormat::Att);
    // A backoff long enough that the failed attempt cannot come due again inside the same
    // `run_pending_jobs` pass (with 20 ms and full jitter it sometimes did: attempts = 2).
    let app = TestApp::spawn_with(backend, move |s| {
        s.registries = vec![settings];
        s.worker.backoff_base_ms = 500;
        s.worker.backoff_max_secs = 1;
    })
    .await;
    reg.stop();
    let id = &app.record(&hook_for("run-1", &reg.host(), &digest)).await;
    app.app.run_pending_jobs().await.unwrap();
    let e = execution(&app, id).await;
    let push = &e["artifacts"][0]["push"];
    assert_eq!(push["state"], "retrying", "{push}");
    assert_eq!(push["attempts"], 1);
    assert!(push["nextAttemptAt"].is_string());
    assert!(!push["lastError"].as_str().unwrap().is_empty());
    assert_eq!(e["attestation"]["state"], "pushing");

    reg.restart().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        app.app.run_pending_jobs().await.unwrap();
        let e = execution(&app, id).await;
        if e["attestation"]["state"] == "attested" {
            assert!(e["artifacts"][0]["push"]["attempts"].as_i64().unwrap() >= 2);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not attested after the registry came back: {e}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(att_layers(&reg, &digest).await.len(), 1);
}

async fn fifty_executions_of_one_image_append_fifty_layers(backend: Backend) {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "1.4.0").await;
    let app = spawn_with_registry(backend, &reg).await;
    let mut ids = Vec::new();
    for i in 0..50 {
        let created: Value = app
            .post_webhook(&hook_for(&format!("run-{i}"), &reg.host(), &digest))
            .await
            .json()
            .await
            .unwrap();
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    // Eight workers race for the same `.att` tag.
    let mut workers = Vec::new();
    for _ in 0..8 {
        let app = app.app.clone();
        workers.push(tokio::spawn(async move {
            app.run_pending_jobs().await.unwrap()
        }));
    }
    let mut ran = 0;
    for w in workers {
        ran += w.await.unwrap();
    }
    assert_eq!(ran, 100, "50 sign + 50 push jobs, each run once");
    let layers = att_layers(&reg, &digest).await;
    assert_eq!(layers.len(), 50, "none lost");
    let blobs: HashSet<Vec<u8>> = layers.iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(blobs.len(), 50, "none duplicated");
    for id in &ids {
        let envelope = app.attestation(id).await;
        assert!(
            blobs.contains(&envelope),
            "execution {id}'s envelope is in the registry"
        );
        assert_eq!(
            execution(&app, id).await["attestation"]["state"],
            "attested"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosign_key_from_openbao_signs_attestations_that_verify_with_its_public_key() {
    let bao = Bao::from_env();
    let fixtures = repo_root().join("tests/fixtures/keys");
    let key = std::fs::read_to_string(fixtures.join("cosign-p256-n15.key")).unwrap();
    let password = std::fs::read_to_string(fixtures.join("cosign-p256-n15.password")).unwrap();
    let public = std::fs::read_to_string(fixtures.join("cosign-p256-n15.pub")).unwrap();
    let path = Bao::unique("attestd/cosign");
    bao.write_kv(&path, json!({"key": key, "password": password}))
        .await;

    let key = KeySettings::Cosign {
        private_key: format!("{path}#key"),
        password: Some(format!("{path}#password")),
    };
    let envelope = attest_once_with(&bao, key).await;
    assert!(
        python_verifies(&envelope, &public),
        "verifies with the fixture's cosign.pub"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transit_key_signs_attestations_without_the_key_leaving_openbao() {
    let bao = Bao::from_env();
    let mount = bao.enable_transit().await;
    bao.create_transit_key(&mount, "attestd", "ecdsa-p256")
        .await;
    let public = bao.transit_public_key(&mount, "attestd", 1).await;

    let key = KeySettings::Transit {
        mount,
        key: "attestd".into(),
    };
    let envelope = attest_once_with(&bao, key).await;
    assert!(
        python_verifies(&envelope, &public),
        "verifies with the Transit public key"
    );
}

/// Attest one execution with `key` (secrets from OpenBao) and return the envelope the registry
/// holds.
async fn attest_once_with(bao: &Bao, key: KeySettings) -> Vec<u8> {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "1.4.0").await;
    let registry = reg.settings(PushFormat::Att);
    let secrets = bao.secrets_settings();
    let app = TestApp::spawn_with(Backend::Sqlite, move |s| {
        s.registries = vec![registry];
        s.secrets = secrets;
        s.signing.default_key = "configured".into();
        s.signing.keys.insert("configured".into(), key);
    })
    .await;
    app.post_webhook(&hook_for("run-1", &reg.host(), &digest))
        .await;
    app.app.run_pending_jobs().await.unwrap();
    let mut layers = att_layers(&reg, &digest).await;
    assert_eq!(layers.len(), 1);
    layers.remove(0).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_worker_attests_without_being_driven() {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "1.4.0").await;
    let registry = reg.settings(PushFormat::Att);
    let app = TestApp::spawn_with(Backend::Sqlite, move |s| {
        s.registries = vec![registry];
        s.worker.enabled = true;
    })
    .await;
    let id = &app.record(&hook_for("run-1", &reg.host(), &digest)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while execution(&app, id).await["attestation"]["state"] != "attested" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker did not attest in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.app.shutdown.cancel();
}

/// A busy job loop keeps one PostgreSQL connection from job to job; once the queue is empty every
/// loop gives it back, so an idle worker holds none of the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_idle_job_loops_hold_no_connection_once_the_queue_is_drained() {
    let reg = TestRegistry::anonymous().await;
    let mut digests = Vec::new();
    for tag in ["1.4.0", "1.5.0", "1.6.0"] {
        digests.push(reg.push_image(REPO, tag).await);
    }
    let registry = reg.settings(PushFormat::Att);
    let app = TestApp::spawn_with(Backend::Postgres, move |s| {
        s.registries = vec![registry];
        s.worker.enabled = true;
    })
    .await;
    let mut ids = Vec::new();
    for (n, digest) in digests.iter().enumerate() {
        ids.push(
            app.record(&hook_for(&format!("run-{n}"), &reg.host(), digest))
                .await,
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for id in &ids {
        while execution(&app, id).await["attestation"]["state"] != "attested" {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the worker did not attest in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Connections go back to the pool in the background (sqlx pings them first).
    let in_use = || {
        app.app
            .store
            .pool_stats()
            .iter()
            .map(|p| p.size - p.idle)
            .sum::<u32>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while in_use() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} connection(s) still taken by a worker with nothing to do",
            in_use()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.app.shutdown.cancel();
}
