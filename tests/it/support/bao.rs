//! The OpenBao dev server `./scripts/test` starts: its address and root token from the
//! environment, and helpers that give each test its own KV path and Transit mount.

use serde_json::{Value, json};

use attestd::config::{SecretBackendKind, SecretsSettings};

/// A handle on the test OpenBao server.
pub struct Bao {
    pub addr: String,
    pub token: String,
    http: reqwest::Client,
}

impl Bao {
    /// Reads `ATTESTD_TEST_BAO_ADDR` / `ATTESTD_TEST_BAO_TOKEN`; panics with how to start OpenBao.
    pub fn from_env() -> Self {
        let addr = std::env::var("ATTESTD_TEST_BAO_ADDR").unwrap_or_else(|_| {
            panic!(
                "ATTESTD_TEST_BAO_ADDR is not set. start OpenBao: run ./scripts/test or see \
                 SERVICES.md (then export ATTESTD_TEST_BAO_ADDR=http://127.0.0.1:<port> \
                 ATTESTD_TEST_BAO_TOKEN=root)"
            )
        });
        let token = std::env::var("ATTESTD_TEST_BAO_TOKEN").unwrap_or_else(|_| {
            panic!("ATTESTD_TEST_BAO_TOKEN is not set. start OpenBao: run ./scripts/test or see SERVICES.md")
        });
        Self {
            addr: addr.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::new(),
        }
    }

    /// `secrets` settings pointing attestd's vault backend at this server with the root token.
    pub fn secrets_settings(&self) -> SecretsSettings {
        secrets_settings(&self.addr, &self.token)
    }

    /// A name no other test uses, for KV paths, mounts and keys.
    pub fn unique(prefix: &str) -> String {
        format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
    }

    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/v1/{path}", self.addr);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .header("X-Vault-Token", &self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("OpenBao at {} is not answering ({e}); start OpenBao: run ./scripts/test or see SERVICES.md", self.addr));
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        }
    }

    /// Write a KV v2 secret at `secret/<path>`.
    pub async fn write_kv(&self, path: &str, fields: Value) {
        self.request(
            reqwest::Method::POST,
            &format!("secret/data/{path}"),
            Some(json!({ "data": fields })),
        )
        .await;
    }

    /// Mount a Transit engine at a fresh path and return the mount.
    pub async fn enable_transit(&self) -> String {
        let mount = Self::unique("transit");
        self.request(
            reqwest::Method::POST,
            &format!("sys/mounts/{mount}"),
            Some(json!({ "type": "transit" })),
        )
        .await;
        mount
    }

    /// Create a Transit key of `key_type` (e.g. "ecdsa-p256").
    pub async fn create_transit_key(&self, mount: &str, key: &str, key_type: &str) {
        self.request(
            reqwest::Method::POST,
            &format!("{mount}/keys/{key}"),
            Some(json!({ "type": key_type })),
        )
        .await;
    }

    /// The public key PEM of `version` of a Transit key, read directly from the server.
    pub async fn transit_public_key(&self, mount: &str, key: &str, version: u64) -> String {
        let json = self
            .request(reqwest::Method::GET, &format!("{mount}/keys/{key}"), None)
            .await;
        json.pointer(&format!("/data/keys/{version}/public_key"))
            .and_then(Value::as_str)
            .unwrap()
            .to_owned()
    }
}

/// `secrets` settings for a vault backend at `addr` with a literal token.
pub fn secrets_settings(addr: &str, token: &str) -> SecretsSettings {
    SecretsSettings {
        backend: SecretBackendKind::Vault,
        file_dir: "unused".into(),
        vault_addr: addr.to_owned(),
        vault_kv_mount: "secret".into(),
        vault_token: token.to_owned().into(),
        vault_approle_role_id: String::new().into(),
        vault_approle_secret_id: String::new().into(),
        vault_ca_file: String::new(),
        refresh_secs: 300,
    }
}

/// An address nothing listens on: a port the OS handed out and we closed again.
pub fn closed_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}
