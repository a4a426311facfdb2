//! Process roles with the real binary: an API-only process records but never claims a job, a
//! worker-only process answers only its probes and does the work (and says so on the
//! execution), contradicting switches are refused, and a second process on one SQLite file is
//! refused naming the file and the first process.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::process::{Attestd, free_port, run};
use crate::support::registry::TestRegistry;
use crate::support::{Backend, TestDatabase, repo_path};

const SECRET: &str = "roles-webhook-secret";

/// A configuration file in `dir`: `database`, one webhook source for `registry`, a fixture
/// cosign key every process shares, short polls; plus `extra`.
pub fn write_config(dir: &Path, database: &str, registry: &str, extra: &str) {
    std::fs::write(
        dir.join("attestd.toml"),
        format!(
            "[database]\nurl = \"{database}\"\nmax_connections = 8\n\
             [webhook]\ndev_secret_file = \"{dir}/webhook.secret\"\n\
             [[webhook.sources]]\nname = \"ci\"\naccount = \"acme\"\nsecrets = [\"{SECRET}\"]\n\
             repositories = [\"{registry}/**\"]\nbuilder_ids = [\"https://ci.example.com/roles\"]\n\
             [secrets]\nbackend = \"file\"\nfile_dir = \"{keys}\"\n\
             [signing]\ndefault_key = \"release\"\n\
             [signing.keys.release]\ntype = \"cosign\"\nprivate_key = \"cosign-p256-n15.key\"\n\
             password = \"cosign-p256-n15.password\"\n\
             [worker]\npoll_interval_ms = 50\n\
             [[registries]]\nhost = \"{registry}\"\ninsecure_http = true\n\
             {extra}",
            dir = dir.display(),
            keys = repo_path("tests/fixtures/keys").display(),
        ),
    )
    .expect("write attestd.toml");
}

/// A signed build webhook for `image@digest`.
pub fn build_webhook(run: &str, image: &str, digest: &str) -> (String, String) {
    let body = json!({
        "schemaVersion": 1,
        "accountId": "acme",
        "pipelineIdentifier": "build_and_push",
        "pipelineExecutionId": run,
        "repositoryURL": "https://github.com/acme/app",
        "branch": "main",
        "commitSha": "4f1e0c7b9d3a2e6f8b0c1d2e3f4a5b6c7d8e9f01",
        "triggerType": "WEBHOOK",
        "triggeredBy": "alice@example.com",
        "startedOn": "2026-11-25T10:00:00Z",
        "finishedOn": "2026-11-25T10:04:31Z",
        "status": "succeeded",
        "artifacts": [{"image": image, "digest": digest}]
    })
    .to_string();
    let signature = attestd::ingest::signature::sign(SECRET.as_bytes(), body.as_bytes());
    (body, signature)
}

pub async fn post_build(
    http: &reqwest::Client,
    base: &str,
    run: &str,
    image: &str,
    digest: &str,
) -> reqwest::Response {
    let (body, signature) = build_webhook(run, image, digest);
    http.post(format!("{base}/v1/webhooks/build"))
        .header("content-type", "application/json")
        .header("x-attestd-signature-256", signature)
        .body(body)
        .send()
        .await
        .expect("post webhook")
}

async fn get_json(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let resp = http.get(url).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_process_never_claims_a_job_and_a_worker_process_serves_only_its_probes() {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image("acme/app", "1.0").await;
    let db = TestDatabase::new(Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &db.url, &reg.host(), "");
    let http = reqwest::Client::new();

    let api = Attestd::start(
        dir.path(),
        "api",
        free_port(),
        &["serve", "--role", "api"],
        &[],
    )
    .await;
    let image = format!("{}/acme/app:1.0", reg.host());
    let resp = post_build(&http, &api.base, "run-1", &image, digest.as_str()).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Many poll intervals (50 ms) later the sign job is still untouched.
    let sign_job = "SELECT state || ':' || attempts FROM jobs WHERE kind = 'sign'";
    for _ in 0..20 {
        assert_eq!(db.text(sign_job).await.as_deref(), Some("queued:0"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, execution) = get_json(&http, &format!("{}/v1/executions/{id}", api.base)).await;
    assert_eq!(execution["attestation"]["state"], "pending", "{execution}");

    let worker = Attestd::start(
        dir.path(),
        "worker",
        free_port(),
        &["serve", "--role", "worker"],
        &[("ATTESTD_WORKER__NAME", "builder-7")],
    )
    .await;
    for probe in ["/healthz", "/readyz"] {
        let (status, body) = get_json(&http, &format!("{}{probe}", worker.base)).await;
        assert_eq!(status, 200, "{probe}: {body}");
    }
    for path in [
        format!("/v1/executions/{id}"),
        "/v1/executions".to_owned(),
        "/openapi.json".to_owned(),
        "/ui/executions".to_owned(),
    ] {
        let (status, body) = get_json(&http, &format!("{}{path}", worker.base)).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "route_not_found", "{path}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("runs the worker only"),
            "{body}"
        );
    }
    let refused = post_build(&http, &worker.base, "run-2", &image, digest.as_str()).await;
    assert_eq!(refused.status(), 404, "a worker takes no webhooks");

    let deadline = Instant::now() + Duration::from_secs(60);
    let execution = loop {
        let (_, e) = get_json(&http, &format!("{}/v1/executions/{id}", api.base)).await;
        if e["attestation"]["state"] == "attested" {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "not attested within 60 s: {e}\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let signed_by = execution["attestation"]["signedBy"].as_str().unwrap();
    let pushed_by = execution["artifacts"][0]["push"]["pushedBy"]
        .as_str()
        .unwrap();
    let prefix = format!("builder-7-{}-", worker.id());
    assert!(signed_by.starts_with(&prefix), "{execution}");
    assert!(pushed_by.starts_with(&prefix), "{execution}");
    let manifest = reg
        .manifest_json("acme/app", &format!("sha256-{}.att", digest.hex()))
        .await;
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        1,
        "{manifest}"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM jobs WHERE state <> 'done'")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_one_sqlite_file_exits_naming_the_file_and_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("attestd.db");
    write_config(
        dir.path(),
        &format!("sqlite:{}", db.display()),
        "127.0.0.1:5999",
        "",
    );
    let first = Attestd::start(dir.path(), "first", free_port(), &["serve"], &[]).await;

    let mut second = Attestd::spawn(dir.path(), "second", free_port(), &["serve"], &[]);
    let status = second
        .exit_within(Duration::from_secs(30))
        .expect("the second attestd keeps running on the same SQLite file");
    assert_eq!(status.code(), Some(2), "{}", second.log());
    let log = second.log();
    assert!(
        log.contains(&db.display().to_string()),
        "names the file: {log}"
    );
    assert!(
        log.contains(&format!("pid {} (attestd serve, role all)", first.id())),
        "names the first process: {log}"
    );
    assert!(log.contains("PostgreSQL"), "says how to run several: {log}");

    let migrate = run(dir.path(), &["migrate"], &[]);
    assert_eq!(migrate.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&migrate.stderr).contains(&format!("pid {}", first.id())),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );

    // The first one still serves; once it is gone, the file is free again.
    let http = reqwest::Client::new();
    let (status, _) = get_json(&http, &format!("{}/readyz", first.base)).await;
    assert_eq!(status, 200);
    drop(first);
    let _third = Attestd::start(dir.path(), "third", free_port(), &["serve"], &[]).await;
}

#[test]
fn contradicting_roles_and_worker_switches_stop_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "postgres://postgres@127.0.0.1:1/never-reached",
        "127.0.0.1:5999",
        "",
    );
    for (args, env, key) in [
        (
            vec!["serve", "--role", "worker"],
            vec![("ATTESTD_WORKER__ENABLED", "false")],
            "`server.role`",
        ),
        (
            vec!["serve", "--role", "api"],
            vec![("ATTESTD_WORKER__ENABLED", "true")],
            "`worker.enabled`",
        ),
    ] {
        let out = run(dir.path(), &args, &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(key), "{args:?}: {stderr}");
    }
    let sqlite = tempfile::tempdir().unwrap();
    write_config(
        sqlite.path(),
        &format!("sqlite:{}/attestd.db", sqlite.path().display()),
        "127.0.0.1:5999",
        "",
    );
    let out = run(sqlite.path(), &["serve", "--role", "worker"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("need PostgreSQL"), "{stderr}");
}
