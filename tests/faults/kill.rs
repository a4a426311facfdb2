//! `kill -9` at random points while attestd drains a backlog, restarted each time on the same
//! database: every acknowledged execution ends attested, none is recorded twice, no `.att` holds a
//! layer twice, none is stuck. Half the backlog is acknowledged before the first kill; the other
//! half is delivered during the kills by a client that retries until acknowledged, as a CI system
//! does. The registry sits behind the fault proxy, which holds its answer to every manifest write
//! for 200 ms, so that a kill often lands in a push between the write and its acknowledgement.
//! Figures: the total drain time and the longest stall (no execution became attested while some
//! were waiting), measured from the database so that restarts count.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use rand::{RngExt as _, SeedableRng as _};
use tokio_util::sync::CancellationToken;

use crate::support::attestd::{Attestd, Config, webhook};
use crate::support::check::{check_att, expected_from_api, push_images};
use crate::support::postgres::Postgres;
use crate::support::proxy::{FaultProxy, Stall};
use crate::support::registry::TestRegistry;
use crate::support::{report, scenario_dir, secs, seed, sized};

/// A stall longer than this means a dead process's leases or locks were not reclaimed "in
/// seconds" (fenced delivery's short lease and lock TTL, kept alive by a heartbeat).
const MAX_STALL: Duration = Duration::from_secs(30);

pub async fn run() {
    let executions = sized(100, 1000);
    let kills = sized(10, 30);
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = scenario_dir("kill");
    let pg = Postgres::start().await;
    let reg = TestRegistry::anonymous().await;
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", reg.port).parse().unwrap()).await;
    proxy.stall(Stall {
        method: Some("PUT"),
        path_contains: "/manifests/",
        delay: Duration::from_millis(200),
        times: usize::MAX,
    });
    let images = push_images(&reg, "acme/kill", executions / 4).await;
    let mut config = Config::new(&pg.url(), &[proxy.host()]);
    config
        .set("worker", "lease_secs", 5)
        .set("worker", "backoff_base_ms", 200)
        .set("worker", "backoff_max_secs", 5)
        // Every kill may cost an in-flight job an attempt; the kills are ours, not the job's.
        .set("worker", "max_attempts", 50);
    let fenced = config.worker_if_known("lock_ttl_secs", 5);
    config.worker_if_known("push_deadline_secs", 4);
    config.worker_if_known("max_reclaims", kills + 5);
    let mut app = Attestd::start(dir.path(), "attestd", config).await;

    let bodies: Vec<Vec<u8>> = (0..executions)
        .map(|i| {
            let image = &images[i % images.len()];
            webhook(
                &format!("kill-{i}"),
                &image.reference(&proxy.host()),
                &image.digest,
            )
        })
        .collect();
    let started = Instant::now();
    let client = app.client();
    let mut acknowledged: Vec<String> = futures::stream::iter(&bodies[..executions / 2])
        .map(|b| client.deliver(b, Duration::from_secs(30)))
        .buffered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|a| a.unwrap_or_else(|e| panic!("{e}")).id().expect("id"))
        .collect();

    let done = CancellationToken::new();
    let watch = tokio::spawn(watch_progress(pg.pool().await, executions, done.clone()));
    let late = tokio::spawn({
        let client = app.client();
        let bodies = bodies[executions / 2..].to_vec();
        async move {
            let mut ids = Vec::new();
            for b in &bodies {
                let a = client.deliver(b, Duration::from_secs(120)).await;
                ids.push(a.unwrap_or_else(|e| panic!("{e}")).id().expect("id"));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ids
        }
    });

    let mut last_restart = Instant::now();
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..2500))).await;
        app.kill9().await;
        app.restart().await;
        last_restart = Instant::now();
    }
    acknowledged.extend(late.await.expect("late deliveries"));
    let kill_phase = started.elapsed();

    let deadline = sized(150, 300);
    let waited = app
        .wait_attested(&acknowledged, Duration::from_secs(deadline))
        .await;
    let drain = started.elapsed();
    done.cancel();
    let (longest_stall, attested_seen) = watch.await.expect("progress watch");
    let figures = |extra: &[(&'static str, String)]| {
        let mut f = vec![
            ("executions", executions.to_string()),
            ("kills", kills.to_string()),
            ("seed", seed.to_string()),
            (
                "lock_ttl_s",
                if fenced {
                    "5".into()
                } else {
                    "120(built-in)".into()
                },
            ),
            ("kill_phase_s", secs(kill_phase)),
            ("drain_s", secs(drain)),
            ("longest_stall_s", secs(longest_stall)),
        ];
        f.extend_from_slice(extra);
        f
    };
    if let Err(e) = waited {
        report(
            "kill_9",
            &figures(&[("attested", attested_seen.to_string())]),
        );
        panic!(
            "not every acknowledged execution was attested {deadline} s after the last restart \
             ({:?} ago): {e}\n--- attestd log ---\n{}",
            last_restart.elapsed(),
            app.log_tail()
        );
    }

    let listed = app.executions().await;
    let runs: BTreeSet<&str> = listed
        .iter()
        .map(|e| e["pipelineExecutionId"].as_str().unwrap())
        .collect();
    assert_eq!(
        (listed.len(), runs.len()),
        (executions, executions),
        "one record per pipeline execution"
    );
    let retried = listed
        .iter()
        .filter(|e| e["artifacts"][0]["push"]["attempts"].as_i64().unwrap_or(0) > 1)
        .count();
    let expected = expected_from_api(&app, &acknowledged).await;
    let layers = check_att(&reg, &expected, &app.current_public_key().await)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    report(
        "kill_9",
        &figures(&[
            ("layers", layers.to_string()),
            ("pushes_retried", retried.to_string()),
        ]),
    );
    assert_eq!(layers, executions);
    assert!(
        retried > 0,
        "no kill landed while a push was in flight (no artifact took a second attempt): the \
         scenario did not exercise a reclaim"
    );
    assert!(
        longest_stall <= MAX_STALL,
        "delivery stalled for {longest_stall:?} (limit {MAX_STALL:?}): a killed process's \
         leases or tag locks held the backlog up{}",
        if fenced {
            ""
        } else {
            " — this attestd has no worker.lock_ttl_secs; its tag locks live 120 s"
        }
    );
}

/// Poll the number of attested executions until `target` or `done`; the longest time without
/// progress while work was left, and the last count seen. A figure, not an assertion source.
async fn watch_progress(
    pool: sqlx::PgPool,
    target: usize,
    done: CancellationToken,
) -> (Duration, usize) {
    let mut last_change = Instant::now();
    let mut last = 0usize;
    let mut longest = Duration::ZERO;
    while !done.is_cancelled() {
        if let Ok(n) = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM executions WHERE attestation_state = 'attested'",
        )
        .fetch_one(&pool)
        .await
        {
            let n = n as usize;
            if n > last {
                last = n;
                last_change = Instant::now();
            }
            if last >= target {
                break;
            }
        }
        longest = longest.max(last_change.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (longest, last)
}
