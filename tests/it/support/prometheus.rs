//! A real Prometheus server (Debian's `prometheus`) on a free loopback port with its own storage,
//! scraping one target every second; queries through its HTTP API; and `promtool check metrics`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::registry::{free_port, which};

/// A running Prometheus; killed on drop.
pub struct TestPrometheus {
    pub port: u16,
    dir: TempDir,
    child: Child,
    http: reqwest::Client,
}

impl TestPrometheus {
    /// Scrape `target`'s `/metrics` every second (with `bearer` as the token, if given) and
    /// answer queries once ready.
    pub async fn scraping(target: SocketAddr, bearer: Option<&str>) -> Self {
        let bin = which("ATTESTD_TEST_PROMETHEUS_BIN", "prometheus").unwrap_or_else(|| {
            panic!(
                "prometheus not found: run ./scripts/test (it installs it) or apt-get install prometheus"
            )
        });
        let dir = tempfile::tempdir().expect("temp dir");
        let auth = bearer
            .map(|t| format!("    authorization: {{ credentials: \"{t}\" }}\n"))
            .unwrap_or_default();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: attestd\n{auth}    static_configs:\n      - targets: [\"{target}\"]\n"
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut prometheus = Self {
            port,
            dir,
            child,
            http: reqwest::Client::new(),
        };
        prometheus.wait_ready().await;
        prometheus
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(self.url("/-/ready")).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus did not become ready on port {} within 30 s:\n{}",
                self.port,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The value of an instant query whose result is one number (wrap it in `sum(...)`), or
    /// `None` while it has no result.
    pub async fn query(&self, promql: &str) -> Option<f64> {
        let body: Value = self
            .http
            .get(self.url("/api/v1/query"))
            .query(&[("query", promql)])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        assert_eq!(body["status"], "success", "query {promql}: {body}");
        let result = body["data"]["result"].as_array()?;
        assert!(
            result.len() <= 1,
            "query {promql} has several series: {body}"
        );
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Query until every `(promql, value)` pair holds, for at most `within`; then fail naming
    /// what Prometheus last answered and how its scrapes went.
    pub async fn wait_until(&self, expected: &[(String, f64)], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let mut wrong = Vec::new();
            for (promql, want) in expected {
                let got = self.query(promql).await;
                if got != Some(*want) {
                    wrong.push(format!("{promql} = {got:?}, expected {want}"));
                }
            }
            if wrong.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                let targets: Value = match self.http.get(self.url("/api/v1/targets")).send().await {
                    Ok(r) => r.json().await.unwrap_or_default(),
                    Err(_) => Value::Null,
                };
                panic!(
                    "after {within:?} Prometheus still answers:\n  {}\ntargets: {}\nlog:\n{}",
                    wrong.join("\n  "),
                    targets["data"]["activeTargets"],
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for TestPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `promtool check metrics` on `exposition` (its stdin): `Err` with promtool's findings unless it
/// passes.
pub fn promtool_check_metrics(exposition: &str) -> Result<(), String> {
    use std::io::Write as _;
    let bin: PathBuf = which("ATTESTD_TEST_PROMTOOL_BIN", "promtool").unwrap_or_else(|| {
        panic!(
            "promtool not found: run ./scripts/test (it installs it) or apt-get install prometheus"
        )
    });
    let mut child = Command::new(&bin)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(exposition.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "promtool check metrics failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
