//! The proxy itself, against a real registry: each fault does what it says, switched at runtime,
//! and the counts add up. The scenarios rely on it, so it is checked first.

use std::time::{Duration, Instant};

use crate::support::proxy::{Fault, FaultProxy, Stall};
use crate::support::registry::TestRegistry;
use crate::support::{ms, report};

pub async fn run() {
    let reg = TestRegistry::anonymous().await;
    let blob = vec![b'x'; 64 * 1024];
    let blob_digest = reg.put_blob("acme/proxy", &blob).await;
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", reg.port).parse().unwrap()).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = format!("http://{}", proxy.host());
    let blob_url = format!("{base}/v2/acme/proxy/blobs/{blob_digest}");
    let get = |url: String, timeout: Duration| {
        let http = http.clone();
        async move {
            let started = Instant::now();
            let outcome = match http.get(&url).timeout(timeout).send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let retry = r
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap_or("").to_owned());
                    r.bytes()
                        .await
                        .map(|b| (status, retry, b.len()))
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            (outcome, started.elapsed())
        }
    };
    let short = Duration::from_secs(5);

    let (pass, pass_time) = get(blob_url.clone(), short).await;
    assert_eq!(pass, Ok((200, None, blob.len())), "pass-through");

    proxy.set(Fault::Status500);
    assert_eq!(
        get(format!("{base}/v2/"), short).await.0.map(|o| o.0),
        Ok(500)
    );

    proxy.set(Fault::TooMany {
        retry_after_secs: 7,
    });
    let (throttled, _) = get(format!("{base}/v2/"), short).await;
    assert_eq!(
        throttled.map(|o| (o.0, o.1)),
        Ok((429, Some("7".to_owned())))
    );

    proxy.set(Fault::Reset);
    let (reset, _) = get(format!("{base}/v2/"), short).await;
    assert!(reset.is_err(), "reset: {reset:?}");

    proxy.set(Fault::Truncate);
    let (truncated, _) = get(blob_url.clone(), short).await;
    assert!(
        truncated.is_err(),
        "a truncated body must not read as complete: {truncated:?}"
    );

    proxy.set(Fault::SlowDrip {
        chunk: 4096,
        every: Duration::from_millis(50),
    });
    let (dripped, drip_time) = get(blob_url.clone(), short).await;
    assert_eq!(
        dripped,
        Ok((200, None, blob.len())),
        "slow drip arrives whole"
    );
    assert!(
        drip_time >= Duration::from_millis(700),
        "16 chunks 50 ms apart took {drip_time:?}"
    );

    proxy.set(Fault::Hang);
    let hung = tokio::spawn(get(format!("{base}/v2/"), Duration::from_secs(30)));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!hung.is_finished(), "a hanging request is not answered");
    proxy.set(Fault::Pass);
    let (hung, hang_time) = hung.await.unwrap();
    assert!(
        hung.is_err(),
        "the hung connection is reset when the fault ends: {hung:?}"
    );
    assert!(hang_time >= Duration::from_millis(1500));

    proxy.stall(Stall {
        method: Some("GET"),
        path_contains: "/blobs/",
        delay: Duration::from_secs(1),
        times: 1,
    });
    let (stalled, stall_time) = get(blob_url.clone(), short).await;
    assert_eq!(stalled, Ok((200, None, blob.len())));
    assert!(
        stall_time >= Duration::from_secs(1),
        "stalled {stall_time:?}"
    );
    let (after, after_time) = get(blob_url.clone(), short).await;
    assert_eq!(after, Ok((200, None, blob.len())));
    assert!(after_time < Duration::from_secs(1), "only `times` stalls");

    let c = proxy.counts();
    assert_eq!(
        (
            c.requests,
            c.passed,
            c.status_500,
            c.status_429,
            c.reset,
            c.truncated,
            c.dripped,
            c.hung,
            c.stalled
        ),
        (9, 3, 1, 1, 1, 1, 1, 1, 1),
        "{c:?}"
    );
    report(
        "proxy_modes",
        &[
            ("requests", c.requests.to_string()),
            ("pass_ms", ms(pass_time)),
            ("drip_ms", ms(drip_time)),
            ("hang_ms", ms(hang_time)),
            ("stall_ms", ms(stall_time)),
        ],
    );
}
