//! Read-path benchmark client: C concurrent clients with a bearer token read from a running
//! attestd for a fixed time, each request for a random execution of the given list, and it prints
//! throughput and latency percentiles. Driven by `scripts/bench/read`, which runs pgbench's
//! selects of the same rows in the same run.
//!
//! `bench_read <base-url> <token> <ids-file> <execution|provenance|list> <seconds> <concurrency>`
//!
//! - `execution`: `GET /v1/executions/{id}`;
//! - `provenance`: `GET /v1/executions/{id}/provenance`;
//! - `list`: `GET /v1/executions?limit=50&cursor={id}`, the 50 executions received before `id`
//!   (ids are taken from all but the oldest 50, so every page is full).

use std::time::{Duration, Instant};

const PAGE: usize = 50;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// A xorshift generator per client: random ids without a dependency or shared state.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, token, ids, mode, seconds, concurrency] = args.as_slice() else {
        eprintln!(
            "usage: bench_read <base-url> <token> <ids-file> <execution|provenance|list> <seconds> <concurrency>"
        );
        std::process::exit(2);
    };
    let base = url.trim_end_matches('/').to_owned();
    let mut ids: Vec<String> = std::fs::read_to_string(ids)
        .expect("ids file")
        .lines()
        .map(str::to_owned)
        .collect();
    ids.sort();
    let urls: Vec<String> = match mode.as_str() {
        "execution" => ids
            .iter()
            .map(|id| format!("{base}/v1/executions/{id}"))
            .collect(),
        "provenance" => ids
            .iter()
            .map(|id| format!("{base}/v1/executions/{id}/provenance"))
            .collect(),
        "list" => ids
            .iter()
            .skip(PAGE)
            .map(|id| format!("{base}/v1/executions?limit={PAGE}&cursor={id}"))
            .collect(),
        other => panic!("unknown mode {other}"),
    };
    let seconds: u64 = seconds.parse().expect("seconds");
    let concurrency: usize = concurrency.parse().expect("concurrency");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let urls = std::sync::Arc::new(urls);
    let auth = format!("Bearer {token}");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let (client, urls, auth, mode) = (client.clone(), urls.clone(), auth.clone(), mode.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((c as u64 + 1) * 0x2545_F491_4F6C_DD1D));
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let url = &urls[rng.below(urls.len())];
                let t = Instant::now();
                let resp = client
                    .get(url)
                    .header("authorization", &auth)
                    .send()
                    .await
                    .expect("request");
                assert_eq!(resp.status(), 200, "GET {url}");
                let body = resp.bytes().await.expect("body");
                latencies.push(t.elapsed());
                if mode == "list" && latencies.len() == 1 {
                    let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    assert_eq!(
                        page["items"].as_array().map(Vec::len),
                        Some(PAGE),
                        "full page"
                    );
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    println!(
        "attestd {mode:<10} requests={} concurrency={concurrency} throughput={:.0}/s p50={:.2}ms p95={:.2}ms p99={:.2}ms",
        all.len(),
        all.len() as f64 / elapsed,
        percentile(&all, 0.50),
        percentile(&all, 0.95),
        percentile(&all, 0.99)
    );
}
