//! Slowloris: 300 connections sending their headers a byte a second, or complete headers for the
//! webhook route and then its body a byte a second — once with the inherited open-file limit and
//! once with the process limited to 256 open files. Meanwhile `/healthz` and signed webhooks, each
//! on a fresh connection, must still be answered (a webhook may be shed with `503` and
//! `Retry-After`, and must then be accepted within the body-read timeout), the slow connections
//! must be cut within the header- and body-read timeouts, and a declared `Content-Length` over the
//! body limit must be refused with `413` at once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::attestd::{Attestd, Client, Config, defaults, webhook};
use crate::support::check::{Image, push_images};
use crate::support::postgres::Postgres;
use crate::support::registry::TestRegistry;
use crate::support::{ms, percentile, report, scenario_dir, secs, sized};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slow {
    Headers,
    Body,
}

/// When the server cut one slow connection, and what it answered first, if anything.
#[derive(Debug)]
struct Cut {
    kind: Slow,
    after: Option<Duration>,
    status: Option<String>,
}

/// One phase's figures.
struct Phase {
    healthz: Vec<Duration>,
    webhook_attempts: Vec<Duration>,
    webhooks: usize,
    shed: usize,
    slowest_accept: Duration,
    header_cuts: Vec<Duration>,
    body_cuts: Vec<Duration>,
    early_413: Duration,
}

pub async fn run() {
    let connections = sized(300, 1000);
    let probe_for = Duration::from_secs(sized(8, 20));
    let server = &defaults()["server"];
    let header_timeout = Duration::from_secs(server["header_read_timeout_secs"].as_u64().unwrap());
    let body_timeout = Duration::from_secs(server["body_read_timeout_secs"].as_u64().unwrap());
    let body_limit = server["body_limit_bytes"].as_u64().unwrap();
    let dir = scenario_dir("slowloris");
    let pg = Postgres::start().await;
    let reg = TestRegistry::anonymous().await;
    let images = push_images(&reg, "acme/slowloris", 4).await;

    let mut figures = vec![("connections", connections.to_string())];
    for (label, nofile) in [("unlimited", None), ("nofile256", Some(256))] {
        let mut config = Config::new(&pg.url(), &[reg.host()]);
        config.nofile = nofile;
        let mut app = Attestd::start(dir.path(), label, config).await;
        let addr: SocketAddr = format!("127.0.0.1:{}", app.port).parse().unwrap();
        let give_up = body_timeout + Duration::from_secs(20);
        let slow: Vec<_> = (0..connections)
            .map(|i| {
                let kind = if i % 2 == 0 {
                    Slow::Headers
                } else {
                    Slow::Body
                };
                tokio::spawn(slow_connection(addr, kind, give_up))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let early_413 = oversized_body(addr, body_limit).await;
        let probes = probe(
            app.client(),
            &images,
            &reg.host(),
            label,
            probe_for,
            body_timeout,
        )
        .await;
        let mut cuts = Vec::new();
        for task in slow {
            cuts.push(task.await.expect("slow connection task"));
        }
        let alive_after = app.is_running();
        app.stop().await;

        let still_open: Vec<&Cut> = cuts.iter().filter(|c| c.after.is_none()).collect();
        let cut_times = |kind| {
            cuts.iter()
                .filter(|c| c.kind == kind)
                .filter_map(|c| c.after)
                .collect::<Vec<_>>()
        };
        let phase = Phase {
            header_cuts: cut_times(Slow::Headers),
            body_cuts: cut_times(Slow::Body),
            early_413,
            ..probes
        };
        let max = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
        // What the slow bodies were told before the cut: 408 (body deadline), 503 (shed), none.
        let answered = |code: Option<&str>| {
            cuts.iter()
                .filter(|c| c.kind == Slow::Body)
                .filter(|c| {
                    let status = c
                        .status
                        .as_deref()
                        .and_then(|l| l.split_whitespace().nth(1));
                    status == code
                })
                .count()
        };
        figures.extend([
            (
                leak(format!("{label}_healthz_p99_ms")),
                ms(percentile(&phase.healthz, 99.0)),
            ),
            (
                leak(format!("{label}_healthz_n")),
                phase.healthz.len().to_string(),
            ),
            (
                leak(format!("{label}_webhook_p99_ms")),
                ms(percentile(&phase.webhook_attempts, 99.0)),
            ),
            (
                leak(format!("{label}_webhooks")),
                phase.webhooks.to_string(),
            ),
            (
                leak(format!("{label}_webhooks_shed")),
                phase.shed.to_string(),
            ),
            (
                leak(format!("{label}_slowest_accept_s")),
                secs(phase.slowest_accept),
            ),
            (
                leak(format!("{label}_header_cut_p50_s")),
                secs(percentile(&phase.header_cuts, 50.0)),
            ),
            (
                leak(format!("{label}_header_cut_max_s")),
                secs(max(&phase.header_cuts)),
            ),
            (
                leak(format!("{label}_body_cut_p50_s")),
                secs(percentile(&phase.body_cuts, 50.0)),
            ),
            (
                leak(format!("{label}_body_cut_max_s")),
                secs(max(&phase.body_cuts)),
            ),
            (
                leak(format!("{label}_body_cut_answers")),
                format!(
                    "408:{}/503:{}/none:{}",
                    answered(Some("408")),
                    answered(Some("503")),
                    answered(None)
                ),
            ),
            (leak(format!("{label}_413_ms")), ms(phase.early_413)),
        ]);
        assert!(
            alive_after,
            "attestd ({label}) died under slowloris:\n{}",
            app.log_tail()
        );
        assert!(
            still_open.is_empty(),
            "{label}: {} slow connections were never cut (e.g. {:?})",
            still_open.len(),
            still_open.first()
        );
        assert!(
            max(&phase.header_cuts) <= header_timeout + Duration::from_secs(3),
            "{label}: slow headers were cut after up to {:?} (header_read_timeout {header_timeout:?})",
            max(&phase.header_cuts)
        );
        assert!(
            max(&phase.body_cuts) <= body_timeout + Duration::from_secs(3),
            "{label}: slow bodies were cut after up to {:?} (body_read_timeout {body_timeout:?})",
            max(&phase.body_cuts)
        );
        assert!(
            phase.early_413 < Duration::from_secs(1),
            "{label}: an oversized Content-Length took {:?} to be refused",
            phase.early_413
        );
    }
    report("slowloris", &figures);
}

/// Figure names built per phase live for the whole test.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Open one slow connection and keep dripping a byte a second until the server cuts it (EOF,
/// reset or a failed write) or `give_up` passes.
async fn slow_connection(addr: SocketAddr, kind: Slow, give_up: Duration) -> Cut {
    let opened = Instant::now();
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        // Refused outright: cut at once.
        return Cut {
            kind,
            after: Some(opened.elapsed()),
            status: None,
        };
    };
    let start: &[u8] = match kind {
        Slow::Headers => b"GET /v1/executions HTTP/1.1\r\nHost: attestd\r\nX-Slow: ",
        Slow::Body => b"POST /v1/webhooks/build HTTP/1.1\r\nHost: attestd\r\n\
            Content-Type: application/json\r\n\
            X-Attestd-Signature-256: sha256=0000000000000000000000000000000000000000000000000000000000000000\r\n\
            Content-Length: 4096\r\n\r\n{",
    };
    let mut status = None;
    let cut = |status| Cut {
        kind,
        after: Some(opened.elapsed()),
        status,
    };
    if stream.write_all(start).await.is_err() {
        return cut(status);
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut buf = [0u8; 1024];
    while opened.elapsed() < give_up {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return cut(status),
                Ok(n) => {
                    if status.is_none() {
                        let text = String::from_utf8_lossy(&buf[..n]);
                        status = text.lines().next().map(str::to_owned);
                    }
                }
            },
            _ = tick.tick() => {
                if stream.write_all(b" ").await.is_err() {
                    return cut(status);
                }
            }
        }
    }
    Cut {
        kind,
        after: None,
        status,
    }
}

/// Declare a body twice the limit and send none of it: how long until the `413`.
async fn oversized_body(addr: SocketAddr, limit: u64) -> Duration {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect for 413");
    let head = format!(
        "POST /v1/webhooks/build HTTP/1.1\r\nHost: attestd\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        limit * 2
    );
    stream.write_all(head.as_bytes()).await.expect("send head");
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("an answer to an oversized Content-Length within 10 s")
        .expect("read 413");
    let line = String::from_utf8_lossy(&buf[..n]);
    assert!(
        line.starts_with("HTTP/1.1 413"),
        "an oversized Content-Length got {:?}",
        line.lines().next()
    );
    started.elapsed()
}

/// `/healthz` every 100 ms and a signed webhook every 500 ms for `window`, each on a fresh
/// connection; a shed webhook is retried after its `Retry-After` until accepted.
async fn probe(
    client: Client,
    images: &[Image],
    host: &str,
    label: &str,
    window: Duration,
    body_timeout: Duration,
) -> Phase {
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let fresh = Client {
        port: client.port,
        http: fresh,
    };
    let started = Instant::now();
    let healthz = {
        let fresh = fresh.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while started.elapsed() < window {
                let t = Instant::now();
                let r = fresh.http.get(fresh.url("/healthz")).send().await;
                let status = r.map(|r| r.status().as_u16());
                assert!(
                    matches!(status, Ok(200)),
                    "/healthz under slowloris: {status:?}"
                );
                latencies.push(t.elapsed());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            latencies
        })
    };
    let mut webhooks = tokio::task::JoinSet::new();
    let mut n = 0;
    while started.elapsed() < window {
        let image = images[n % images.len()].clone();
        let body = webhook(
            &format!("slowloris-{label}-{n}"),
            &image.reference(host),
            &image.digest,
        );
        let fresh = fresh.clone();
        webhooks.spawn(async move {
            let first = Instant::now();
            let mut attempts = Vec::new();
            let mut shed = 0;
            loop {
                let a = fresh
                    .post_webhook(&body)
                    .await
                    .unwrap_or_else(|e| panic!("a webhook under slowloris was not answered: {e}"));
                attempts.push(a.latency);
                match a.status {
                    202 => return (attempts, shed, first.elapsed()),
                    503 if a.retry_after.is_some() => {
                        shed += 1;
                        assert!(
                            first.elapsed() < body_timeout + Duration::from_secs(5),
                            "a webhook was shed for {:?}",
                            first.elapsed()
                        );
                        let wait: u64 = a
                            .retry_after
                            .as_deref()
                            .and_then(|r| r.parse().ok())
                            .unwrap_or(1);
                        tokio::time::sleep(Duration::from_secs(wait)).await;
                    }
                    other => panic!("a webhook under slowloris got {other}: {}", a.body),
                }
            }
        });
        n += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut phase = Phase {
        healthz: healthz.await.expect("healthz probe"),
        webhook_attempts: Vec::new(),
        webhooks: 0,
        shed: 0,
        slowest_accept: Duration::ZERO,
        header_cuts: Vec::new(),
        body_cuts: Vec::new(),
        early_413: Duration::ZERO,
    };
    while let Some(done) = webhooks.join_next().await {
        let (attempts, shed, accepted_after) = done.expect("webhook probe");
        phase.webhook_attempts.extend(attempts);
        phase.webhooks += 1;
        phase.shed += shed;
        phase.slowest_accept = phase.slowest_accept.max(accepted_after);
    }
    phase
}
