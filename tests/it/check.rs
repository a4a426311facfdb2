//! `attestd check` with the real binary against real services: a PostgreSQL of the test's own
//! (so it can be stopped), OpenBao holding a cosign key in KV and a Transit key, and a registry
//! behind TLS and htpasswd whose password is in KV. It passes, printing each key's id and public
//! key; then it fails, naming the part, for pending migrations, a wrong key password, a stopped
//! registry and a stopped database.

use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};
use sha2::Digest as _;

use crate::support::bao::Bao;
use crate::support::postgres::OwnPostgres;
use crate::support::process::run;
use crate::support::registry::TestRegistry;
use crate::support::repo_path;

const KEY: &str = "cosign-p256-n15";

struct Services {
    bao: Bao,
    kv: String,
    transit_mount: String,
    pg: OwnPostgres,
    reg: TestRegistry,
}

fn fixture(file: &str) -> String {
    std::fs::read_to_string(repo_path(&format!("tests/fixtures/keys/{file}"))).unwrap()
}

/// Store the fixture key with `password` and the registry password in one KV secret.
async fn store_secrets(s: &Services, password: &str) {
    let (_, registry_password) = s.reg.credentials.clone().unwrap();
    s.bao
        .write_kv(
            &s.kv,
            json!({"key": fixture(&format!("{KEY}.key")), "password": password,
                   "registry": registry_password}),
        )
        .await;
}

async fn services() -> Services {
    let bao = Bao::from_env();
    let transit_mount = bao.enable_transit().await;
    bao.create_transit_key(&transit_mount, "attestd", "ecdsa-p256")
        .await;
    let s = Services {
        kv: Bao::unique("attestd/check"),
        transit_mount,
        bao,
        pg: OwnPostgres::start(),
        reg: TestRegistry::tls_basic("attestd", "registry-s3cret").await,
    };
    store_secrets(&s, fixture(&format!("{KEY}.password")).trim_end()).await;
    s
}

fn write_config(dir: &Path, s: &Services) {
    let registry = s.reg.settings(attestd::config::PushFormat::Att);
    std::fs::write(
        dir.join("attestd.toml"),
        format!(
            "[database]\nurl = \"{db}\"\nmigrate_on_start = false\n\
             [secrets]\nbackend = \"vault\"\nvault_addr = \"{bao}\"\nvault_token = \"env:VAULT_TOKEN\"\n\
             [signing]\ndefault_key = \"release\"\n\
             [signing.keys.release]\ntype = \"cosign\"\nprivate_key = \"{kv}#key\"\npassword = \"{kv}#password\"\n\
             [signing.keys.hsm]\ntype = \"transit\"\nmount = \"{mount}\"\nkey = \"attestd\"\n\
             [[registries]]\nhost = \"{host}\"\nca_file = \"{ca}\"\nusername = \"attestd\"\npassword = \"{kv}#registry\"\n",
            db = s.pg.url(),
            bao = s.bao.addr,
            kv = s.kv,
            mount = s.transit_mount,
            host = registry.host,
            ca = registry.ca_file.unwrap().display(),
        ),
    )
    .unwrap();
}

fn check(dir: &Path, s: &Services, output: &str) -> Output {
    run(
        dir,
        &["check", "--output", output, "--timeout-secs", "10"],
        &[("VAULT_TOKEN", s.bao.token.as_str())],
    )
}

/// The JSON report, with the exit code.
fn check_json(dir: &Path, s: &Services) -> (Option<i32>, Value) {
    let out = check(dir, s, "json");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

/// `(part, name)` of each failed check.
fn failures(report: &Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| {
            (
                c["part"].as_str().unwrap().to_owned(),
                c["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The message of the (first failed, else first) check of `part`.
fn message<'a>(report: &'a Value, part: &str) -> &'a str {
    let checks = report["checks"].as_array().unwrap();
    checks
        .iter()
        .find(|c| c["part"] == part && c["ok"] == false)
        .or_else(|| checks.iter().find(|c| c["part"] == part))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_else(|| panic!("no {part} check in {report}"))
}

fn key_id_of(pem: &str) -> String {
    hex::encode(sha2::Sha256::digest(pem::parse(pem).unwrap().contents()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_against_the_services_printing_each_keys_id_and_public_key() {
    let s = services().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &s);

    // A fresh database with migrate_on_start = false: the one failure is the migrations.
    let (code, report) = check_json(dir.path(), &s);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(failures(&report), [("database".to_owned(), s.pg.url())]);
    assert!(
        message(&report, "database").contains("run `attestd migrate`"),
        "{report}"
    );

    let migrated = run(dir.path(), &["migrate"], &[]);
    assert!(migrated.status.success(), "{migrated:?}");
    let out = check(dir.path(), &s, "text");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    let migrations = std::fs::read_dir(repo_path("migrations/postgres"))
        .unwrap()
        .count();
    let cosign_public = fixture(&format!("{KEY}.pub"));
    let transit_public = s
        .bao
        .transit_public_key(&s.transit_mount, "attestd", 1)
        .await;
    let one_line =
        |pem: &str| -> String { pem.lines().filter(|l| !l.starts_with("-----")).collect() };
    let expect = [
        ("ok    config", String::new()),
        (
            "ok    database",
            format!("all {migrations} migrations applied"),
        ),
        ("ok    secrets", "token accepted".to_owned()),
        (
            "ok    key       hsm:",
            format!(
                "key id {}; public key {}",
                key_id_of(&transit_public),
                one_line(&transit_public)
            ),
        ),
        (
            "ok    key       release:",
            format!(
                "key id {}; public key {}",
                key_id_of(&cosign_public),
                one_line(&cosign_public)
            ),
        ),
        (
            "ok    registry",
            "credentials of attestd accepted (basic)".to_owned(),
        ),
    ];
    assert_eq!(lines.len(), expect.len() + 1, "{text}");
    for (line, (start, contains)) in lines.iter().zip(expect) {
        assert!(
            line.starts_with(start) && line.contains(&contains),
            "{line:?} should start with {start:?} and contain {contains:?}:\n{text}"
        );
    }
    assert_eq!(lines[6], "all 6 checks passed");
    let key_password = fixture(&format!("{KEY}.password"));
    let secrets = [
        s.bao.token.as_str(),
        "registry-s3cret",
        key_password.trim_end(),
    ];
    for secret in secrets {
        assert!(!text.contains(secret), "a secret is printed:\n{text}");
    }

    let (code, report) = check_json(dir.path(), &s);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["ok"], true);
    let release = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "release")
        .unwrap();
    assert_eq!(release["keyId"], key_id_of(&cosign_public));
    assert_eq!(
        release["publicKeyPem"].as_str().unwrap().trim(),
        cosign_public.trim()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_naming_a_wrong_key_password_a_stopped_registry_and_a_stopped_database() {
    let mut s = services().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &s);
    let migrated = run(dir.path(), &["migrate"], &[]);
    assert!(migrated.status.success(), "{migrated:?}");
    let (code, report) = check_json(dir.path(), &s);
    assert_eq!(code, Some(0), "{report}");

    store_secrets(&s, "not the password").await;
    let (code, report) = check_json(dir.path(), &s);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(
        failures(&report),
        [("key".to_owned(), "release".to_owned())]
    );
    let why = message(&report, "key");
    assert!(why.contains("release") && why.contains("password"), "{why}");
    assert!(!report.to_string().contains("not the password"));
    store_secrets(&s, fixture(&format!("{KEY}.password")).trim_end()).await;

    s.reg.stop();
    let (code, report) = check_json(dir.path(), &s);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(failures(&report), [("registry".to_owned(), s.reg.host())]);
    assert!(
        message(&report, "registry").contains("registry_unavailable"),
        "{report}"
    );
    s.reg.restart().await;

    s.pg.stop();
    let out = check(dir.path(), &s, "text");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(failed.len(), 1, "{text}");
    assert!(
        failed[0].starts_with("FAIL  database  postgres://postgres@127.0.0.1:")
            && failed[0].contains("cannot reach the database"),
        "{text}"
    );
    assert!(text.ends_with("1 of 6 checks failed\n"), "{text}");
}

#[test]
fn check_in_zero_setup_passes_naming_what_serve_will_create_and_reports_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    // The defaults, without the development registries (nothing listens on port 5000 here).
    std::fs::write(dir.path().join("attestd.toml"), "registries = []\n").unwrap();
    let out = run(dir.path(), &["check"], &[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("does not exist yet; `attestd serve` creates it"),
        "{text}"
    );
    assert!(text.contains("generates a development key there"), "{text}");
    assert!(text.ends_with("all 4 checks passed\n"), "{text}");
    assert!(
        !dir.path().join("data").exists(),
        "check created nothing: {:?}",
        std::fs::read_dir(dir.path()).unwrap().collect::<Vec<_>>()
    );

    std::fs::write(
        dir.path().join("attestd.toml"),
        "[server]\nrole = \"sideways\"\n",
    )
    .unwrap();
    let out = run(dir.path(), &["check", "--output", "json"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(failures(&report).len(), 1, "{report}");
    assert_eq!(report["checks"][0]["part"], "config");
    assert!(
        report["checks"][0]["message"]
            .as_str()
            .unwrap()
            .contains("sideways"),
        "{report}"
    );
}
