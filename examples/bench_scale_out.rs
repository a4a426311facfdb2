//! Scale-out benchmark driver for `scripts/bench/scale-out`: the load is queued through an API
//! process while no worker runs, then the workers are started and timed until every execution is
//! attested.
//!
//! `bench_scale_out load <api-url> <webhook-secret> <registry host:port> <repo> <N>`: push N
//! images (every 40th execution builds one shared image instead of its own) and post N
//! webhooks, 16 at a time.
//! `bench_scale_out drain <api-url> <N>`: wait until N executions are attested; print the time
//! since it started, the throughput and how the work split between the workers (`signedBy`,
//! `pushedBy`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use serde_json::{Value, json};

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const SHARED_EVERY: usize = 40;

async fn put_blob(http: &reqwest::Client, registry: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = attestd::domain::Digest::of(bytes).to_string();
    let base = format!("http://{registry}");
    let r = http
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .expect("registry answers");
    assert_eq!(r.status(), 202, "open upload");
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let location = if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = http
        .put(format!("{location}{sep}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .expect("registry answers");
    assert_eq!(r.status(), 201, "finish upload");
    digest
}

async fn load(api: &str, secret: &str, registry: &str, repo: &str, n: usize) {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let config = put_blob(&http, registry, repo, b"{}").await;
    let layer = put_blob(&http, registry, repo, b"layer").await;
    let own = n - n.div_ceil(SHARED_EVERY);
    let digests: Vec<String> = stream::iter(0..=own)
        .map(|i| {
            let http = &http;
            let manifest = serde_json::to_vec(&json!({
                "schemaVersion": 2, "mediaType": MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 5}],
                "annotations": {"n": i.to_string()},
            }))
            .unwrap();
            async move {
                let digest = attestd::domain::Digest::of(&manifest).to_string();
                let r = http
                    .put(format!("http://{registry}/v2/{repo}/manifests/{digest}"))
                    .header("content-type", MANIFEST)
                    .body(manifest)
                    .send()
                    .await
                    .expect("registry answers");
                assert!(r.status().is_success(), "manifest: {}", r.status());
                digest
            }
        })
        .buffered(16)
        .collect()
        .await;
    let (shared, own) = digests.split_last().unwrap();
    let mut own = own.iter();
    let plan: Vec<&String> = (0..n)
        .map(|i| {
            if i % SHARED_EVERY == 0 {
                shared
            } else {
                own.next().unwrap()
            }
        })
        .collect();
    println!(
        "load: {} images pushed in {:.1?}",
        digests.len(),
        started.elapsed()
    );
    let posted = Instant::now();
    stream::iter(plan.into_iter().enumerate())
        .for_each_concurrent(16, |(i, digest)| {
            let http = &http;
            async move {
                let body = json!({
                    "schemaVersion": 1, "accountId": "acme", "pipelineIdentifier": "bench",
                    "pipelineExecutionId": format!("{repo}-{i}"),
                    "repositoryURL": "https://github.com/acme/app", "branch": "main",
                    "commitSha": "4f1e0c7b9d3a2e6f8b0c1d2e3f4a5b6c7d8e9f01",
                    "triggerType": "WEBHOOK", "triggeredBy": "bench",
                    "startedOn": "2026-11-25T10:00:00Z", "finishedOn": "2026-11-25T10:04:31Z",
                    "status": "succeeded",
                    "artifacts": [{"image": format!("{registry}/{repo}:build-{i}"), "digest": digest}],
                })
                .to_string();
                let sig = attestd::ingest::signature::sign(secret.as_bytes(), body.as_bytes());
                let r = http
                    .post(format!("{api}/v1/webhooks/build"))
                    .header("content-type", "application/json")
                    .header("x-attestd-signature-256", sig)
                    .body(body)
                    .send()
                    .await
                    .expect("attestd answers");
                assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
            }
        })
        .await;
    println!(
        "load: {n} webhooks accepted in {:.1?} ({} for one shared digest)",
        posted.elapsed(),
        n.div_ceil(SHARED_EVERY)
    );
}

async fn get(http: &reqwest::Client, url: &str) -> Value {
    http.get(url)
        .send()
        .await
        .expect("attestd answers")
        .json()
        .await
        .expect("JSON")
}

async fn drain(api: &str, n: u64) {
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let stats = get(&http, &format!("{api}/v1/stats")).await;
        let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
        for d in stats["daily"].as_array().unwrap() {
            *by_state
                .entry(d["attestation"].as_str().unwrap().to_owned())
                .or_default() += d["count"].as_u64().unwrap();
        }
        assert_eq!(by_state.get("failed"), None, "{by_state:?}");
        if by_state.get("attested").copied().unwrap_or(0) >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    let mut work: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let worker = |by: &Value| {
        by.as_str()
            .and_then(|s| s.split('-').next())
            .unwrap_or("?")
            .to_owned()
    };
    let mut cursor = String::new();
    loop {
        let page = get(
            &http,
            &format!("{api}/v1/executions?limit=200&order=asc{cursor}"),
        )
        .await;
        for e in page["items"].as_array().unwrap() {
            work.entry(worker(&e["attestation"]["signedBy"]))
                .or_default()
                .0 += 1;
            work.entry(worker(&e["artifacts"][0]["push"]["pushedBy"]))
                .or_default()
                .1 += 1;
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    println!(
        "drain: {n} executions signed and pushed in {:.1}s = {:.1} executions/s; (signs, pushes) by worker: {work:?}",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [_, "load", api, secret, registry, repo, n] => {
            load(api, secret, registry, repo, n.parse().expect("N")).await
        }
        [_, "drain", api, n] => drain(api, n.parse().expect("N")).await,
        _ => {
            eprintln!(
                "usage: bench_scale_out load <api-url> <secret> <registry> <repo> <N>\n       \
                 bench_scale_out drain <api-url> <N>"
            );
            std::process::exit(2);
        }
    }
}
