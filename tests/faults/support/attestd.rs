//! The real `attestd` binary as an operator runs it: a TOML file written here, `attestd --config
//! <file> serve` on a free loopback port, readiness from `/readyz`, and the scenario's hands on
//! the process — `kill -9`, SIGTERM, restart on the same database and data folder, an open-file
//! limit. Plus the HTTP calls a CI system and a user make: signed webhooks and API reads.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const ACCOUNT: &str = "acme";
pub const SECRET: &str = "faults-webhook-secret";
pub const TOKEN: &str = "faults-admin-token";
pub const BUILDER: &str = "https://ci.example.com/runners/linux-amd64";

/// The `[worker]` keys this build of attestd knows (fenced delivery adds some).
pub fn known_worker_keys() -> BTreeSet<String> {
    defaults()["worker"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// This build's built-in configuration, as `attestd print-config` shows it.
pub fn defaults() -> &'static Value {
    static DEFAULTS: OnceLock<Value> = OnceLock::new();
    DEFAULTS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_attestd"))
            .arg("print-config")
            .current_dir(dir.path())
            .env("ATTESTD_LOG", "error")
            .output()
            .expect("run attestd print-config");
        assert!(
            out.status.success(),
            "attestd print-config failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("print-config JSON")
    })
}

/// What one attestd process is configured with. Several processes may share a database and a
/// data folder (the development signing key lives there).
#[derive(Clone)]
pub struct Config {
    /// `section -> key -> TOML value`.
    sections: BTreeMap<&'static str, BTreeMap<String, String>>,
    /// Registry hosts (plain http, loopback); webhooks may attest `<host>/acme/**`.
    registries: Vec<String>,
    /// Raw TOML appended at the end (e.g. `[signing.keys.<name>]`).
    tail: String,
    /// `RLIMIT_NOFILE` for the process.
    pub nofile: Option<u64>,
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("string")
}

impl Config {
    pub fn new(database_url: &str, registries: &[String]) -> Self {
        let mut c = Self {
            sections: BTreeMap::new(),
            registries: registries.to_vec(),
            tail: String::new(),
            nofile: None,
        };
        c.set("database", "url", toml_str(database_url));
        c.set("auth", "anonymous_reads_on_loopback", "false");
        c.set("worker", "poll_interval_ms", 100);
        c
    }

    /// `[section] key = value` (value as TOML, e.g. `5`, `"text"`).
    pub fn set(&mut self, section: &'static str, key: &str, value: impl Display) -> &mut Self {
        self.sections
            .entry(section)
            .or_default()
            .insert(key.to_owned(), value.to_string());
        self
    }

    /// `[worker] key = value` when this attestd knows the key; whether it does.
    pub fn worker_if_known(&mut self, key: &str, value: impl Display) -> bool {
        let known = known_worker_keys().contains(key);
        if known {
            self.set("worker", key, value);
        }
        known
    }

    /// Append raw TOML tables.
    pub fn tail(&mut self, toml: &str) -> &mut Self {
        self.tail.push_str(toml);
        self.tail.push('\n');
        self
    }

    fn render(&self, port: u16, dir: &Path) -> String {
        let mut sections = self.sections.clone();
        let dir_str = |p: &str| toml_str(&dir.join(p).display().to_string());
        let mut defaults = |section: &'static str, key: &str, value: String| {
            sections
                .entry(section)
                .or_default()
                .entry(key.to_owned())
                .or_insert(value);
        };
        defaults("server", "listen", toml_str(&format!("127.0.0.1:{port}")));
        defaults(
            "auth",
            "tokens",
            format!(
                "[{{ name = \"faults\", sha256 = \"{}\", admin = true }}]",
                attestd::http::auth::hash_token(TOKEN)
            ),
        );
        defaults("webhook", "dev_secret_file", dir_str("webhook.secret"));
        defaults("secrets", "file_dir", dir_str(""));
        defaults("signing", "dev_key_prefix", dir_str("dev-cosign"));
        let mut out = String::new();
        for (section, keys) in &sections {
            out.push_str(&format!("[{section}]\n"));
            for (k, v) in keys {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        let grants: Vec<String> = self
            .registries
            .iter()
            .map(|h| toml_str(&format!("{h}/acme/**")))
            .collect();
        out.push_str(&format!(
            "[[webhook.sources]]\nname = \"faults-ci\"\naccount = \"{ACCOUNT}\"\nsecrets = [{}]\n\
             repositories = [{}]\nbuilder_ids = [{}]\n",
            toml_str(SECRET),
            grants.join(", "),
            toml_str(BUILDER)
        ));
        for host in &self.registries {
            out.push_str(&format!(
                "[[registries]]\nhost = {}\ninsecure_http = true\n",
                toml_str(host)
            ));
        }
        out.push_str(&self.tail);
        out
    }
}

/// One answer of attestd, as a client saw it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub latency: Duration,
    pub retry_after: Option<String>,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn id(&self) -> Option<String> {
        self.body["id"].as_str().map(str::to_owned)
    }
}

/// A running (or killed) attestd process; its API through [`Client`].
pub struct Attestd {
    client: Client,
    pub name: String,
    dir: PathBuf,
    config: Config,
    child: Option<tokio::process::Child>,
    pub starts: usize,
}

impl std::ops::Deref for Attestd {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// attestd's HTTP API as a CI system and a user call it; cheap to clone into tasks.
#[derive(Clone)]
pub struct Client {
    pub port: u16,
    pub http: reqwest::Client,
}

impl Attestd {
    /// Write `<dir>/<name>.toml`, start `attestd serve` and wait until `/readyz` says ready.
    pub async fn start(dir: &Path, name: &str, config: Config) -> Self {
        let port = super::free_port();
        std::fs::write(
            dir.join(format!("{name}.toml")),
            config.render(port, &dir.join("data")),
        )
        .expect("write attestd config");
        std::fs::create_dir_all(dir.join("data")).expect("data folder");
        let mut app = Self {
            client: Client {
                port,
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .pool_max_idle_per_host(64)
                    .build()
                    .expect("http client"),
            },
            name: name.to_owned(),
            dir: dir.to_path_buf(),
            config,
            child: None,
            starts: 0,
        };
        app.spawn().await;
        app
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }

    async fn spawn(&mut self) {
        use std::io::Write as _;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("attestd log file");
        self.starts += 1;
        let _ = writeln!(log, "==== start {} ====", self.starts);
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_attestd"));
        command
            .arg("--config")
            .arg(self.dir.join(format!("{}.toml", self.name)))
            .arg("serve")
            .current_dir(&self.dir)
            .env("ATTESTD_LOG", "warn,attestd=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .kill_on_drop(true);
        if let Some(n) = self.config.nofile {
            // SAFETY: the closure only calls setrlimit, which is async-signal-safe.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        self.child = Some(command.spawn().expect("start attestd"));
        if let Err(e) = self.wait_ready(Duration::from_secs(60)).await {
            panic!(
                "{e}\n--- {} ---\n{}",
                self.log_path().display(),
                self.log_tail()
            );
        }
    }

    /// Poll `/readyz` until it answers 200.
    pub async fn wait_ready(&mut self, within: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            if let Ok(r) = self
                .http
                .get(self.url("/readyz"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                && r.status() == 200
            {
                return Ok(started.elapsed());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("attestd {} exited with {status}", self.name));
            }
            if started.elapsed() > within {
                return Err(format!(
                    "attestd {} not ready within {within:?} on port {}",
                    self.name, self.port
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`, then reap it.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// SIGTERM and wait for the graceful exit (SIGKILL after 30 s).
    pub async fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            super::terminate(child, Duration::from_secs(30)).await;
        }
    }

    /// Start again with the same configuration, port, database and data folder.
    pub async fn restart(&mut self) {
        self.kill9().await;
        self.spawn().await;
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Whether the process is still alive (has not exited on its own).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn log_tail(&self) -> String {
        super::postgres::tail(&self.log_path(), 40)
    }

    /// A handle on the API to move into tasks.
    pub fn client(&self) -> Client {
        self.client.clone()
    }
}

impl Client {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// POST a webhook body signed with the source's secret.
    pub async fn post_webhook(&self, body: &[u8]) -> Result<Answer, String> {
        let started = Instant::now();
        let response = self
            .http
            .post(self.url("/v1/webhooks/build"))
            .header("content-type", "application/json")
            .header(
                "x-attestd-signature-256",
                attestd::ingest::signature::sign(SECRET.as_bytes(), body),
            )
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| format!("POST /v1/webhooks/build: {e}"))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response
            .text()
            .await
            .map_err(|e| format!("read webhook answer: {e}"))?;
        Ok(Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
            latency: started.elapsed(),
            retry_after,
        })
    }

    /// POST a webhook until it is acknowledged (202 or 200), as a CI system retrying would:
    /// after connection errors and 503s, every 100 ms, up to `within`.
    pub async fn deliver(&self, body: &[u8], within: Duration) -> Result<Answer, String> {
        let deadline = Instant::now() + within;
        loop {
            let last = match self.post_webhook(body).await {
                Ok(a) if a.status == 202 || a.status == 200 => return Ok(a),
                Ok(a) if a.status == 503 => format!("503 {}", a.code()),
                Ok(a) => return Err(format!("webhook answered {}: {}", a.status, a.body)),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(format!(
                    "webhook not acknowledged within {within:?}: {last}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GET an API path with the admin token: (status, JSON or the raw bytes as a string).
    pub async fn get(&self, path: &str) -> Result<(u16, Vec<u8>), String> {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        Ok((status, bytes.to_vec()))
    }

    async fn get_json(&self, path: &str) -> Value {
        let (status, bytes) = self.get(path).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            status,
            200,
            "GET {path}: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
        serde_json::from_slice(&bytes).expect("JSON")
    }

    /// `GET /v1/executions/{id}`: `None` on 404.
    pub async fn execution(&self, id: &str) -> Option<Value> {
        let (status, bytes) = self
            .get(&format!("/v1/executions/{id}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        match status {
            200 => Some(serde_json::from_slice(&bytes).expect("execution JSON")),
            404 => None,
            other => panic!(
                "GET /v1/executions/{id}: {other} {}",
                String::from_utf8_lossy(&bytes)
            ),
        }
    }

    /// Every execution, oldest first, through the paginated list.
    pub async fn executions(&self) -> Vec<Value> {
        self.executions_where("").await
    }

    /// The executions matching a `GET /v1/executions` query (e.g. `attestation=pushing`), oldest
    /// first, through the paginated list.
    pub async fn executions_where(&self, query: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = "/v1/executions?order=asc&limit=200".to_owned();
            if !query.is_empty() {
                path.push('&');
                path.push_str(query);
            }
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.get_json(&path).await;
            all.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return all,
            }
        }
    }

    /// `GET /v1/executions/{id}/attestation`: the stored envelope, `None` while unsigned.
    pub async fn envelope(&self, id: &str) -> Option<Vec<u8>> {
        let path = format!("/v1/executions/{id}/attestation");
        let (status, bytes) = self.get(&path).await.unwrap_or_else(|e| panic!("{e}"));
        match status {
            200 => Some(bytes),
            404 => None,
            other => panic!("GET {path}: {other} {}", String::from_utf8_lossy(&bytes)),
        }
    }

    /// The PEM of the key attestd signs with now (`GET /v1/keys`).
    pub async fn current_public_key(&self) -> String {
        let keys = self.get_json("/v1/keys").await;
        keys["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|k| k["state"] == "current")
            .and_then(|k| k["publicKeyPem"].as_str())
            .expect("a current key in GET /v1/keys")
            .to_owned()
    }

    /// Wait until every execution in `ids` is `attested`; the time it took, or what is left.
    /// Each poll lists only the executions still on their way (pending, pushing) and the failed
    /// ones; once none of `ids` is among them, one full listing confirms every one is attested.
    pub async fn wait_attested(
        &self,
        ids: &[String],
        within: Duration,
    ) -> Result<Duration, String> {
        let started = Instant::now();
        let wanted: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        loop {
            let mut waiting: BTreeMap<String, usize> = BTreeMap::new();
            let mut failed = Vec::new();
            for state in ["pending", "pushing", "failed"] {
                for e in self.executions_where(&format!("attestation={state}")).await {
                    if !wanted.contains(e["id"].as_str().unwrap_or("")) {
                        continue;
                    }
                    if state == "failed" {
                        failed.push(format!("{}: {}", e["id"], e["attestation"]["lastError"]));
                    }
                    *waiting.entry(state.to_owned()).or_default() += 1;
                }
            }
            if !failed.is_empty() {
                return Err(format!(
                    "{} of {} executions failed: {}",
                    failed.len(),
                    wanted.len(),
                    failed
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
            if waiting.is_empty() {
                let mut states: BTreeMap<String, usize> = BTreeMap::new();
                for e in self.executions().await {
                    if wanted.contains(e["id"].as_str().unwrap_or("")) {
                        let state = e["attestation"]["state"].as_str().unwrap_or("?");
                        *states.entry(state.to_owned()).or_default() += 1;
                    }
                }
                if states.get("attested") == Some(&wanted.len()) {
                    return Ok(started.elapsed());
                }
                waiting = states;
            }
            if started.elapsed() > within {
                return Err(format!(
                    "not every one of {} executions was attested after {within:?}; still {waiting:?}",
                    wanted.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// A schema-1 webhook for account acme: a succeeded build of `image` (`host/repo:tag`) at
/// `digest`, pipeline execution `run`.
pub fn webhook(run: &str, image: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 1,
        "accountId": ACCOUNT,
        "pipelineIdentifier": "faults",
        "pipelineExecutionId": run,
        "repositoryURL": "https://github.com/acme/app",
        "branch": "main",
        "commitSha": "4f1e0c7b9d3a2e6f8b0c1d2e3f4a5b6c7d8e9f01",
        "triggerType": "WEBHOOK",
        "triggeredBy": "faults@example.com",
        "builderId": BUILDER,
        "builderVersion": {"ci": "2.4.1"},
        "startedOn": "2026-11-25T10:00:00Z",
        "finishedOn": "2026-11-25T10:04:31Z",
        "status": "succeeded",
        "artifacts": [{"image": image, "digest": digest}]
    }))
    .expect("webhook JSON")
}
