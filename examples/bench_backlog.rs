//! Service-level push benchmark against a running attestd (release build, worker on) and a
//! registry: queue a backlog of N executions, then, while the worker drains it, post a fresh
//! webhook every 100 ms and time it, sample attestd's RSS and CPU from /proc, and report drain
//! throughput, CPU per pushed execution, RSS over the drain and fresh-webhook latency next to the
//! same latency measured idle. Driven by `scripts/bench/push`.
//!
//! `bench_backlog <attestd-url> <webhook-secret> <account> <registry host:port> <attestd pid> <N>`

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use serde_json::json;

const REPO: &str = "bench/backlog";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("attestd is running");
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .expect("stat format")
        .1
        .split(' ')
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn rss_mib(pid: &str) -> f64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("attestd is running");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

struct Bench {
    http: reqwest::Client,
    attestd: String,
    secret: String,
    account: String,
    registry: String,
}

impl Bench {
    /// Upload a blob: open an upload session, then PUT the bytes with their digest.
    async fn put_blob(&self, bytes: &[u8]) -> String {
        let digest = attestd::domain::Digest::of(bytes).to_string();
        let base = format!("http://{}", self.registry);
        let r = self
            .http
            .post(format!("{base}/v2/{REPO}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "open upload");
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        let location = if location.starts_with('/') {
            format!("{base}{location}")
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = self
            .http
            .put(format!("{location}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "finish upload");
        digest
    }

    /// Image `n`: shared config and layer blobs, a manifest made unique by an annotation.
    async fn push_image(&self, n: usize, config: &str, layer: &str) -> String {
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 5}],
            "annotations": {"n": n.to_string()},
        }))
        .unwrap();
        let digest = attestd::domain::Digest::of(&manifest).to_string();
        let url = format!("http://{}/v2/{REPO}/manifests/{digest}", self.registry);
        let r = self
            .http
            .put(url)
            .header("content-type", MANIFEST)
            .body(manifest)
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert!(
            status.is_success(),
            "manifest: {status}: {}",
            r.text().await.unwrap_or_default()
        );
        digest
    }

    async fn post(&self, id: String, digest: &str) -> Duration {
        let body = json!({
            "schemaVersion": 1, "accountId": self.account, "pipelineIdentifier": "bench",
            "pipelineExecutionId": id, "repositoryURL": "https://github.com/acme/app", "branch": "main",
            "commitSha": "4f1e0c7b9d3a2e6f8b0c1d2e3f4a5b6c7d8e9f01", "triggerType": "WEBHOOK",
            "triggeredBy": "bench", "builderId": "https://ci.example.com/bench",
            "startedOn": "2026-11-25T10:00:00Z", "finishedOn": "2026-11-25T10:04:31Z", "status": "succeeded",
            "artifacts": [{"image": format!("{}/{REPO}:bench", self.registry), "digest": digest}],
        })
        .to_string();
        let sig = attestd::ingest::signature::sign(self.secret.as_bytes(), body.as_bytes());
        let t = Instant::now();
        let r = self
            .http
            .post(format!("{}/v1/webhooks/build", self.attestd))
            .header("content-type", "application/json")
            .header("x-attestd-signature-256", sig)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        t.elapsed()
    }

    /// Executions this attestd attested, from `/metrics` (rendered from memory). Polling
    /// `/v1/stats` instead ran the dashboard's queries over the growing table every 500 ms:
    /// a fifth of the PostgreSQL CPU the check then measured was its own polling.
    async fn attested(&self) -> u64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.attestd))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with("attestd_receipt_to_attested_seconds_count"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

/// Post a fresh webhook every 100 ms for `count` times; latencies in ms.
async fn fresh_latencies(b: &Bench, tag: &str, digests: &[String]) -> Vec<f64> {
    let mut out = Vec::new();
    for (i, d) in digests.iter().enumerate() {
        out.push(b.post(format!("fresh-{tag}-{i}"), d).await.as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out.sort_by(f64::total_cmp);
    out
}

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let [_, attestd, secret, account, registry, pid, n] = a.as_slice() else {
        eprintln!("usage: bench_backlog <attestd-url> <secret> <account> <registry> <pid> <N>");
        std::process::exit(2);
    };
    let n: usize = n.parse().unwrap();
    let b = Bench {
        http: reqwest::Client::new(),
        attestd: attestd.trim_end_matches('/').to_owned(),
        secret: secret.clone(),
        account: account.clone(),
        registry: registry.clone(),
    };
    let config = b.put_blob(b"{}").await;
    let layer = b.put_blob(b"layer").await;
    let fresh = 50;
    let digests: Vec<String> = stream::iter(0..n + 2 * fresh)
        .map(|i| b.push_image(i, &config, &layer))
        .buffer_unordered(16)
        .collect()
        .await;
    let (backlog, fresh_digests) = digests.split_at(n);

    let idle = fresh_latencies(&b, "idle", &fresh_digests[..fresh]).await;
    while b.attested().await < fresh as u64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let base_attested = b.attested().await;

    let cpu0 = cpu_seconds(pid);
    let rss0 = rss_mib(pid);
    let start = Instant::now();
    stream::iter(backlog.iter().enumerate())
        .map(|(i, d)| b.post(format!("backlog-{i}"), d))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let queued = start.elapsed();
    let mut rss = vec![rss_mib(pid)];
    let busy = fresh_latencies(&b, "busy", &fresh_digests[fresh..]).await;
    loop {
        rss.push(rss_mib(pid));
        if b.attested().await >= base_attested + (n + fresh) as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let drained = start.elapsed();
    let cpu = cpu_seconds(pid) - cpu0;
    rss.sort_by(f64::total_cmp);
    println!(
        "backlog: {n} executions queued in {:.1}s, all signed and pushed after {:.1}s: {:.0} attested/s",
        queued.as_secs_f64(),
        drained.as_secs_f64(),
        (n + fresh) as f64 / drained.as_secs_f64()
    );
    println!(
        "attestd CPU: {:.1}s for {} executions (ingest + sign + push) = {:.2} ms per pushed execution",
        cpu,
        n + fresh,
        cpu * 1000.0 / (n + fresh) as f64
    );
    println!(
        "attestd RSS: {rss0:.0} MiB before; {:.0} / {:.0} / {:.0} MiB min / median / max while draining",
        rss[0],
        pct(&rss, 0.5),
        rss[rss.len() - 1]
    );
    println!(
        "fresh webhook latency idle:     p50={:.2}ms p99={:.2}ms max={:.2}ms",
        pct(&idle, 0.5),
        pct(&idle, 0.99),
        idle[idle.len() - 1]
    );
    println!(
        "fresh webhook latency draining: p50={:.2}ms p99={:.2}ms max={:.2}ms",
        pct(&busy, 0.5),
        pct(&busy, 0.99),
        busy[busy.len() - 1]
    );
}
