//! Two executions of the same image digest on two attestd worker processes, with a registry (the
//! fault proxy) that holds its responses past the tag-lock TTL: both layers must be in the `.att`
//! at the end. Process A takes the lock, reads the `.att`, and its blob uploads are stalled past
//! the TTL, so the lock expires under it; process B then takes the lock and appends its layer. An
//! unfenced A resumes and writes the `.att` it planned before the stall, dropping B's layer after
//! B's read-back passed. Fenced delivery cuts A off (push deadline, fencing token checked before
//! the manifest write), so A retries on top of B's layer.

use std::time::{Duration, Instant};

use crate::support::attestd::{Attestd, Config, webhook};
use crate::support::check::{att_layers, check_att, expected_from_api, push_images};
use crate::support::postgres::Postgres;
use crate::support::proxy::{FaultProxy, Stall};
use crate::support::registry::TestRegistry;
use crate::support::{report, scenario_dir, secs};

/// The tag-lock TTL of an attestd without `worker.lock_ttl_secs` (its `TAG_LOCK_TTL`).
const BUILT_IN_LOCK_TTL: u64 = 120;
/// The registry client's per-read timeout: a single stalled response must stay below it.
const READ_TIMEOUT: u64 = 60;

pub async fn run() {
    let dir = scenario_dir("stall");
    let pg = Postgres::start().await;
    let reg = TestRegistry::anonymous().await;
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", reg.port).parse().unwrap()).await;
    let image = push_images(&reg, "acme/stall", 1).await.remove(0);

    let mut config = Config::new(&pg.url(), &[proxy.host()]);
    config
        .set("worker", "concurrency", 1)
        .set("worker", "backoff_base_ms", 200)
        .set("worker", "backoff_max_secs", 2)
        .set("worker", "max_attempts", 50);
    let fenced = config.worker_if_known("lock_ttl_secs", 4);
    let lock_ttl = if fenced {
        config.worker_if_known("push_deadline_secs", 3);
        config.set("worker", "lease_secs", 6);
        4
    } else {
        // Without fenced delivery only the tag lock may expire under A, not its job lease.
        config.set("worker", "lease_secs", 600);
        BUILT_IN_LOCK_TTL
    };
    // Stall A's uploads, in pieces each below the client's read timeout, past the lock TTL.
    let total_stall = lock_ttl + (lock_ttl / 4).max(4);
    let pieces = total_stall.div_ceil(READ_TIMEOUT - 15);
    let piece = Duration::from_secs(total_stall.div_ceil(pieces));
    proxy.stall(Stall {
        method: None,
        path_contains: "/blobs/uploads/",
        delay: piece,
        times: pieces as usize,
    });

    let started = Instant::now();
    let a = Attestd::start(dir.path(), "attestd-a", config.clone()).await;
    let first = a
        .deliver(
            &webhook("stall-a", &image.reference(&proxy.host()), &image.digest),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // A holds the tag lock once its first upload is held.
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.counts().stalled == 0 {
        assert!(
            Instant::now() < deadline,
            "A never reached the registry's blob upload:\n{}",
            a.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = Attestd::start(dir.path(), "attestd-b", config).await;
    let second = b
        .deliver(
            &webhook("stall-b", &image.reference(&proxy.host()), &image.digest),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ids = vec![first.id().unwrap(), second.id().unwrap()];

    let within = Duration::from_secs(total_stall + 120);
    let attested = b.wait_attested(&ids, within).await;
    let elapsed = started.elapsed();
    // Let any write still held by the proxy land before looking at the registry.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let layers_now = att_layers(&reg, &image.repo, &image.digest).await.len();
    let counts = proxy.counts();
    let figures = [
        (
            "lock_ttl_s",
            if fenced {
                lock_ttl.to_string()
            } else {
                format!("{lock_ttl}(built-in)")
            },
        ),
        ("stalls", pieces.to_string()),
        ("stall_each_s", secs(piece)),
        ("registry_requests", counts.requests.to_string()),
        ("both_attested_s", secs(elapsed)),
        ("layers", layers_now.to_string()),
    ];
    report("stalled_registry", &figures);
    if let Err(e) = attested {
        panic!(
            "{e}\n--- A ---\n{}\n--- B ---\n{}\n--- registry requests ---\n{}",
            a.log_tail(),
            b.log_tail(),
            proxy.log()
        );
    }
    let expected = expected_from_api(&b, &ids).await;
    check_att(&reg, &expected, &b.current_public_key().await)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "a layer was lost although the API says both executions are attested \
                 (lock TTL {lock_ttl} s, responses stalled {total_stall} s):\n{e}\n\
                 --- registry requests ---\n{}",
                proxy.log()
            )
        });
}
