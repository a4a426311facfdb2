//! Metrics end to end: `GET /metrics` as promtool, a real Prometheus server and its users read it.
//!
//! A test binary of its own because the metrics recorder is process-global: under `cargo test`
//! every test of one binary shares a process, so these tests share it only with each other, and
//! the ones that run the worker or count take turns ([`take_turn`]). Their assertions use labels
//! no other app uses (a source name made up per test, registries on ports of their own); counters
//! without such a label are compared with what the app showed before the test sent anything.

#[path = "../it/support/mod.rs"]
mod support;

mod access;
mod exposition;
mod read_cache;
mod scrape;
mod store;

use attestd::config::{PushFormat, RegistrySettings, Settings, WebhookSourceSettings};
use attestd::domain::Digest;
use serde_json::{Value, json};

use support::app::{ACCOUNT, BUILDER, TestApp, webhook};
use support::registry::{TestRegistry, free_port};

/// Held by each test that counts, for its whole run.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn take_turn() -> tokio::sync::MutexGuard<'static, ()> {
    TURN.lock().await
}

pub const REPO: &str = "acme/app";

/// What [`Traffic::send`] sent and what the worker then did, to compare with the metrics.
pub struct Sent {
    pub accepted: usize,
    pub bad_signature: usize,
    pub invalid: usize,
    /// Executions whose push went through (they are attested).
    pub pushed: usize,
    /// Executions whose image is not in the registry (the push fails, and is retried).
    pub missing_image: usize,
    /// Executions for the registry whose password is not in the secret backend (dead at once).
    pub missing_password: usize,
}

/// One test's webhook source and registries, with labels no other test uses.
pub struct Traffic {
    /// The webhook source's name: `metrics-<random>`.
    pub source: String,
    secret: String,
    /// A registry attestd may push to whose password reference is not in the secret backend.
    pub locked_registry: String,
}

impl Traffic {
    pub fn unique() -> Self {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
        Self {
            source: format!("metrics-{tag}"),
            secret: format!("metrics-secret-{tag}"),
            locked_registry: format!("127.0.0.1:{}", free_port()),
        }
    }

    /// Add this test's source and registries; the worker's retries wait long enough that the
    /// test's own worker run never repeats an attempt.
    pub fn configure(&self, s: &mut Settings, reg: &TestRegistry) {
        s.webhook.sources.push(WebhookSourceSettings {
            name: self.source.clone(),
            kind: Default::default(),
            account: ACCOUNT.parse().unwrap(),
            secrets: vec![self.secret.clone().into()],
            repositories: vec![format!("{}/acme/**", support::app::REGISTRY)],
            builder_ids: vec![BUILDER.into()],
            images: Vec::new(),
        });
        s.registries = vec![
            reg.settings(PushFormat::Att),
            RegistrySettings {
                host: self.locked_registry.clone(),
                format: PushFormat::Att,
                insecure_http: true,
                ca_file: None,
                username: Some("robot".into()),
                password: Some("no-such-secret".into()),
            },
        ];
        s.worker.backoff_base_ms = 600_000;
        s.worker.backoff_max_secs = 3600;
        s.metrics.refresh_secs = 1;
    }

    /// Send accepted, unauthenticated and invalid webhooks, then run the worker once over them.
    pub async fn send(&self, app: &TestApp, reg: &TestRegistry, digest: &Digest) -> Sent {
        let sent = Sent {
            accepted: 6,
            bad_signature: 3,
            invalid: 2,
            pushed: 4,
            missing_image: 1,
            missing_password: 1,
        };
        let absent: Digest = format!("sha256:{}", "e7".repeat(32)).parse().unwrap();
        let mut hooks = Vec::new();
        for i in 0..sent.pushed {
            hooks.push(hook(
                &format!("{}-ok-{i}", self.source),
                &reg.host(),
                digest,
            ));
        }
        hooks.push(hook(
            &format!("{}-absent", self.source),
            &reg.host(),
            &absent,
        ));
        hooks.push(hook(
            &format!("{}-locked", self.source),
            &self.locked_registry,
            digest,
        ));
        for body in &hooks {
            let resp = app
                .post_webhook_signed(body.to_string().as_bytes(), &self.secret)
                .await;
            assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
        }
        for i in 0..sent.bad_signature {
            let body = hook(&format!("{}-forged-{i}", self.source), &reg.host(), digest);
            let resp = app
                .http
                .post(app.url(&format!("/v1/webhooks/{}", self.source)))
                .header("content-type", "application/json")
                .header(
                    "x-attestd-signature-256",
                    attestd::ingest::signature::sign(
                        b"not the secret",
                        body.to_string().as_bytes(),
                    ),
                )
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 401);
        }
        for i in 0..sent.invalid {
            let unlisted = hook(
                &format!("{}-unlisted-{i}", self.source),
                "registry.unlisted.example",
                digest,
            );
            let resp = app
                .post_webhook_signed(unlisted.to_string().as_bytes(), &self.secret)
                .await;
            assert_eq!(resp.status(), 422);
        }
        let ran = app.app.run_pending_jobs().await.unwrap();
        assert_eq!(ran, 2 * sent.accepted, "one sign and one push job each");
        sent
    }
}

/// A build of acme's with one image on `host`.
pub fn hook(id: &str, host: &str, digest: &Digest) -> Value {
    let mut hook = webhook(id);
    hook["artifacts"] =
        json!([{"image": format!("{host}/{REPO}:1.4.0"), "digest": digest.as_str()}]);
    hook
}

/// `GET /metrics` from the app's main listener, without a token (it listens on loopback).
pub async fn scrape(app: &TestApp) -> String {
    let resp = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

/// The sum of the samples of `name` carrying every label in `labels`, as the text format has
/// them (0 when there is none).
pub fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            let pair = |k: &str, v: &str| format!("{k}=\"{v}\"");
            n == name
                && labels.iter().all(|(k, v)| {
                    rest.starts_with(&pair(k, v)) || rest.contains(&format!(",{}", pair(k, v)))
                })
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}
