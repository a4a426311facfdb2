//! The registry down during intake (the proxy answering 500 for the first half of the outage,
//! then resetting every connection): webhooks are acknowledged as fast as with the registry up
//! (≥ 0.9×, measured first in the same run), and every execution is attested once the registry
//! is back.
//!
//! Intake is sampled in bursts from four clients, a few before the outage and spread over it. On
//! a shared 2-core machine the rate of a burst swings two- or threefold with whatever else runs,
//! so each client alternates its webhooks between the attestd under test and a control attestd
//! (its own database, a registry that stays up): both are measured under the same conditions,
//! request by request. A burst's rate is `clients × webhooks ÷ time spent waiting for them`, and
//! what is compared is the median of (tested rate ÷ control rate) during the outage against the
//! same before it. Between bursts a trickle keeps webhooks coming for the whole outage.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::attestd::{Attestd, Client, Config, webhook};
use crate::support::check::{Image, check_att, expected_from_api, push_images};
use crate::support::postgres::Postgres;
use crate::support::proxy::{Fault, FaultProxy};
use crate::support::registry::TestRegistry;
use crate::support::{report, scenario_dir, secs, sized};

const CLIENTS: usize = 4;

pub async fn run() {
    let outage = Duration::from_secs(sized(10, 60));
    let samples = sized(8, 16);
    let burst = sized(40, 80);
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
    let mut control = Attestd::start(
        dir.path(),
        "control",
        Config::new(&control_db, &[reg.host()]),
    )
    .await;
    let webhooks = Webhooks {
        client: app.client(),
        images: push_images(&reg, "acme/outage", sized(20, 50)).await,
        host: proxy.host(),
        next: AtomicUsize::new(0),
    };
    let controls = Webhooks {
        client: control.client(),
        images: push_images(&reg, "acme/control", 10).await,
        host: reg.host(),
        next: AtomicUsize::new(0),
    };
    let mut acknowledged = Vec::new();
    let mut rates = Rates::default();

    // With the registry up: a pair of bursts a second.
    let mut normal = Vec::new();
    let cpu_start = (cpu_time(&app), cpu_time(&control), Instant::now());
    for k in 0..samples {
        let tick = Instant::now() + Duration::from_secs(1);
        let (ids, ratio) = rates
            .pair(&webhooks, &controls, &format!("up-{k}"), burst)
            .await;
        acknowledged.extend(ids);
        normal.push(ratio);
        acknowledged.extend(webhooks.trickle(&format!("up-{k}-t"), tick).await);
    }

    // The outage: pairs spread evenly over it, the trickle in between.
    let cpu_normal = cpu_share(&app, &control, cpu_start);
    let outage_started = Instant::now();
    let cpu_start = (cpu_time(&app), cpu_time(&control), Instant::now());
    proxy.set(Fault::Status500);
    let mut down = Vec::new();
    for k in 0..samples {
        let at = outage_started + outage.mul_f64((k as f64 + 0.5) / samples as f64);
        acknowledged.extend(webhooks.trickle(&format!("down-{k}-t"), at).await);
        if at >= outage_started + outage / 2 {
            proxy.set(Fault::Reset);
        }
        let (ids, ratio) = rates
            .pair(&webhooks, &controls, &format!("down-{k}"), burst)
            .await;
        acknowledged.extend(ids);
        down.push(ratio);
    }
    acknowledged.extend(webhooks.trickle("down-end", outage_started + outage).await);
    let cpu_outage = cpu_share(&app, &control, cpu_start);
    proxy.set(Fault::Pass);
    let outage_elapsed = outage_started.elapsed();
    control.stop().await;
    let failed_requests = {
        let c = proxy.counts();
        (c.status_500, c.reset)
    };

    let normal_ratio = median(&mut normal);
    let outage_ratio = median(&mut down);
    let relative = outage_ratio / normal_ratio;
    let (up_rate, down_rate) = (median(&mut rates.up), median(&mut rates.down));
    let drained = app
        .wait_attested(&acknowledged, Duration::from_secs(sized(300, 900)))
        .await;
    let mut figures = vec![
        ("outage_s", secs(outage_elapsed)),
        ("webhooks", acknowledged.len().to_string()),
        ("bursts", format!("{samples}x{burst}")),
        ("normal_per_s", format!("{up_rate:.0}")),
        ("outage_per_s", format!("{down_rate:.0}")),
        (
            "control_per_s",
            format!("{:.0}", median(&mut rates.control)),
        ),
        ("ratio", format!("{relative:.2}")),
        (
            "cpu_normal_pct",
            format!("{:.0}/{:.0}", cpu_normal.0, cpu_normal.1),
        ),
        (
            "cpu_outage_pct",
            format!("{:.0}/{:.0}", cpu_outage.0, cpu_outage.1),
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
    let expected = expected_from_api(&app, &acknowledged).await;
    let layers = check_att(&reg, &expected, &app.current_public_key().await)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    figures.push(("layers", layers.to_string()));
    report("registry_outage", &figures);
    assert!(
        failed_requests.0 > 0 && failed_requests.1 > 0,
        "the worker did not meet both halves of the outage: nothing to measure"
    );
    assert_eq!(layers, acknowledged.len());
    assert!(
        relative >= 0.9,
        "intake fell to {relative:.2}× of normal while the registry was down (against the \
         control: {outage_ratio:.2} during, {normal_ratio:.2} before; pair ratios before \
         {normal:.2?}, during {down:.2?})"
    );
}

/// Every burst's rate, for the figures.
#[derive(Default)]
struct Rates {
    up: Vec<f64>,
    down: Vec<f64>,
    control: Vec<f64>,
}

impl Rates {
    /// `pairs` webhooks to each attestd, every client alternating between them (starting with
    /// the other one on odd clients); the ids the tested one acknowledged and the ratio of rates.
    async fn pair(
        &mut self,
        tested: &Webhooks,
        control: &Webhooks,
        label: &str,
        pairs: usize,
    ) -> (Vec<String>, f64) {
        let per_client = pairs.div_ceil(CLIENTS);
        let clients = (0..CLIENTS).map(|c| async move {
            let (mut ids, mut tested_busy, mut control_busy) =
                (Vec::new(), Duration::ZERO, Duration::ZERO);
            for i in 0..per_client {
                let run = format!("{label}-{c}-{i}");
                let ((id, t), (_, c_time)) = if (c + i) % 2 == 0 {
                    let a = tested.timed(run.clone()).await;
                    (a, control.timed(run).await)
                } else {
                    let b = control.timed(run.clone()).await;
                    (tested.timed(run).await, b)
                };
                ids.push(id);
                tested_busy += t;
                control_busy += c_time;
            }
            (ids, tested_busy, control_busy)
        });
        let mut ids = Vec::new();
        let (mut tested_busy, mut control_busy) = (Duration::ZERO, Duration::ZERO);
        for (i, t, c) in futures::future::join_all(clients).await {
            ids.extend(i);
            tested_busy += t;
            control_busy += c;
        }
        let n = (per_client * CLIENTS) as f64;
        let rate = |busy: Duration| CLIENTS as f64 * n / busy.as_secs_f64();
        if label.starts_with("up") {
            self.up.push(rate(tested_busy));
        } else {
            self.down.push(rate(tested_busy));
        }
        self.control.push(rate(control_busy));
        (ids, rate(tested_busy) / rate(control_busy))
    }
}

/// CPU time the process has used so far (user + system), from `/proc/<pid>/stat`.
fn cpu_time(app: &Attestd) -> Duration {
    let stat = app
        .pid()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
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

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Unique webhooks for the scenario's images.
struct Webhooks {
    client: Client,
    images: Vec<Image>,
    host: String,
    /// Spreads the webhooks over the images.
    next: AtomicUsize,
}

impl Webhooks {
    fn body(&self, run: &str) -> Vec<u8> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let image = &self.images[n % self.images.len()];
        webhook(run, &image.reference(&self.host), &image.digest)
    }

    async fn post(&self, run: String) -> String {
        let a = self
            .client
            .post_webhook(&self.body(&run))
            .await
            .unwrap_or_else(|e| panic!("{run}: {e}"));
        assert_eq!(a.status, 202, "{run}: {}", a.body);
        a.id().expect("execution id")
    }

    /// One webhook, and how long it took to be acknowledged.
    async fn timed(&self, run: String) -> (String, Duration) {
        let started = Instant::now();
        let id = self.post(run).await;
        (id, started.elapsed())
    }

    /// One webhook every 100 ms until `until`.
    async fn trickle(&self, label: &str, until: Instant) -> Vec<String> {
        let mut ids = Vec::new();
        let mut i = 0;
        while Instant::now() < until {
            ids.push(self.post(format!("{label}-{i}")).await);
            i += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ids
    }
}
