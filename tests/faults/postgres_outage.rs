//! PostgreSQL crashes (`pg_ctl stop -m immediate`) and comes back mid-load, attestd untouched:
//! during the outage every webhook is answered `503 store_unavailable` with `Retry-After` within
//! about the pool's acquire timeout (never a hang to the request timeout, never a 500) and
//! `/readyz` says not ready just as fast; both recover by themselves once PostgreSQL is back, and
//! every execution acknowledged (202/200) before, during or after exists and ends attested.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::support::attestd::{Attestd, Client, Config, webhook};
use crate::support::check::{Image, check_att, expected_from_api, push_images};
use crate::support::postgres::Postgres;
use crate::support::registry::TestRegistry;
use crate::support::{ms, report, scenario_dir, secs, sized};

/// `database.acquire_timeout_ms` (the default) plus room for a busy 2-core machine.
const ANSWER_WITHIN: Duration = Duration::from_millis(2500);
/// How long the store may take to answer again once PostgreSQL is back.
const RECOVER_WITHIN: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
struct Sample {
    started: Instant,
    latency: Duration,
    status: u16,
    code: String,
    retry_after: bool,
    id: Option<String>,
}

pub async fn run() {
    let outage = Duration::from_secs(sized(5, 30));
    let dir = scenario_dir("postgres-outage");
    let mut pg = Postgres::start().await;
    let reg = TestRegistry::anonymous().await;
    let images = push_images(&reg, "acme/pgdown", sized(10, 40)).await;
    let mut config = Config::new(&pg.url(), &[reg.host()]);
    config
        .set("worker", "lease_secs", 10)
        .set("worker", "backoff_base_ms", 500)
        .set("worker", "backoff_max_secs", 5)
        .set("worker", "max_attempts", 50);
    config.worker_if_known("lock_ttl_secs", 5);
    config.worker_if_known("push_deadline_secs", 4);
    let mut app = Attestd::start(dir.path(), "attestd", config).await;
    let pid = app.pid();

    let stop = CancellationToken::new();
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let readyz = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let mut load = tokio::task::JoinSet::new();
    for client_no in 0..4 {
        load.spawn(post_until(
            app.client(),
            images.clone(),
            reg.host(),
            client_no,
            samples.clone(),
            stop.clone(),
        ));
    }
    load.spawn(poll_readyz(app.client(), readyz.clone(), stop.clone()));

    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.stop_immediate().await;
    let down = Instant::now();
    tokio::time::sleep(outage).await;
    let up_started = Instant::now();
    pg.start_again().await;
    let up = Instant::now();
    let pg_restart = up - up_started;

    // Recovery: a webhook started after PostgreSQL was back is acknowledged, /readyz says ready.
    let recovered = loop {
        let ok = |s: &[Sample], status: u16| {
            s.iter()
                .filter(|x| x.started >= up && x.status == status)
                .map(|x| x.started + x.latency)
                .min()
        };
        let webhook_ok = ok(&samples.lock().unwrap(), 202);
        let ready = ok(&readyz.lock().unwrap(), 200);
        if let (Some(w), Some(r)) = (webhook_ok, ready) {
            break w.max(r) - up;
        }
        assert!(
            up.elapsed() < RECOVER_WITHIN,
            "attestd did not recover {RECOVER_WITHIN:?} after PostgreSQL came back \
             (webhook 202: {}, /readyz 200: {})\n--- attestd log ---\n{}",
            webhook_ok.is_some(),
            ready.is_some(),
            app.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    while load.join_next().await.is_some() {}
    assert!(
        app.is_running() && app.pid() == pid,
        "attestd must ride out the outage without a restart"
    );

    let samples = samples.lock().unwrap().clone();
    let readyz = readyz.lock().unwrap().clone();
    // Requests that started while PostgreSQL was down; the last acquire timeout before it came
    // back may still be served by the restarted server.
    let certainly_down = |s: &&Sample| s.started >= down && s.started + ANSWER_WITHIN < up;
    let overlapping = |s: &&Sample| s.started >= down && s.started < up;
    let during: Vec<&Sample> = samples.iter().filter(overlapping).collect();
    let max_latency = during.iter().map(|s| s.latency).max().unwrap_or_default();
    let readyz_during: Vec<&Sample> = readyz.iter().filter(overlapping).collect();
    let readyz_max = readyz_during
        .iter()
        .map(|s| s.latency)
        .max()
        .unwrap_or_default();
    let refused = during.iter().filter(|s| s.status == 503).count();
    let acknowledged: Vec<String> = samples.iter().filter_map(|s| s.id.clone()).collect();

    let missing: Vec<&String> = {
        let mut missing = Vec::new();
        for id in &acknowledged {
            if app.execution(id).await.is_none() {
                missing.push(id);
            }
        }
        missing
    };
    let attested = app
        .wait_attested(&acknowledged, Duration::from_secs(sized(90, 180)))
        .await;
    let mut figures = vec![
        ("outage_s", secs(outage)),
        ("pg_restart_s", secs(pg_restart)),
        ("webhooks", samples.len().to_string()),
        ("acknowledged", acknowledged.len().to_string()),
        ("missing", missing.len().to_string()),
        ("outage_webhooks", during.len().to_string()),
        ("outage_503", refused.to_string()),
        ("outage_max_ms", ms(max_latency)),
        ("readyz_max_ms", ms(readyz_max)),
        ("recovered_s", secs(recovered)),
    ];
    if let Ok(t) = &attested {
        figures.push(("attested_after_s", secs(*t)));
    }
    report("postgres_outage", &figures);

    assert!(missing.is_empty(), "acknowledged but missing: {missing:?}");
    for s in samples.iter().filter(certainly_down) {
        assert!(
            s.status == 503 && s.code == "store_unavailable" && s.retry_after,
            "a webhook during the outage was answered {} {:?} (retry-after: {}), not 503 \
             store_unavailable with Retry-After",
            s.status,
            s.code,
            s.retry_after
        );
    }
    assert!(
        samples.iter().filter(certainly_down).count() > 0,
        "no webhook was sent while PostgreSQL was down"
    );
    for s in &during {
        assert!(
            matches!(s.status, 200 | 202 | 503),
            "a webhook overlapping the outage got {} {:?}",
            s.status,
            s.code
        );
    }
    assert!(
        max_latency <= ANSWER_WITHIN,
        "a webhook took {max_latency:?} to be answered during the outage (limit {ANSWER_WITHIN:?})"
    );
    let not_ready = readyz.iter().filter(certainly_down).collect::<Vec<_>>();
    assert!(
        !not_ready.is_empty(),
        "/readyz was not polled during the outage"
    );
    for s in &not_ready {
        assert_eq!(s.status, 503, "/readyz during the outage");
    }
    assert!(
        readyz_max <= ANSWER_WITHIN,
        "/readyz took {readyz_max:?} during the outage (limit {ANSWER_WITHIN:?})"
    );
    if let Err(e) = attested {
        panic!(
            "acknowledged executions were not all attested after PostgreSQL came back: {e}\n\
             --- attestd log ---\n{}",
            app.log_tail()
        );
    }
    let expected = expected_from_api(&app, &acknowledged).await;
    let layers = check_att(&reg, &expected, &app.current_public_key().await)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(layers, acknowledged.len());
}

/// One client: a unique webhook, then 50 ms, until `stop`.
async fn post_until(
    client: Client,
    images: Vec<Image>,
    host: String,
    client_no: usize,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: CancellationToken,
) {
    let mut i = 0;
    while !stop.is_cancelled() {
        let image = &images[(client_no + i) % images.len()];
        let body = webhook(
            &format!("pg-{client_no}-{i}"),
            &image.reference(&host),
            &image.digest,
        );
        let started = Instant::now();
        let sample = match client.post_webhook(&body).await {
            Ok(a) => Sample {
                started,
                latency: a.latency,
                status: a.status,
                code: a.code().to_owned(),
                retry_after: a.retry_after.is_some(),
                id: matches!(a.status, 200 | 202).then(|| a.id()).flatten(),
            },
            Err(e) => Sample {
                started,
                latency: started.elapsed(),
                status: 0,
                code: e,
                retry_after: false,
                id: None,
            },
        };
        samples.lock().unwrap().push(sample);
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /readyz` every 250 ms until `stop`.
async fn poll_readyz(client: Client, samples: Arc<Mutex<Vec<Sample>>>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let started = Instant::now();
        let status = client
            .http
            .get(client.url("/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        samples.lock().unwrap().push(Sample {
            started,
            latency: started.elapsed(),
            status,
            code: String::new(),
            retry_after: false,
            id: None,
        });
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
