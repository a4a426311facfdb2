//! Registry credential rotation against a real htpasswd registry over TLS. A refused password is
//! read again from the secret backend and tried once more within the attempt; while the backend
//! still has the old one the push is retried, never dead, and it goes through once the secret is
//! updated, without restarting attestd.

use attestd::config::PushFormat;
use attestd::domain::{Digest, ImageRef};
use serde_json::json;

use crate::attestation::{
    REPO, att_layers, dev_public_key, drive_until, execution, hook_for, python_verifies,
};
use crate::backend_tests;
use crate::support::Backend;
use crate::support::app::*;
use crate::support::bao::Bao;
use crate::support::registry::TestRegistry;

backend_tests!(rotated_registry_password_is_retried_until_the_secret_backend_has_it);

const USER: &str = "attestd";
const OLD: &str = "first-Pa55word";
const NEW: &str = "second-Pa55word";

/// Record run-1 and push it with the password both sides still agree on; its execution id.
async fn attest_before_the_rotation(app: &TestApp, reg: &TestRegistry, digest: &Digest) -> String {
    let id = app.record(&hook_for("run-1", &reg.host(), digest)).await;
    app.app.run_pending_jobs().await.unwrap();
    let e = execution(app, &id).await;
    assert_eq!(e["attestation"]["state"], "attested", "{e}");
    id
}

/// Both executions' envelopes, in order, are the `.att` layers, and each verifies.
async fn assert_both_attested_in_the_registry(
    app: &TestApp,
    reg: &TestRegistry,
    digest: &Digest,
    ids: [&str; 2],
) {
    let layers = att_layers(reg, digest).await;
    let blobs: Vec<&Vec<u8>> = layers.iter().map(|(_, blob)| blob).collect();
    let stored = [app.attestation(ids[0]).await, app.attestation(ids[1]).await];
    assert_eq!(blobs, [&stored[0], &stored[1]], "the .att tag holds both");
    let (_, pem) = dev_public_key(app).await;
    for blob in blobs {
        assert!(python_verifies(blob, &pem), "verifies with the public key");
    }
}

async fn rotated_registry_password_is_retried_until_the_secret_backend_has_it(backend: Backend) {
    let mut reg = TestRegistry::tls_basic(USER, OLD).await;
    let digest = reg.push_image(REPO, "1.4.0").await;
    let registry = reg.settings(PushFormat::Att);
    // A backoff long enough that a failed attempt cannot come due again inside the same
    // `run_pending_jobs` pass, even on a loaded machine.
    let app = TestApp::spawn_with(backend, move |s| {
        s.registries = vec![registry];
        s.worker.backoff_base_ms = 500;
        s.worker.backoff_max_secs = 1;
    })
    .await;
    // The file backend reads `secrets.file_dir` (the app's dir) on every use.
    let secret = app.dir.path().join("registry-password");
    std::fs::write(&secret, OLD).unwrap();

    let first = &attest_before_the_rotation(&app, &reg, &digest).await;

    // The registry takes the new password; the secret backend still has the old one.
    reg.rotate_password(NEW).await;
    let second = &app.record(&hook_for("run-2", &reg.host(), &digest)).await;
    app.app.run_pending_jobs().await.unwrap();
    let e = execution(&app, second).await;
    assert_eq!(e["attestation"]["state"], "pushing", "{e}");
    let push = &e["artifacts"][0]["push"];
    assert_eq!(push["state"], "retrying", "{push}");
    assert_eq!(push["attempts"], 1, "{push}");
    let error = push["lastError"].as_str().unwrap();
    assert!(
        error.starts_with("registry_unauthorized: ") && error.contains("refused the credentials"),
        "{error}"
    );
    assert!(!error.contains(OLD) && !error.contains(NEW), "{error}");

    // Retried, not given up, for as long as the backend has the stale password.
    let e = drive_until(&app, second, |e| {
        e["artifacts"][0]["push"]["attempts"].as_i64() >= Some(3)
    })
    .await;
    let push = &e["artifacts"][0]["push"];
    assert_eq!(push["state"], "retrying", "{push}");
    assert!(
        push["lastError"]
            .as_str()
            .unwrap()
            .starts_with("registry_unauthorized: "),
        "{push}"
    );

    std::fs::write(&secret, NEW).unwrap();
    let e = drive_until(&app, second, |e| e["attestation"]["state"] != "pushing").await;
    assert_eq!(e["attestation"]["state"], "attested", "{e}");
    let push = &e["artifacts"][0]["push"];
    assert_eq!(push["state"], "pushed", "{push}");
    assert!(push["lastError"].is_null(), "{push}");
    assert_both_attested_in_the_registry(&app, &reg, &digest, [first, second]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_rotated_in_openbao_is_read_again_and_used_within_the_same_attempt() {
    let bao = Bao::from_env();
    let path = Bao::unique("attestd/registry");
    bao.write_kv(&path, json!({ "password": OLD })).await;
    let mut reg = TestRegistry::tls_basic(USER, OLD).await;
    let digest = reg.push_image(REPO, "1.4.0").await;
    let mut registry = reg.settings(PushFormat::Att);
    registry.password = Some(format!("{path}#password"));
    // refresh_secs = 300: without a re-read the old password stays cached all test long.
    let secrets = bao.secrets_settings();
    assert_eq!(secrets.refresh_secs, 300);
    let app = TestApp::spawn_with(Backend::Sqlite, move |s| {
        s.registries = vec![registry];
        s.secrets = secrets;
    })
    .await;

    let first = &attest_before_the_rotation(&app, &reg, &digest).await;

    // Both sides rotate; attestd has the old password cached from the first push.
    reg.rotate_password(NEW).await;
    bao.write_kv(&path, json!({ "password": NEW })).await;
    let second = &app.record(&hook_for("run-2", &reg.host(), &digest)).await;
    app.app.run_pending_jobs().await.unwrap();
    let e = execution(&app, second).await;
    assert_eq!(e["attestation"]["state"], "attested", "{e}");
    assert_eq!(
        e["artifacts"][0]["push"]["attempts"], 1,
        "re-authenticated within the first attempt: {e}"
    );
    assert_both_attested_in_the_registry(&app, &reg, &digest, [first, second]).await;

    // Reads for verification re-authenticate the same way.
    let third = "third-Pa55word";
    reg.rotate_password(third).await;
    bao.write_kv(&path, json!({ "password": third })).await;
    let image: ImageRef = format!("{}/{REPO}:1.4.0", reg.host()).parse().unwrap();
    let fetched = app
        .app
        .registries
        .fetch_attestations(&image, &digest)
        .await
        .unwrap();
    assert_eq!(fetched.len(), 2);
    assert_eq!(fetched[1].envelope, app.attestation(second).await);

    let fourth = "fourth-Pa55word";
    reg.rotate_password(fourth).await;
    bao.write_kv(&path, json!({ "password": fourth })).await;
    assert_eq!(app.app.registries.resolve(&image).await.unwrap(), digest);
}
