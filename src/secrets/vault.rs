//! Vault/OpenBao over HTTP: the client (address, TLS trust, token or AppRole login) shared with
//! the Transit signer, and the KV v2 secret backend. Tokens and values never reach logs or errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::{SecretError, SecretSource};
use crate::config::{ConfigError, SecretsSettings};

/// Why a Vault request failed. Messages carry the status and Vault's own error text, never a token.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Connection refused, timeout, TLS failure, 5xx, or a permission/login problem that an
    /// operator can fix without restarting attestd: worth retrying.
    #[error("{0}")]
    Unavailable(String),
    /// 404: the path does not exist.
    #[error("not found")]
    NotFound,
    /// Vault answered, but with something attestd cannot use (4xx other than 401/403/404, bad JSON).
    #[error("{0}")]
    Invalid(String),
}

enum Auth {
    Token(SecretString),
    AppRole {
        role_id: SecretString,
        secret_id: SecretString,
    },
}

/// An authenticated HTTP client for one Vault/OpenBao server.
pub struct VaultClient {
    addr: String,
    http: reqwest::Client,
    auth: Auth,
    /// The AppRole login token, once obtained.
    login_token: Mutex<Option<SecretString>>,
}

impl std::fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match self.auth {
            Auth::Token(_) => "token",
            Auth::AppRole { .. } => "approle",
        };
        f.debug_struct("VaultClient")
            .field("addr", &self.addr)
            .field("auth", &auth)
            .finish_non_exhaustive()
    }
}

impl VaultClient {
    /// A client for `secrets.vault_addr`, authenticating with AppRole when both AppRole ids are
    /// set and with `secrets.vault_token` otherwise. Resolves those references now; does not
    /// contact the server.
    pub fn from_settings(s: &SecretsSettings) -> Result<Self, ConfigError> {
        if s.vault_addr.is_empty() {
            return Err(ConfigError::Invalid(
                "secrets.vault_addr".into(),
                "is required by the vault backend and transit keys".into(),
            ));
        }
        let auth = if !s.vault_approle_role_id.is_empty() || !s.vault_approle_secret_id.is_empty() {
            Auth::AppRole {
                role_id: s
                    .vault_approle_role_id
                    .resolve("secrets.vault_approle_role_id")?,
                secret_id: s
                    .vault_approle_secret_id
                    .resolve("secrets.vault_approle_secret_id")?,
            }
        } else {
            Auth::Token(s.vault_token.resolve("secrets.vault_token")?)
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("attestd/", env!("CARGO_PKG_VERSION")));
        if !s.vault_ca_file.is_empty() {
            let pem = std::fs::read(&s.vault_ca_file).map_err(|e| {
                ConfigError::Invalid(
                    "secrets.vault_ca_file".into(),
                    format!("cannot read {}: {e}", s.vault_ca_file),
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ConfigError::Invalid(
                    "secrets.vault_ca_file".into(),
                    format!("{} is not a PEM certificate bundle: {e}", s.vault_ca_file),
                )
            })?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().map_err(|e| {
            ConfigError::Invalid("secrets.vault_addr".into(), format!("HTTP client: {e}"))
        })?;
        Ok(Self {
            addr: s.vault_addr.trim_end_matches('/').to_owned(),
            http,
            auth,
            login_token: Mutex::new(None),
        })
    }

    /// The server address, for log fields.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `GET /v1/<path>`, returning the JSON body.
    pub async fn get(&self, path: &str) -> Result<Value, VaultError> {
        self.request(reqwest::Method::GET, path, None).await
    }

    /// `POST /v1/<path>` with a JSON body, returning the JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, VaultError> {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, VaultError> {
        let token = self.token().await?;
        match self.send(method.clone(), path, body, &token).await {
            // An AppRole token may have expired: log in again once.
            Err(SendError::Denied(_)) if matches!(self.auth, Auth::AppRole { .. }) => {
                self.forget_login();
                let token = self.token().await?;
                self.send(method, path, body, &token)
                    .await
                    .map_err(SendError::into_error)
            }
            other => other.map_err(SendError::into_error),
        }
    }

    async fn token(&self) -> Result<SecretString, VaultError> {
        let (role_id, secret_id) = match &self.auth {
            Auth::Token(token) => return Ok(token.clone()),
            Auth::AppRole { role_id, secret_id } => (role_id, secret_id),
        };
        if let Some(token) = self.cached_login() {
            return Ok(token);
        }
        let url = format!("{}/v1/auth/approle/login", self.addr);
        let body = serde_json::json!({
            "role_id": role_id.expose_secret(),
            "secret_id": secret_id.expose_secret(),
        });
        let response = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| VaultError::Unavailable(describe_transport(&e)))?;
        let status = response.status();
        let json = read_json(response).await?;
        if !status.is_success() {
            return Err(VaultError::Unavailable(format!(
                "AppRole login refused ({status}): {}",
                vault_errors(&json)
            )));
        }
        let token = json
            .pointer("/auth/client_token")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                VaultError::Invalid("AppRole login answer has no auth.client_token".into())
            })?;
        let token = SecretString::from(token.to_owned());
        if let Ok(mut slot) = self.login_token.lock() {
            *slot = Some(token.clone());
        }
        Ok(token)
    }

    fn cached_login(&self) -> Option<SecretString> {
        self.login_token.lock().ok().and_then(|t| t.clone())
    }

    fn forget_login(&self) {
        if let Ok(mut slot) = self.login_token.lock() {
            *slot = None;
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        token: &SecretString,
    ) -> Result<Value, SendError> {
        let url = format!("{}/v1/{}", self.addr, path.trim_start_matches('/'));
        let mut request = self
            .http
            .request(method, &url)
            .header("X-Vault-Token", token.expose_secret());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| SendError::Other(VaultError::Unavailable(describe_transport(&e))))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(SendError::Other(VaultError::NotFound));
        }
        let json = read_json(response).await.map_err(SendError::Other)?;
        if status.is_success() {
            return Ok(json);
        }
        let message = format!("{status}: {}", vault_errors(&json));
        if status == reqwest::StatusCode::FORBIDDEN || status == reqwest::StatusCode::UNAUTHORIZED {
            Err(SendError::Denied(format!("permission denied ({message})")))
        } else if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Err(SendError::Other(VaultError::Unavailable(message)))
        } else {
            Err(SendError::Other(VaultError::Invalid(message)))
        }
    }
}

/// A failed request, separating "permission denied" (which may call for a new login) from the rest.
enum SendError {
    Denied(String),
    Other(VaultError),
}

impl SendError {
    fn into_error(self) -> VaultError {
        match self {
            Self::Denied(reason) => VaultError::Unavailable(reason),
            Self::Other(e) => e,
        }
    }
}

async fn read_json(response: reqwest::Response) -> Result<Value, VaultError> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| VaultError::Unavailable(describe_transport(&e)))?;
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| VaultError::Invalid(format!("answer is not JSON: {e}")))
}

/// Vault's `{"errors": [...]}` as one line.
fn vault_errors(json: &Value) -> String {
    match json.get("errors").and_then(Value::as_array) {
        Some(errors) if !errors.is_empty() => errors
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("; "),
        _ => "no error message".into(),
    }
}

/// The transport error with its causes (reqwest's top-level message alone hides "connection
/// refused"). URLs carry no credentials here, so nothing secret is included.
fn describe_transport(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// KV v2 secrets: the reference `path#field` reads `.data.data.<field>` of
/// `GET /v1/<mount>/data/<path>`. Whole secrets are cached for `refresh`, so a key and its
/// password stored side by side cost one request.
pub struct VaultKvSource {
    client: Arc<VaultClient>,
    mount: String,
    refresh: Duration,
    cache: Mutex<HashMap<String, (Instant, Fields)>>,
}

/// The string fields of one KV secret.
type Fields = HashMap<String, SecretString>;

impl std::fmt::Debug for VaultKvSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultKvSource")
            .field("addr", &self.client.addr())
            .field("mount", &self.mount)
            .finish_non_exhaustive()
    }
}

impl VaultKvSource {
    pub fn new(client: Arc<VaultClient>, mount: &str, refresh: Duration) -> Self {
        Self {
            client,
            mount: mount.trim_matches('/').to_owned(),
            refresh,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, path: &str) -> Option<Fields> {
        let cache = self.cache.lock().ok()?;
        let (at, fields) = cache.get(path)?;
        (at.elapsed() < self.refresh).then(|| fields.clone())
    }

    async fn fetch(&self, path: &str, reference: &str) -> Result<Fields, SecretError> {
        let json = self
            .client
            .get(&format!("{}/data/{path}", self.mount))
            .await
            .map_err(|e| match e {
                VaultError::NotFound => SecretError::NotFound {
                    backend: "vault",
                    reference: reference.to_owned(),
                },
                VaultError::Unavailable(reason) => SecretError::Unavailable {
                    backend: "vault",
                    reference: reference.to_owned(),
                    reason,
                },
                VaultError::Invalid(reason) => SecretError::Invalid {
                    backend: "vault",
                    reference: reference.to_owned(),
                    reason,
                },
            })?;
        // A deleted (soft-deleted or destroyed) version answers 404 with `data.data: null`,
        // which the 404 branch above already covers; a null here means the same.
        let Some(data) = json.pointer("/data/data").and_then(Value::as_object) else {
            return Err(SecretError::NotFound {
                backend: "vault",
                reference: reference.to_owned(),
            });
        };
        let fields = data
            .iter()
            .filter_map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), SecretString::from(s.to_owned())))
            })
            .collect::<Fields>();
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(path.to_owned(), (Instant::now(), fields.clone()));
        }
        Ok(fields)
    }
}

#[async_trait::async_trait]
impl SecretSource for VaultKvSource {
    fn name(&self) -> &'static str {
        "vault"
    }

    async fn get(&self, reference: &str) -> Result<SecretString, SecretError> {
        let invalid = |reason: &str| SecretError::Invalid {
            backend: "vault",
            reference: reference.to_owned(),
            reason: reason.to_owned(),
        };
        let (path, field) = reference
            .split_once('#')
            .ok_or_else(|| invalid("must be `path#field`"))?;
        let path = path.trim_matches('/');
        if path.is_empty() || field.is_empty() {
            return Err(invalid("must be `path#field`"));
        }
        let odd_segment = path
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..");
        let odd_byte = path
            .bytes()
            .any(|b| !b.is_ascii_graphic() || matches!(b, b'?' | b'%' | b'\\'));
        if odd_segment || odd_byte {
            return Err(invalid(
                "the path must be printable ASCII without '?', '%' or '\\', and have no empty, \
                 '.' or '..' segments",
            ));
        }
        let fields = match self.cached(path) {
            Some(fields) => fields,
            None => self.fetch(path, reference).await?,
        };
        fields.get(field).cloned().ok_or(SecretError::NotFound {
            backend: "vault",
            reference: reference.to_owned(),
        })
    }

    fn invalidate(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretBackendKind;

    fn settings(token: &str) -> SecretsSettings {
        SecretsSettings {
            backend: SecretBackendKind::Vault,
            file_dir: "unused".into(),
            // Never contacted: every reference below is refused before any request.
            vault_addr: "http://127.0.0.1:9".into(),
            vault_kv_mount: "secret".into(),
            vault_token: token.to_owned().into(),
            vault_approle_role_id: String::new().into(),
            vault_approle_secret_id: String::new().into(),
            vault_ca_file: String::new(),
            refresh_secs: 300,
        }
    }

    #[tokio::test]
    async fn malformed_references_are_refused_before_any_request() {
        let client = Arc::new(VaultClient::from_settings(&settings("t0ken-value")).unwrap());
        let source = VaultKvSource::new(client, "secret", Duration::from_secs(300));
        for bad in [
            "no-field", "path#", "#field", "a/../b#f", "a//b#f", "a?x=1#f", "a b#f",
        ] {
            let err = source.get(bad).await.unwrap_err();
            assert!(matches!(err, SecretError::Invalid { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let client = VaultClient::from_settings(&settings("t0ken-value")).unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("t0ken-value"), "{shown}");
        assert!(shown.contains("token"), "{shown}");
    }

    #[test]
    fn unresolvable_token_reference_fails_naming_the_key() {
        let err = VaultClient::from_settings(&settings("env:ATTESTD_TEST_SURELY_UNSET_TOKEN"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("secrets.vault_token"), "{err}");
    }
}
