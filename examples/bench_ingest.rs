//! Ingest benchmark client: posts N signed build webhooks with C concurrent clients to a running
//! attestd and prints throughput and latency percentiles. Driven by `scripts/bench/ingest`.
//!
//! `cargo run --release --example bench_ingest -- <url> <secret> <account> <requests> <concurrency>`
//!
//! `BENCH_STATUS` sets the builds' status (default `succeeded`; `failed` records builds with
//! nothing to attest).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn body(account: &str, status: &str, n: usize) -> String {
    serde_json::json!({
        "schemaVersion": 1,
        "accountId": account,
        "pipelineIdentifier": "bench_pipeline",
        "pipelineExecutionId": format!("bench-{}-{n}", std::process::id()),
        "repositoryURL": "https://github.com/acme/bench-app",
        "branch": "main",
        "commitSha": format!("{:040x}", n),
        "triggerType": "WEBHOOK",
        "triggeredBy": "bench@example.com",
        "builderId": "https://ci.example.com/runners/linux-amd64",
        "builderVersion": {"ci": "2.4.1", "buildkit": "0.17.0"},
        "startedOn": "2026-11-25T10:00:00Z",
        "finishedOn": "2026-11-25T10:04:31Z",
        "status": status,
        "artifacts": [{"image": "localhost:5000/acme/bench-app:1.0", "digest": format!("sha256:{:064x}", n)}]
    })
    .to_string()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, secret, account, requests, concurrency] = args.as_slice() else {
        eprintln!("usage: bench_ingest <base-url> <secret> <account> <requests> <concurrency>");
        std::process::exit(2);
    };
    let requests: usize = requests.parse().expect("requests");
    let concurrency: usize = concurrency.parse().expect("concurrency");
    let status = std::env::var("BENCH_STATUS").unwrap_or_else(|_| "succeeded".into());
    let endpoint = format!("{}/v1/webhooks/build", url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    // Sign every body up front so the client's own work stays out of the measurement.
    let bodies: Arc<Vec<(String, String)>> = Arc::new(
        (0..requests)
            .map(|n| {
                let b = body(account, &status, n);
                let sig = attestd::ingest::signature::sign(secret.as_bytes(), b.as_bytes());
                (b, sig)
            })
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, endpoint, bodies, next) = (
            client.clone(),
            endpoint.clone(),
            bodies.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some((body, sig)) = bodies.get(n) else {
                    break;
                };
                let t = Instant::now();
                let resp = client
                    .post(&endpoint)
                    .header("content-type", "application/json")
                    .header("x-attestd-signature-256", sig)
                    .body(body.clone())
                    .send()
                    .await
                    .expect("request");
                assert_eq!(resp.status(), 202, "unexpected status");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::with_capacity(requests);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    println!(
        "attestd ingest: requests={} concurrency={} throughput={:.0}/s p50={:.2}ms p95={:.2}ms p99={:.2}ms",
        requests,
        concurrency,
        requests as f64 / elapsed,
        percentile(&all, 0.50),
        percentile(&all, 0.95),
        percentile(&all, 0.99)
    );
}
