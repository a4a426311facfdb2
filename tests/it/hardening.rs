//! The HTTP server under clients that misbehave: bodies declared too large, headers sent a byte
//! at a time, more connections than the cap, more requests of one kind than its in-flight limit.
//! Each test speaks raw TCP where a well-behaved client library would hide the misbehaviour.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::Backend;
use crate::support::app::*;

/// Read until the peer closes (or `limit` passes); what arrived and when the close came.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&received).into_owned(),
                    Some(started.elapsed()),
                );
            }
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&received).into_owned(), None),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_sent() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(
            b"POST /v1/webhooks/build HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 104857600\r\n\r\n{",
        )
        .await
        .unwrap();
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("payload_too_large"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(app.execution_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_sent_a_byte_at_a_time_are_cut_at_the_header_read_timeout() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.server.header_read_timeout_secs = 1;
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let drip = async {
        for byte in b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: " {
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let started = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(4), drip).await;
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    let closed_after = started.elapsed();
    assert!(closed.is_some(), "the slow connection was never cut");
    assert!(
        closed_after < Duration::from_secs(4),
        "cut after {closed_after:?}, header_read_timeout is 1 s"
    );
    // A normal client is unaffected.
    assert_eq!(app.get("/healthz", TOKEN).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_idle_connections_make_room_for_new_clients() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.server.max_connections = 8;
        s.server.header_read_timeout_secs = 30;
    })
    .await;
    // Eight connections that never finish their headers hold every slot.
    let mut hogs = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        hogs.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let resp = reqwest::Client::new()
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        worst = worst.max(started.elapsed());
    }
    assert!(worst < Duration::from_millis(500), "healthz took {worst:?}");
    // Some of the hogs were closed to make room.
    let mut cut = 0;
    for hog in &mut hogs {
        if read_until_closed(hog, Duration::from_millis(100))
            .await
            .1
            .is_some()
        {
            cut += 1;
        }
    }
    assert!(cut > 0, "no idle connection was evicted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_its_in_flight_limit_a_route_class_is_shed_with_retry_after() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.server.max_in_flight_webhooks = 2;
        s.server.body_read_timeout_secs = 2;
    })
    .await;
    // Two webhooks whose bodies dribble hold the class's two slots.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        s.write_all(
            b"POST /v1/webhooks/build HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              x-attestd-signature-256: sha256=00\r\ncontent-length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let shed = app.post_webhook(&webhook("shed-1")).await;
    assert_eq!(shed.status(), 503);
    assert_eq!(
        shed.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(error_code(shed).await, "overloaded");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "shed, not queued"
    );
    // Reads have their own limit and are unaffected.
    assert_eq!(app.get("/v1/executions", TOKEN).await.status(), 200);

    // The dribbling bodies are cut by the body-read timeout (408), which frees the slots.
    for s in &mut slow {
        let (answer, closed) = read_until_closed(s, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("body_timeout"), "{answer}");
        assert!(closed.is_some());
    }
    assert_eq!(app.post_webhook(&webhook("shed-2")).await.status(), 202);
    assert_eq!(app.execution_count().await, 1);
}
