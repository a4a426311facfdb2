//! The registry down during intake (the proxy answering 500 for the first half of the outage,
//! then resetting every connection): webhooks are acknowledged as fast as with the registry up
//! (≥ 0.9×, measured first in the same run), and every succeeded build is attested once the
//! registry is back.
//!
//! Four clients post without pause for a while with the registry up, then for the whole outage.
//! On a shared 2-core machine intake swings two- or threefold with whatever else runs, so every
//! client alternates its webhooks between the attestd under test and a control attestd (its own
//! database, its own proxy in front of the same registry that stays up): both see the same
//! machine, request by request, and what
//! is compared is the tested attestd's rate relative to the control's, during the outage against
//! before it. A rate is `clients × webhooks ÷ time spent waiting for them`. Nine webhooks in ten
//! report failed builds — recorded like any other, with nothing to sign or push — so the load can
//! run for the whole outage without leaving thousands of pushes to drain; the tenth, a succeeded
//! build, is what the worker keeps retrying during the outage and delivers afterwards.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::attestd::{Attestd, Client, Config, webhook};
use crate::support::check::{Image, check_att, expected_from_api, push_images};
use crate::support::postgres::Postgres;
use crate::support::proxy::{Fault, FaultProxy};
use crate::support::registry::TestRegistry;
use crate::support::{report, scenario_dir, secs, sized};

const CLIENTS: usize = 4;
/// One webhook in this many is a succeeded build.
const SUCCEEDED_EVERY: usize = 10;

pub async fn run() {
    let outage = Duration::from_secs(sized(10, 60));
    let before = Duration::from_secs(sized(10, 30));
    let dir = scenario_dir("registry-outage");
    let pg = Postgres::start().await;
    let reg = TestRegistry::anonymous().await;
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", reg.port).parse().unwrap()).await;
    // Both workers run with their defaults (backoff from 2 s, doubling), as operators run them.
    let app = Attestd::start(
        dir.path(),
        "attestd",
        Config::new(&pg.url(), &[proxy.host()]),
    )
    .await;
    let control_db = pg.create_database("control").await;
    let control_proxy = FaultProxy::start(format!("127.0.0.1:{}", reg.port).parse().unwrap()).await;
    let mut control = Attestd::start(
        dir.path(),
        "control",
        Config::new(&control_db, &[control_proxy.host()]),
    )
    .await;
    let tested = Webhooks {
        client: app.client(),
        images: push_images(&reg, "acme/outage", sized(20, 50)).await,
        host: proxy.host(),
        next: AtomicUsize::new(0),
    };
    let controls = Webhooks {
        client: control.client(),
        images: push_images(&reg, "acme/control", sized(20, 50)).await,
        host: control_proxy.host(),
        next: AtomicUsize::new(0),
    };

    let cpu = (cpu_time(&app), cpu_time(&control), Instant::now());
    let normal = interleaved(&tested, &controls, "up", Instant::now() + before).await;
    let cpu_normal = cpu_share(&app, &control, cpu);

    let outage_started = Instant::now();
    let cpu = (cpu_time(&app), cpu_time(&control), Instant::now());
    proxy.set(Fault::Status500);
    let (down, ()) = tokio::join!(
        interleaved(&tested, &controls, "down", outage_started + outage),
        async {
            tokio::time::sleep(outage / 2).await;
            proxy.set(Fault::Reset);
        }
    );
    let cpu_outage = cpu_share(&app, &control, cpu);
    proxy.set(Fault::Pass);
    let outage_elapsed = outage_started.elapsed();
    control.stop().await;
    let failed_requests = {
        let c = proxy.counts();
        (c.status_500, c.reset)
    };

    let relative = down.relative() / normal.relative();
    let mut succeeded = normal.succeeded.clone();
    succeeded.extend(down.succeeded.iter().cloned());
    let recorded = normal.failed.len() + down.failed.len() + succeeded.len();
    let drained = app
        .wait_attested(&succeeded, Duration::from_secs(sized(180, 600)))
        .await;
    let mut figures = vec![
        ("outage_s", secs(outage_elapsed)),
        ("webhooks", recorded.to_string()),
        ("succeeded_builds", succeeded.len().to_string()),
        ("normal_per_s", format!("{:.0}", normal.tested_rate())),
        ("outage_per_s", format!("{:.0}", down.tested_rate())),
        (
            "control_per_s",
            format!("{:.0}/{:.0}", normal.control_rate(), down.control_rate()),
        ),
        ("ratio", format!("{relative:.2}")),
        (
            "cpu_pct",
            format!(
                "{:.0}/{:.0}(control {:.0}/{:.0})",
                cpu_normal.0, cpu_outage.0, cpu_normal.1, cpu_outage.1
            ),
        ),
        ("registry_500", failed_requests.0.to_string()),
        ("registry_resets", failed_requests.1.to_string()),
    ];
    let drained = match drained {
        Ok(d) => d,
        Err(e) => {
            report("registry_outage", &figures);
            panic!("{e}\n--- attestd log ---\n{}", app.log_tail());
        }
    };
    figures.push(("delivered_after_recovery_s", secs(drained)));
    let expected = expected_from_api(&app, &succeeded).await;
    let layers = check_att(&reg, &expected, &app.current_public_key().await)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    figures.push(("layers", layers.to_string()));
    report("registry_outage", &figures);

    let listed = app.executions().await;
    assert_eq!(
        listed.len(),
        recorded,
        "every acknowledged webhook is recorded"
    );
    let skipped = listed
        .iter()
        .filter(|e| e["attestation"]["state"] == "skipped")
        .count();
    assert_eq!(
        skipped,
        recorded - succeeded.len(),
        "failed builds: skipped"
    );
    // (Both halves are usually met; a worker whose loops all wait for tag locks left to expire
    // after a failed manifest write may sit out the second.)
    assert!(
        failed_requests.0 + failed_requests.1 > 0,
        "the worker never met the outage: nothing to measure"
    );
    assert_eq!(layers, succeeded.len());
    assert!(
        relative >= 0.9,
        "intake fell to {relative:.2}× of normal while the registry was down (relative to the \
         control: {:.2} before, {:.2} during)",
        normal.relative(),
        down.relative()
    );
}

/// What the clients saw in one window.
#[derive(Default)]
struct Window {
    succeeded: Vec<String>,
    failed: Vec<String>,
    tested_busy: Duration,
    control_busy: Duration,
    /// Webhooks to each attestd.
    n: usize,
}

impl Window {
    fn rate(&self, busy: Duration) -> f64 {
        CLIENTS as f64 * self.n as f64 / busy.as_secs_f64()
    }

    fn tested_rate(&self) -> f64 {
        self.rate(self.tested_busy)
    }

    fn control_rate(&self) -> f64 {
        self.rate(self.control_busy)
    }

    /// The tested attestd's rate as a multiple of the control's.
    fn relative(&self) -> f64 {
        self.tested_rate() / self.control_rate()
    }
}

/// [`CLIENTS`] clients posting without pause until `until`, each alternating between the tested
/// attestd and the control (which one goes first alternates too).
async fn interleaved(tested: &Webhooks, control: &Webhooks, label: &str, until: Instant) -> Window {
    let clients = (0..CLIENTS).map(|c| async move {
        let mut w = Window::default();
        let mut i = 0;
        while Instant::now() < until {
            let run = format!("{label}-{c}-{i}");
            let succeeded = i % SUCCEEDED_EVERY == c % SUCCEEDED_EVERY;
            let ((id, t), (_, c_time)) = if (c + i) % 2 == 0 {
                let a = tested.timed(&run, succeeded).await;
                (a, control.timed(&run, succeeded).await)
            } else {
                let b = control.timed(&run, succeeded).await;
                (tested.timed(&run, succeeded).await, b)
            };
            if succeeded {
                w.succeeded.push(id);
            } else {
                w.failed.push(id);
            }
            w.tested_busy += t;
            w.control_busy += c_time;
            w.n += 1;
            i += 1;
        }
        w
    });
    let mut all = Window::default();
    for w in futures::future::join_all(clients).await {
        all.succeeded.extend(w.succeeded);
        all.failed.extend(w.failed);
        all.tested_busy += w.tested_busy;
        all.control_busy += w.control_busy;
        all.n += w.n;
    }
    all
}

/// CPU time the process has used so far (user + system), from `/proc/<pid>/stat`.
fn cpu_time(app: &Attestd) -> Duration {
    let stat = app
        .pid()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .unwrap_or_default();
    // The fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: u64 = fields
        .get(11..13)
        .into_iter()
        .flatten()
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(ticks as f64 / per_second)
}

/// Percent of one core the tested and the control attestd used since `start`.
fn cpu_share(app: &Attestd, control: &Attestd, start: (Duration, Duration, Instant)) -> (f64, f64) {
    let wall = start.2.elapsed().as_secs_f64();
    let pct = |now: Duration, then: Duration| (now - then).as_secs_f64() * 100.0 / wall;
    (pct(cpu_time(app), start.0), pct(cpu_time(control), start.1))
}

/// Unique webhooks for one attestd's images.
struct Webhooks {
    client: Client,
    images: Vec<Image>,
    host: String,
    /// Spreads the webhooks over the images.
    next: AtomicUsize,
}

impl Webhooks {
    /// Post one webhook (a succeeded or a failed build); its execution id and how long it took
    /// to be acknowledged.
    async fn timed(&self, run: &str, succeeded: bool) -> (String, Duration) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let image = &self.images[n % self.images.len()];
        let mut body: serde_json::Value =
            serde_json::from_slice(&webhook(run, &image.reference(&self.host), &image.digest))
                .expect("webhook JSON");
        if !succeeded {
            body["status"] = "failed".into();
        }
        let body = serde_json::to_vec(&body).expect("webhook JSON");
        let started = Instant::now();
        let a = self
            .client
            .post_webhook(&body)
            .await
            .unwrap_or_else(|e| panic!("{run}: {e}"));
        assert_eq!(a.status, 202, "{run}: {}", a.body);
        (a.id().expect("execution id"), started.elapsed())
    }
}
