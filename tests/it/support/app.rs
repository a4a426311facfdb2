//! `spawn_app`: the real application on an ephemeral port with a fresh database, plus a client
//! that signs webhooks the way a CI system would.

use std::net::SocketAddr;
use std::sync::Arc;

use attestd::App;
use attestd::config::{Settings, TokenSettings, WebhookSourceSettings};
use serde_json::{Value, json};

use super::{Backend, TestDatabase};

pub const ACCOUNT: &str = "acme";
pub const OTHER_ACCOUNT: &str = "globex";
pub const SECRET: &str = "acme-webhook-secret";
pub const OTHER_SECRET: &str = "globex-webhook-secret";
pub const TOKEN: &str = "acme-read-token";
pub const OTHER_TOKEN: &str = "globex-read-token";
pub const ADMIN_TOKEN: &str = "admin-read-token";
/// The builder ids acme's and globex's sources may claim (acme's first is its default).
pub const BUILDER: &str = "https://ci.example.com/runners/linux-amd64";
pub const OTHER_BUILDER: &str = "https://ci.globex.example/runners/linux";
/// A registry host the test configuration allows (nothing listens there unless a test starts it).
pub const REGISTRY: &str = "127.0.0.1:5999";

pub struct TestApp {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub http: reqwest::Client,
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    pub db: TestDatabase,
}

/// Settings for a test: two accounts with their own webhook sources and tokens, an admin token,
/// no anonymous reads, the worker off (tests drive it), everything on disk in `dir`. Both accounts
/// sign with the generated development key, shared on purpose (`signing.shared_default_key`):
/// tests of per-account keys configure their own.
pub fn test_settings(db: &TestDatabase, dir: &std::path::Path) -> Settings {
    let mut s = Settings::load(None).expect("default settings");
    s.database.url = db.url.clone().into();
    s.database.max_connections = 8;
    s.server.listen = "127.0.0.1:0".parse().unwrap();
    s.auth.anonymous_reads_on_loopback = false;
    s.auth.tokens = vec![
        token("acme", Some(ACCOUNT), TOKEN, false),
        token("globex", Some(OTHER_ACCOUNT), OTHER_TOKEN, false),
        token("admin", None, ADMIN_TOKEN, true),
    ];
    s.webhook.sources = vec![
        WebhookSourceSettings {
            name: "acme-ci".into(),
            account: ACCOUNT.parse().unwrap(),
            secrets: vec![SECRET.to_owned().into()],
            repositories: vec![format!("{REGISTRY}/acme/**")],
            builder_ids: vec![
                BUILDER.into(),
                "https://ci.example.com/runners/arm64".into(),
            ],
        },
        WebhookSourceSettings {
            name: "globex-ci".into(),
            account: OTHER_ACCOUNT.parse().unwrap(),
            secrets: vec![OTHER_SECRET.to_owned().into()],
            repositories: vec![format!("{REGISTRY}/globex/*")],
            builder_ids: vec![OTHER_BUILDER.into()],
        },
    ];
    s.webhook.dev_secret_file = dir.join("webhook.secret");
    s.signing.dev_key_prefix = dir.join("dev-cosign");
    s.signing.shared_default_key = true;
    s.secrets.file_dir = dir.to_path_buf();
    s.worker.enabled = false;
    s.registries = vec![attestd::config::RegistrySettings {
        host: REGISTRY.into(),
        format: Default::default(),
        insecure_http: true,
        ca_file: None,
        username: None,
        password: None,
    }];
    s
}

/// The sources' repository grants are written for [`REGISTRY`]; a test that swaps in a real
/// registry gets the same grants on that registry's host.
fn grant_test_repositories(s: &mut Settings) {
    let hosts: Vec<String> = s.registries.iter().map(|r| r.host.clone()).collect();
    for source in &mut s.webhook.sources {
        source.repositories = source
            .repositories
            .iter()
            .flat_map(|pattern| match pattern.strip_prefix(REGISTRY) {
                Some(path) => hosts.iter().map(|h| format!("{h}{path}")).collect(),
                None => vec![pattern.clone()],
            })
            .collect();
    }
}

fn token(name: &str, account: Option<&str>, token: &str, admin: bool) -> TokenSettings {
    TokenSettings {
        name: name.into(),
        account: account.map(|a| a.parse().unwrap()),
        sha256: attestd::http::auth::hash_token(token),
        admin,
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, configure: impl FnOnce(&mut Settings)) -> Self {
        let db = TestDatabase::new(backend).await;
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start(backend, db, dir, configure).await
    }

    /// Stop this app and start another on the same database and directory, configured afresh
    /// from [`test_settings`] and `configure`: what an operator's restart after a change does.
    pub async fn restart_with(self, configure: impl FnOnce(&mut Settings)) -> Self {
        self.app.shutdown.cancel();
        let Self {
            backend, dir, db, ..
        } = self;
        Self::start(backend, db, dir, configure).await
    }

    async fn start(
        backend: Backend,
        db: TestDatabase,
        dir: tempfile::TempDir,
        configure: impl FnOnce(&mut Settings),
    ) -> Self {
        let mut settings = test_settings(&db, dir.path());
        configure(&mut settings);
        grant_test_repositories(&mut settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        settings.server.public_url = format!("http://{addr}");
        let app = Arc::new(App::build(settings).await.expect("build app"));
        tokio::spawn(app.clone().serve(listener));
        Self {
            addr,
            app,
            http: reqwest::Client::new(),
            backend,
            dir,
            db,
        }
    }

    /// The database URL this app uses (for the CLI).
    pub fn database_url(&self) -> &str {
        &self.db.url
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POST a webhook body signed with `secret`.
    pub async fn post_webhook_signed(&self, body: &[u8], secret: &str) -> reqwest::Response {
        self.http
            .post(self.url("/v1/webhooks/build"))
            .header("content-type", "application/json")
            .header(
                "x-attestd-signature-256",
                attestd::ingest::signature::sign(secret.as_bytes(), body),
            )
            .body(body.to_vec())
            .send()
            .await
            .expect("request")
    }

    pub async fn post_webhook(&self, body: &Value) -> reqwest::Response {
        self.post_webhook_signed(body.to_string().as_bytes(), SECRET)
            .await
    }

    /// POST a webhook signed by acme's source and return the execution id it answered with.
    pub async fn record(&self, body: &Value) -> String {
        let created: Value = self
            .post_webhook(body)
            .await
            .json()
            .await
            .expect("execution JSON");
        created["id"].as_str().expect("execution id").to_owned()
    }

    /// The stored DSSE envelope of an execution, as `GET .../attestation` serves it.
    pub async fn attestation(&self, id: &str) -> Vec<u8> {
        let resp = self
            .get(&format!("/v1/executions/{id}/attestation"), TOKEN)
            .await;
        resp.bytes().await.expect("envelope bytes").to_vec()
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// How many executions exist across all accounts (the admin view).
    pub async fn execution_count(&self) -> usize {
        let filter = attestd::store::ExecutionFilter {
            limit: 1000,
            ..Default::default()
        };
        self.app.store.list_executions(&filter).await.unwrap().len()
    }
}

/// A valid schema-1 webhook for account `acme` with one artifact in the test registry.
pub fn webhook(pipeline_execution_id: &str) -> Value {
    json!({
        "schemaVersion": 1,
        "accountId": ACCOUNT,
        "pipelineIdentifier": "build_and_push",
        "pipelineExecutionId": pipeline_execution_id,
        "repositoryURL": "https://github.com/acme/app",
        "branch": "main",
        "commitSha": "4f1e0c7b9d3a2e6f8b0c1d2e3f4a5b6c7d8e9f01",
        "triggerType": "WEBHOOK",
        "triggeredBy": "alice@example.com",
        "builderId": "https://ci.example.com/runners/linux-amd64",
        "builderVersion": {"ci": "2.4.1", "buildkit": "0.17.0"},
        "startedOn": "2026-11-25T10:00:00Z",
        "finishedOn": "2026-11-25T10:04:31Z",
        "status": "succeeded",
        "artifacts": [
            {"image": format!("{REGISTRY}/acme/app:1.4.0"), "digest": format!("sha256:{}", "a1".repeat(32))}
        ]
    })
}

/// A valid webhook for account `globex`, building `REGISTRY/globex/app`, to be signed with
/// [`OTHER_SECRET`].
pub fn globex_webhook(pipeline_execution_id: &str) -> Value {
    let mut hook = webhook(pipeline_execution_id);
    hook["accountId"] = json!(OTHER_ACCOUNT);
    hook["builderId"] = json!(OTHER_BUILDER);
    hook["artifacts"][0]["image"] = json!(format!("{REGISTRY}/globex/app:2.0"));
    hook
}

/// The `error.code` of a JSON error response.
pub async fn error_code(resp: reqwest::Response) -> String {
    let body: Value = resp.json().await.expect("json error body");
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}
