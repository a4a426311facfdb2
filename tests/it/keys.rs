//! Signing keys per account and key history: start-up refuses an implicitly shared key, each
//! account's executions are signed with its own key, and what a key signed before a rotation
//! still verifies by key id through the API, the web view and the CLI. Signatures are checked
//! with RustCrypto's `p256`, which attestd does not sign with.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use attestd::config::{KeySettings, PushFormat, Settings};
use attestd::domain::dsse::pae;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::DecodePublicKey as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::backend_tests;
use crate::support::app::*;
use crate::support::registry::TestRegistry;
use crate::support::{Backend, repo_path};

backend_tests!(
    per_account_keys_sign_each_accounts_executions_with_its_own_key,
    executions_signed_before_a_key_rotation_still_verify_by_key_id,
);

const FIXTURES: &str = "tests/fixtures/keys";
const ACME_KEY: &str = "cosign-p256-n15";
const GLOBEX_KEY: &str = "plain-p256";
const OLD_KEY: &str = "cosign-p256-n15";
const NEW_KEY: &str = "cosign-p256-n16";
const REPO: &str = "acme/app";

fn fixture(file: &str) -> String {
    std::fs::read_to_string(repo_path(&format!("{FIXTURES}/{file}"))).unwrap()
}

/// The fixture key pair `name`, read by the file backend from the fixtures directory.
fn fixture_key(name: &str) -> KeySettings {
    KeySettings::Cosign {
        private_key: format!("{name}.key"),
        password: (!fixture(&format!("{name}.password")).is_empty())
            .then(|| format!("{name}.password")),
    }
}

fn use_fixture_keys(s: &mut Settings) {
    s.secrets.file_dir = repo_path(FIXTURES);
}

/// Hex SHA-256 of the fixture's SubjectPublicKeyInfo DER, computed here from its `.pub`.
fn key_id_of(name: &str) -> String {
    let pem = pem::parse(fixture(&format!("{name}.pub"))).unwrap();
    hex::encode(sha2::Sha256::digest(pem.contents()))
}

/// Whether the DSSE envelope's signature over the PAE verifies with `public_pem`.
fn verifies(envelope: &[u8], public_pem: &str) -> bool {
    let env: Value = serde_json::from_slice(envelope).expect("envelope JSON");
    let payload = STANDARD
        .decode(env["payload"].as_str().expect("payload"))
        .expect("payload base64");
    let sig = STANDARD
        .decode(env["signatures"][0]["sig"].as_str().expect("sig"))
        .expect("sig base64");
    let sig = p256::ecdsa::DerSignature::try_from(sig.as_slice()).expect("DER signature");
    let key = p256::ecdsa::VerifyingKey::from_public_key_pem(public_pem).expect("P-256 key");
    key.verify(
        &pae(env["payloadType"].as_str().expect("payloadType"), &payload),
        &sig,
    )
    .is_ok()
}

/// `GET /v1/keys` as (key id, name, state, accounts), in the order served.
async fn listed_keys(app: &TestApp) -> Vec<(String, String, String, Vec<String>)> {
    let body: Value = app.get("/v1/keys", TOKEN).await.json().await.unwrap();
    body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["keyId"].as_str().unwrap().to_owned(),
                k["name"].as_str().unwrap().to_owned(),
                k["state"].as_str().unwrap().to_owned(),
                serde_json::from_value(k["accounts"].clone()).unwrap(),
            )
        })
        .collect()
}

async fn per_account_keys_sign_each_accounts_executions_with_its_own_key(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        use_fixture_keys(s);
        s.signing.shared_default_key = false;
        s.signing.default_key = String::new();
        s.signing
            .keys
            .insert("acme-release".into(), fixture_key(ACME_KEY));
        s.signing
            .keys
            .insert("globex-release".into(), fixture_key(GLOBEX_KEY));
        s.signing
            .accounts
            .insert(ACCOUNT.parse().unwrap(), "acme-release".into());
        s.signing
            .accounts
            .insert(OTHER_ACCOUNT.parse().unwrap(), "globex-release".into());
    })
    .await;
    let acme = app.record(&webhook("run-1")).await;
    let hook = globex_webhook("run-1");
    let resp = app
        .post_webhook_signed(hook.to_string().as_bytes(), OTHER_SECRET)
        .await;
    assert_eq!(resp.status(), 202);
    let globex = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.app.run_pending_jobs().await.unwrap();

    for (id, token, own, other) in [
        (&acme, TOKEN, ACME_KEY, GLOBEX_KEY),
        (&globex, OTHER_TOKEN, GLOBEX_KEY, ACME_KEY),
    ] {
        let resp = app
            .get(&format!("/v1/executions/{id}/attestation"), token)
            .await;
        assert_eq!(resp.status(), 200);
        let envelope = resp.bytes().await.unwrap();
        let parsed: Value = serde_json::from_slice(&envelope).unwrap();
        assert_eq!(parsed["signatures"][0]["keyid"], key_id_of(own), "{id}");
        assert!(
            verifies(&envelope, &fixture(&format!("{own}.pub"))),
            "{id} verifies with its account's public key"
        );
        assert!(
            !verifies(&envelope, &fixture(&format!("{other}.pub"))),
            "{id} must not verify with the other account's public key"
        );
        let e: Value = app
            .get(&format!("/v1/executions/{id}"), token)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(e["attestation"]["keyId"], key_id_of(own));
    }

    assert_eq!(
        listed_keys(&app).await,
        [
            (
                key_id_of(ACME_KEY),
                "acme-release".into(),
                "current".into(),
                vec![ACCOUNT.to_owned()]
            ),
            (
                key_id_of(GLOBEX_KEY),
                "globex-release".into(),
                "current".into(),
                vec![OTHER_ACCOUNT.to_owned()]
            ),
        ]
    );
}

/// Settings signing every account with the fixture key `key` under the name `release`, pushing to
/// `registry`: rotating the key is restarting with another fixture.
fn release_key(
    key: &'static str,
    registry: &attestd::config::RegistrySettings,
) -> impl FnOnce(&mut Settings) + use<> {
    let registry = registry.clone();
    move |s| {
        s.registries = vec![registry];
        use_fixture_keys(s);
        s.signing.default_key = "release".into();
        s.signing.keys.insert("release".into(), fixture_key(key));
    }
}

async fn executions_signed_before_a_key_rotation_still_verify_by_key_id(backend: Backend) {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "1.4.0").await;
    let registry = reg.settings(PushFormat::Att);
    let app = TestApp::spawn_with(backend, release_key(OLD_KEY, &registry)).await;
    let mut hook = webhook("run-1");
    hook["artifacts"] =
        json!([{"image": format!("{}/{REPO}:1.4.0", reg.host()), "digest": digest.as_str()}]);
    let id = app.record(&hook).await;
    app.app.run_pending_jobs().await.unwrap();
    let (old_id, new_id) = (key_id_of(OLD_KEY), key_id_of(NEW_KEY));
    let e: Value = app
        .get(&format!("/v1/executions/{id}"), TOKEN)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(e["attestation"]["state"], "attested", "{e}");
    assert_eq!(e["attestation"]["keyId"], old_id.as_str());

    // Rotation: the operator replaces the key and restarts attestd on the same database.
    let app = app.restart_with(release_key(NEW_KEY, &registry)).await;
    let both = vec![ACCOUNT.to_owned(), OTHER_ACCOUNT.to_owned()];
    assert_eq!(
        listed_keys(&app).await,
        [
            (new_id.clone(), "release".into(), "current".into(), both),
            (old_id.clone(), "release".into(), "retired".into(), vec![]),
        ]
    );
    let body: Value = app.get("/v1/keys", TOKEN).await.json().await.unwrap();
    assert_eq!(
        body["keys"][1]["publicKeyPem"],
        fixture(&format!("{OLD_KEY}.pub"))
    );

    // The API.
    let image = format!("{}/{REPO}@{digest}", reg.host());
    let verify = |key_id: String| {
        app.http
            .post(app.url("/v1/verify"))
            .bearer_auth(TOKEN)
            .json(&json!({"image": image, "keyId": key_id}))
            .send()
    };
    let report: Value = verify(old_id.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(report["verified"], true, "{report}");
    let report: Value = verify(new_id.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(
        report["verified"], false,
        "the new key did not sign it: {report}"
    );
    let unknown = verify("0".repeat(64)).await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(error_code(unknown).await, "key_not_found");

    // The web view's "Verify in registry now".
    let cookie = crate::ui::log_in(&app, TOKEN).await;
    let resp = crate::ui::post_form(
        &app,
        &format!("/ui/executions/{id}/verify"),
        &cookie,
        Some(&app.url("")),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        crate::ui::location(&resp),
        format!("/ui/executions/{id}?verified=1")
    );
    let recorded = app
        .app
        .store
        .verifications(id.parse().unwrap())
        .await
        .unwrap();
    let last = recorded.last().expect("a recorded verification");
    assert!(last.verified, "{last:?}");

    // The CLI, reading the key from the same database.
    let dir = app.dir.path();
    std::fs::write(
        dir.join("cli.toml"),
        format!(
            "[database]\nurl = \"{}\"\n[[registries]]\nhost = \"{}\"\ninsecure_http = true\n",
            app.database_url(),
            reg.host()
        ),
    )
    .unwrap();
    let cli = |key_id: &str| {
        crate::cli::attestd(
            &[
                "--config", "cli.toml", "verify", &image, "--key-id", key_id, "--output", "json",
            ],
            dir,
        )
    };
    let ok = cli(&old_id);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    let report: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(report["verified"], true);
    assert_eq!(cli(&new_id).status.code(), Some(1));
    let unknown = cli(&"0".repeat(64));
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("never signed with a key with id"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
}

/// A configuration with two accounts, each with its own webhook source, and no keys of their own.
fn two_accounts_config(dir: &Path, port: u16, extra: &str) {
    std::fs::write(
        dir.join("attestd.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [database]\nurl = \"sqlite:{}\"\n\
             [[webhook.sources]]\nname = \"acme-ci\"\naccount = \"acme\"\nsecrets = [\"s1\"]\n\
             builder_ids = [\"https://ci.example.com/acme\"]\n\
             [[webhook.sources]]\nname = \"globex-ci\"\naccount = \"globex\"\nsecrets = [\"s2\"]\n\
             builder_ids = [\"https://ci.example.com/globex\"]\n\
             {extra}",
            dir.join("attestd.db").display()
        ),
    )
    .unwrap();
}

/// `attestd serve` in `dir`, its log in `dir/stderr.log`.
fn serve(dir: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_attestd"))
        .args(["--config", "attestd.toml", "serve"])
        .current_dir(dir)
        .env("ATTESTD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .expect("run attestd")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_accounts_sharing_the_default_key_start_only_when_configured_to() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let deadline = Instant::now() + Duration::from_secs(20);

    two_accounts_config(dir.path(), port, "");
    let mut refused = serve(dir.path());
    let status = loop {
        if let Some(status) = refused.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = refused.kill();
            panic!("attestd started although two accounts share the development key implicitly");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(2));
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(log.contains("signing.accounts"), "{log}");
    assert!(
        log.contains("acme, globex"),
        "the accounts are named: {log}"
    );
    assert!(log.contains("signing.shared_default_key = true"), "{log}");

    two_accounts_config(dir.path(), port, "[signing]\nshared_default_key = true\n");
    let mut server = serve(dir.path());
    let http = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{port}/readyz");
    while http.get(&ready).send().await.is_err() {
        if Instant::now() > deadline || server.try_wait().unwrap().is_some() {
            let _ = server.kill();
            panic!(
                "attestd did not start with signing.shared_default_key = true: {}",
                std::fs::read_to_string(dir.path().join("stderr.log")).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let keys: Value = http
        .get(format!("http://127.0.0.1:{port}/v1/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys["keys"][0]["kind"], "development");
    assert_eq!(keys["keys"][0]["accounts"], json!(["acme", "globex"]));
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(
        log.contains("accounts share one signing key") && log.contains("acme, globex"),
        "the shared key is warned about: {log}"
    );
}
