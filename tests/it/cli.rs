//! The `attestd` binary as users run it: `keys generate` and `verify` with their exit codes.

use std::path::Path;
use std::process::{Command, Output};

use attestd::config::PushFormat;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::support::app::*;
use crate::support::proxy::FaultProxy;
use crate::support::registry::TestRegistry;
use crate::support::{Backend, TestDatabase};

backend_tests!(a_push_killed_mid_flight_is_counted_on_reclaim_and_its_lock_taken_over_in_seconds);

pub(crate) fn attestd(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attestd"))
        .args(args)
        .current_dir(cwd)
        .env("COSIGN_PASSWORD", "correct horse battery staple")
        .env("ATTESTD_LOG", "warn")
        .output()
        .expect("run attestd")
}

#[test]
fn generated_keys_are_cosign_format_and_never_overwritten_silently() {
    let dir = tempfile::tempdir().unwrap();
    let out = attestd(
        &["keys", "generate", "--output-key-prefix", "release"],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = std::fs::read_to_string(dir.path().join("release.key")).unwrap();
    assert!(key.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
    let again = attestd(
        &["keys", "generate", "--output-key-prefix", "release"],
        dir.path(),
    );
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("release.key")).unwrap(),
        key,
        "left untouched"
    );

    let python = std::env::var("ATTESTD_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("ATTESTD_TEST_PYTHON is not set: run ./scripts/test (it prepares the Python venv)")
    });
    std::fs::write(dir.path().join("password"), "correct horse battery staple").unwrap();
    let checked = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fixtures/check_cosign_key.py"))
        .args(["release.key", "password", "release.pub"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "PyNaCl/cryptography could not read it: {}",
        String::from_utf8_lossy(&checked.stdout)
    );
}

#[test]
fn the_allocator_is_chosen_by_the_environment_and_an_unknown_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = |allocator: &str, prefix: &str| {
        Command::new(env!("CARGO_BIN_EXE_attestd"))
            .args(["keys", "generate", "--output-key-prefix", prefix])
            .current_dir(dir.path())
            .env("COSIGN_PASSWORD", "correct horse battery staple")
            .env("ATTESTD_ALLOCATOR", allocator)
            .output()
            .expect("run attestd")
    };
    for allocator in ["system", "jemalloc"] {
        let out = run(allocator, allocator);
        assert!(
            out.status.success(),
            "{allocator}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(dir.path().join(format!("{allocator}.key")).exists());
    }
    let out = run("tcmalloc", "refused");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ATTESTD_ALLOCATOR=\"tcmalloc\"")
            && stderr.contains("\"jemalloc\" (the default) or \"system\""),
        "{stderr}"
    );
    assert!(!dir.path().join("refused.key").exists(), "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_exits_zero_one_or_two_with_a_clear_reason() {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image("acme/app", "1.4.0").await;
    let unattested = reg.push_image("acme/app", "unsigned").await;
    let registry = reg.settings(PushFormat::Att);
    let app = TestApp::spawn_with(Backend::Sqlite, move |s| s.registries = vec![registry]).await;
    let mut hook = webhook("run-1");
    hook["artifacts"] =
        json!([{"image": format!("{}/acme/app:1.4.0", reg.host()), "digest": digest.as_str()}]);
    assert_eq!(app.post_webhook(&hook).await.status(), 202);
    app.app.run_pending_jobs().await.unwrap();

    let dir = app.dir.path();
    std::fs::copy(dir.join("dev-cosign.pub"), dir.join("cosign.pub")).unwrap();
    std::fs::write(
        dir.join("attestd.toml"),
        format!(
            "[[registries]]\nhost = \"{}\"\ninsecure_http = true\n",
            reg.host()
        ),
    )
    .unwrap();
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/examples");
    let harness = policies.join("harness-repository.rego");
    let image = format!("{}/acme/app@{}", reg.host(), digest);
    let run = |extra: &[&str]| {
        let mut args = vec!["--config", "attestd.toml", "verify"];
        args.extend_from_slice(extra);
        attestd(&args, dir)
    };

    let ok = run(&[
        &image,
        "--key",
        "cosign.pub",
        "--policy",
        harness.to_str().unwrap(),
    ]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("VERIFIED:"));
    let by_tag = run(&[
        &format!("{}/acme/app:1.4.0", reg.host()),
        "--key",
        "cosign.pub",
    ]);
    assert_eq!(by_tag.status.code(), Some(0));

    // The same Harness-shaped policy with another allowed repository denies.
    let strict = std::fs::read_to_string(&harness).unwrap().replace(
        "https://github.com/acme/app",
        "https://github.com/acme/other",
    );
    std::fs::write(dir.join("strict.rego"), strict).unwrap();
    let denied = run(&[
        &image,
        "--key",
        "cosign.pub",
        "--policy",
        "strict.rego",
        "--output",
        "json",
    ]);
    assert_eq!(denied.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&denied.stdout).unwrap();
    assert_eq!(report["verified"], true);
    assert_eq!(report["reason"]["code"], "policy_denied");
    assert!(
        report["reason"]["message"]
            .as_str()
            .unwrap()
            .contains("https://github.com/acme/app is not on the allowed list")
    );

    // Another key.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys/cosign-p256-n15.pub"),
        dir.join("other.pub"),
    )
    .unwrap();
    let wrong_key = run(&[&image, "--key", "other.pub", "--output", "json"]);
    assert_eq!(wrong_key.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&wrong_key.stdout).unwrap();
    assert_eq!(report["reason"]["code"], "bad_signature");

    // An image nobody attested.
    let none = run(&[
        &format!("{}/acme/app@{}", reg.host(), unattested),
        "--key",
        "cosign.pub",
        "--output",
        "json",
    ]);
    assert_eq!(none.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&none.stdout).unwrap();
    assert_eq!(report["reason"]["code"], "no_attestations");

    // A tampered layer: the .att manifest now points at a modified envelope.
    let tag = format!("sha256-{}.att", digest.hex());
    let mut manifest = reg.manifest_json("acme/app", &tag).await;
    let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let mut envelope: Value =
        serde_json::from_slice(&reg.blob("acme/app", &layer_digest).await).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let statement =
        String::from_utf8(b64.decode(envelope["payload"].as_str().unwrap()).unwrap()).unwrap();
    envelope["payload"] =
        json!(b64.encode(statement.replace("alice@example.com", "mallory@example.com")));
    let tampered = serde_json::to_vec(&envelope).unwrap();
    let tampered_digest = reg.put_blob("acme/app", &tampered).await;
    manifest["layers"][0]["digest"] = json!(tampered_digest.as_str());
    manifest["layers"][0]["size"] = json!(tampered.len());
    reg.put_manifest(
        "acme/app",
        &tag,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).unwrap(),
    )
    .await;
    let bad = run(&[&image, "--key", "cosign.pub", "--output", "json"]);
    assert_eq!(bad.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(report["reason"]["code"], "bad_signature");

    // Usage and configuration errors.
    let unlisted = run(&["registry.example.com/acme/app:1.0", "--key", "cosign.pub"]);
    assert_eq!(unlisted.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unlisted.stderr).contains("not configured"));
    let no_tag = run(&[&format!("{}/acme/app", reg.host()), "--key", "cosign.pub"]);
    assert_eq!(no_tag.status.code(), Some(2));
}

/// A registry that accepts connections and never answers: a push to it hangs until cut off.
fn unresponsive_registry() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(16) {
            match stream {
                Ok(s) => held.push(s),
                Err(_) => break,
            }
        }
    });
    (addr, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_lease_of_a_job_still_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _holder) = unresponsive_registry();
    let port = free_port();
    let db = dir.path().join("attestd.db");
    std::fs::write(
        dir.path().join("attestd.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_secs = 1\n\
             [database]\nurl = \"sqlite:{}\"\n\
             [worker]\npoll_interval_ms = 20\n\
             [[registries]]\nhost = \"{registry}\"\ninsecure_http = true\n",
            db.display()
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = serve(dir.path(), &base).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let image = format!("{registry}/acme/app:1.0");
    let digest = format!("sha256:{}", "c".repeat(64));
    let resp = post_dev_webhook(dir.path(), &base, &image, &digest).await;
    assert_eq!(resp.status(), 202);

    // Wait until the push job is leased (and hanging on the registry).
    let push_job = || async {
        sqlx::query_as::<_, (String, i64)>("SELECT state, attempts FROM jobs WHERE kind = 'push'")
            .fetch_optional(&open_sqlite(&db).await)
            .await
            .unwrap()
    };
    loop {
        if let Some((state, _)) = push_job().await
            && state == "running"
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the push job was never claimed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let killed = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = tokio::task::spawn_blocking(move || server.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "attestd exits cleanly on SIGTERM: {exit}");
    let (state, attempts) = push_job().await.unwrap();
    assert_eq!(
        state, "queued",
        "the in-flight job was handed back, not left leased"
    );
    assert_eq!(attempts, 0, "a released job does not count an attempt");
}

async fn open_sqlite(path: &Path) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect(&format!("sqlite:{}?mode=ro", path.display()))
        .await
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// POST run-1 of account `default` for `image@digest`, signed with the development secret the
/// server in `dir` generated.
async fn post_dev_webhook(dir: &Path, base: &str, image: &str, digest: &str) -> reqwest::Response {
    let secret = std::fs::read_to_string(dir.join("data/webhook.secret")).unwrap();
    let mut hook = webhook("run-1");
    hook["accountId"] = json!("default");
    // The development source signs its own builder id.
    hook.as_object_mut().unwrap().remove("builderId");
    hook["artifacts"] = json!([{"image": image, "digest": digest}]);
    let body = hook.to_string();
    reqwest::Client::new()
        .post(format!("{base}/v1/webhooks/build"))
        .header("content-type", "application/json")
        .header(
            "x-attestd-signature-256",
            attestd::ingest::signature::sign(secret.trim().as_bytes(), body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

/// A running `attestd serve`; killed (SIGKILL) if still running when dropped.
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `attestd --config attestd.toml serve` in `dir` and wait until `/readyz` answers.
async fn serve(dir: &Path, base: &str) -> Serving {
    let child = Command::new(env!("CARGO_BIN_EXE_attestd"))
        .args(["--config", "attestd.toml", "serve"])
        .current_dir(dir)
        .env("ATTESTD_LOG", "warn")
        .spawn()
        .unwrap();
    let serving = Serving(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while reqwest::get(format!("{base}/readyz")).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "attestd did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    serving
}

async fn a_push_killed_mid_flight_is_counted_on_reclaim_and_its_lock_taken_over_in_seconds(
    backend: Backend,
) {
    use std::time::{Duration, Instant};
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image("acme/app", "1.0").await;
    // The registry, as the first process sees it: connections accepted, never answered.
    let proxy = FaultProxy::start(&reg.host()).await;
    proxy.blackhole();
    let db = TestDatabase::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Short lease and lock TTL so the test takes seconds; the push deadline (6 s) is longer
    // than it takes to kill the process mid-push.
    std::fs::write(
        dir.path().join("attestd.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_secs = 1\n\
             [database]\nurl = \"{}\"\n\
             [worker]\npoll_interval_ms = 20\nlease_secs = 3\nlock_ttl_secs = 9\npush_deadline_secs = 6\n\
             [[registries]]\nhost = \"{}\"\ninsecure_http = true\n",
            db.url,
            proxy.host()
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut first = serve(dir.path(), &base).await;

    let image = format!("{}/acme/app:1.0", proxy.host());
    let created: Value = post_dev_webhook(dir.path(), &base, &image, digest.as_str())
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();

    // Wait until the push holds its job lease and tag lock, hanging on the registry.
    let push_job = "SELECT state || ':' || attempts FROM jobs WHERE kind = 'push'";
    let deadline = Instant::now() + Duration::from_secs(20);
    while db.text(push_job).await.as_deref() != Some("running:1")
        || db.count("SELECT COUNT(*) FROM locks").await != 1
    {
        assert!(Instant::now() < deadline, "the push never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    assert_eq!(
        db.text(push_job).await.as_deref(),
        Some("running:1"),
        "killed inside the push, before its deadline"
    );

    // A second process, with the registry answering again.
    proxy.forward();
    let restarted = Instant::now();
    let _second = serve(dir.path(), &base).await;
    let execution = |id: String| {
        let http = http.clone();
        let url = format!("{base}/v1/executions/{id}");
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let e = loop {
        let e = execution(id.clone()).await;
        if e["attestation"]["state"] == "attested" {
            break e;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "not attested 30 s after the restart: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = restarted.elapsed();
    println!("attested {took:?} after the restart (lease 3 s, lock TTL 9 s)");
    assert!(
        took < Duration::from_secs(20),
        "the dead holder's lease and lock were taken over in seconds: {took:?}"
    );
    assert_eq!(
        e["artifacts"][0]["push"]["attempts"], 2,
        "the killed attempt counts: {e}"
    );
    let manifest = reg
        .manifest_json("acme/app", &format!("sha256-{}.att", digest.hex()))
        .await;
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "exactly one layer: {manifest}");
    let stored = http
        .get(format!("{base}/v1/executions/{id}/attestation"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        reg.blob("acme/app", layers[0]["digest"].as_str().unwrap())
            .await,
        stored.to_vec()
    );
}
