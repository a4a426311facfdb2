//! The scale-out acceptance: one API process and two worker processes (the real binary) on one
//! PostgreSQL drain 2,000 executions, 50 of them for one image digest. Every execution is
//! attested once — each digest's `.att` in the registry holds exactly the envelopes of its
//! executions, one layer each — and both workers did part of the work, as the executions'
//! `signedBy`/`pushedBy` show. `ATTESTD_SCALE_OUT_EXECUTIONS` changes the size.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, stream};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::roles::{post_build, write_config};
use crate::support::process::{Attestd, free_port};
use crate::support::registry::{OCI_MANIFEST, TestRegistry};
use crate::support::{Backend, TestDatabase};

const REPO: &str = "acme/app";
/// Every this many executions builds the one shared image.
const SHARED_EVERY: usize = 40;

fn executions_to_run() -> usize {
    std::env::var("ATTESTD_SCALE_OUT_EXECUTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000)
}

/// Push `count` distinct images sharing one config and one layer blob (their manifests differ
/// by an annotation); returns their digests.
async fn push_images(reg: &TestRegistry, count: usize) -> Vec<String> {
    let layer = b"scale-out layer".to_vec();
    let layer_digest = reg.put_blob(REPO, &layer).await;
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let config_digest = reg.put_blob(REPO, &config).await;
    stream::iter(0..count)
        .map(|n| {
            let manifest = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": config_digest.as_str(), "size": config.len()},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": layer_digest.as_str(), "size": layer.len()}],
                "annotations": {"n": n.to_string()},
            }))
            .unwrap();
            async move {
                let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&manifest)));
                reg.put_manifest(REPO, &digest, OCI_MANIFEST, &manifest)
                    .await;
                digest
            }
        })
        .buffered(16)
        .collect()
        .await
}

/// Every execution the API lists, oldest first.
async fn all_executions(http: &reqwest::Client, base: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/executions?order=asc&limit=200");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

/// How many executions are in each attestation state (`GET /v1/stats`).
async fn states(http: &reqwest::Client, base: &str) -> BTreeMap<String, u64> {
    let stats: Value = http
        .get(format!("{base}/v1/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for day in stats["daily"].as_array().unwrap() {
        *out.entry(day["attestation"].as_str().unwrap().to_owned())
            .or_default() += day["count"].as_u64().unwrap();
    }
    out
}

/// The worker name a `signedBy`/`pushedBy` starts with.
fn worker_of(by: &Value) -> String {
    let by = by
        .as_str()
        .unwrap_or_else(|| panic!("no worker recorded: {by}"));
    by.split('-').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_api_and_two_workers_on_postgres_attest_every_execution_once() {
    let total = executions_to_run();
    let shared_count = total.div_ceil(SHARED_EVERY);
    let reg = TestRegistry::anonymous().await;
    let db = TestDatabase::new(Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &db.url,
        &reg.host(),
        "[server]\nmax_in_flight_webhooks = 64\n",
    );
    let http = reqwest::Client::new();

    let started = Instant::now();
    let mut images = push_images(&reg, total - shared_count + 1).await;
    let shared = images.pop().unwrap();
    println!(
        "{} images pushed in {:.1?}",
        images.len() + 1,
        started.elapsed()
    );

    // All three start at once and migrate the same database concurrently.
    let (api_port, a_port, b_port) = (free_port(), free_port(), free_port());
    let worker_a = Attestd::spawn(
        dir.path(),
        "worker-a",
        a_port,
        &["serve", "--role", "worker"],
        &[("ATTESTD_WORKER__NAME", "alpha")],
    );
    let worker_b = Attestd::spawn(
        dir.path(),
        "worker-b",
        b_port,
        &["serve", "--role", "worker"],
        &[("ATTESTD_WORKER__NAME", "beta")],
    );
    let api = Attestd::start(
        dir.path(),
        "api",
        api_port,
        &["serve", "--role", "api"],
        &[],
    )
    .await;
    for w in [&worker_a, &worker_b] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while http.get(format!("{}/readyz", w.base)).send().await.is_err() {
            assert!(Instant::now() < deadline, "worker not ready:\n{}", w.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Execution n builds the shared image when n % SHARED_EVERY == 0, else its own.
    let mut own = images.into_iter();
    let plan: Vec<String> = (0..total)
        .map(|n| {
            if n % SHARED_EVERY == 0 {
                shared.clone()
            } else {
                own.next().unwrap()
            }
        })
        .collect();
    let ingest = Instant::now();
    let created: Vec<(String, String)> = stream::iter(plan.iter().enumerate())
        .map(|(n, digest)| {
            let http = http.clone();
            let base = api.base.clone();
            let image = format!("{}/{REPO}:build-{n}", reg.host());
            async move {
                let resp = post_build(&http, &base, &format!("run-{n}"), &image, digest).await;
                assert_eq!(
                    resp.status(),
                    202,
                    "{}",
                    resp.text().await.unwrap_or_default()
                );
                let body: Value = resp.json().await.unwrap();
                (body["id"].as_str().unwrap().to_owned(), digest.clone())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    println!(
        "{total} webhooks accepted in {:.1?} ({shared_count} for {shared})",
        ingest.elapsed()
    );

    let deadline = Instant::now() + Duration::from_secs(900);
    let mut last_report = Instant::now();
    loop {
        let by_state = states(&http, &api.base).await;
        let attested = by_state.get("attested").copied().unwrap_or(0);
        if attested as usize == total {
            break;
        }
        assert_eq!(
            by_state.get("failed"),
            None,
            "executions failed: {by_state:?}\n{}\n{}",
            worker_a.log(),
            worker_b.log()
        );
        assert!(
            Instant::now() < deadline,
            "not drained within 15 min: {by_state:?}"
        );
        if last_report.elapsed() > Duration::from_secs(15) {
            println!("{:>6.1?}: {by_state:?}", ingest.elapsed());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drained = ingest.elapsed();
    println!(
        "{total} executions attested {drained:.1?} after the first webhook: {:.1} executions/s \
         (debug build, 2 workers × concurrency 4)",
        total as f64 / drained.as_secs_f64()
    );

    // What the API says: one signer and one pusher per execution, each one of the two workers.
    let executions = all_executions(&http, &api.base).await;
    assert_eq!(executions.len(), total);
    let mut work: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for e in &executions {
        assert_eq!(e["attestation"]["state"], "attested", "{e}");
        let push = &e["artifacts"][0]["push"];
        assert_eq!(push["state"], "pushed", "{e}");
        assert_eq!(push["attempts"], 1, "each push ran once: {e}");
        work.entry(worker_of(&e["attestation"]["signedBy"]))
            .or_default()
            .0 += 1;
        work.entry(worker_of(&push["pushedBy"])).or_default().1 += 1;
    }
    println!("(signs, pushes) by worker: {work:?}");
    assert_eq!(
        work.keys().cloned().collect::<Vec<_>>(),
        ["alpha", "beta"],
        "only the two workers worked: {work:?}"
    );
    for (worker, (signs, pushes)) in &work {
        assert!(signs + pushes > 0, "{worker} did nothing: {work:?}");
    }

    // What the registry holds: for each digest, exactly one layer per execution that built
    // it, and each layer is that execution's stored envelope.
    let mut expected: HashMap<String, BTreeSet<String>> = HashMap::new();
    let layers_of: Vec<(String, String)> = stream::iter(created.iter())
        .map(|(id, digest)| {
            let http = http.clone();
            let base = api.base.clone();
            async move {
                let envelope = http
                    .get(format!("{base}/v1/executions/{id}/attestation"))
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                let layer = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&envelope)));
                (digest.clone(), layer)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (digest, layer) in layers_of {
        assert!(
            expected.entry(digest).or_default().insert(layer),
            "two executions stored the same envelope"
        );
    }
    assert_eq!(expected.len(), total - shared_count + 1);
    assert_eq!(expected[&shared].len(), shared_count);
    let checked: Vec<Result<(), String>> = stream::iter(expected.iter())
        .map(|(digest, want)| {
            let reg = &reg;
            async move {
                let tag = format!("sha256-{}.att", digest.trim_start_matches("sha256:"));
                let manifest = reg.manifest_json(REPO, &tag).await;
                let layers: Vec<String> = manifest["layers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l["digest"].as_str().unwrap().to_owned())
                    .collect();
                let held: BTreeSet<String> = layers.iter().cloned().collect();
                if layers.len() == want.len() && held == *want {
                    Ok(())
                } else {
                    Err(format!(
                        "{tag}: {} layers, want exactly the {} envelopes of its executions",
                        layers.len(),
                        want.len()
                    ))
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let wrong: Vec<&String> = checked.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(wrong.is_empty(), "{} digests wrong: {wrong:?}", wrong.len());
    assert_eq!(
        db.count("SELECT COUNT(*) FROM jobs WHERE state <> 'done'")
            .await,
        0
    );
    println!("verified in {:.1?} in all", started.elapsed());
}
