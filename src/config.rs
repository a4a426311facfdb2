//! Typed settings: the embedded `config/default.toml`, then an optional file, then `ATTESTD_*`
//! environment variables. Invalid combinations fail here, at start-up, naming the key.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::domain::AccountId;
use crate::domain::scope::{RepositoryPattern, RepositoryScope};
use crate::domain::template::ImageTemplate;

/// The embedded defaults; also the reference documentation of every key.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub auth: AuthSettings,
    pub webhook: WebhookSettings,
    pub worker: WorkerSettings,
    pub secrets: SecretsSettings,
    pub signing: SigningSettings,
    pub verify: VerifySettings,
    pub metrics: MetricsSettings,
    pub ingest: IngestSettings,
    #[serde(default)]
    pub registries: Vec<RegistrySettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// What this process does; `attestd serve --role` overrides it.
    pub role: Role,
    pub listen: SocketAddr,
    pub public_url: String,
    pub body_limit_bytes: usize,
    pub request_timeout_secs: u64,
    pub shutdown_grace_secs: u64,
    pub header_read_timeout_secs: u64,
    pub body_read_timeout_secs: u64,
    pub max_connections: usize,
    pub max_in_flight_webhooks: usize,
    pub max_in_flight_reads: usize,
    pub max_in_flight_verify: usize,
    /// MiB of responses of settled executions kept in memory (`0`: none).
    pub read_cache_mib: u64,
}

/// What one attestd process runs (`server.role`). API and worker processes coordinate only
/// through the database, so on PostgreSQL any number of each may run side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The API and the web view, and the worker unless `worker.enabled = false`.
    #[default]
    All,
    /// The API and the web view only: it never claims a job.
    Api,
    /// The worker only; its listener answers `/healthz`, `/readyz` and `/metrics`, nothing else.
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Api => "api",
            Self::Worker => "worker",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Self::All),
            "api" => Ok(Self::Api),
            "worker" => Ok(Self::Worker),
            other => Err(format!("'{other}' is not a role: all, api or worker")),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub max_connections: u32,
    pub migrate_on_start: bool,
    pub acquire_timeout_ms: u64,
}

impl DatabaseSettings {
    /// How long a request waits for a database connection before it is answered `503`.
    pub fn acquire_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.acquire_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub anonymous_reads_on_loopback: bool,
    pub tokens: Vec<TokenSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    pub name: String,
    #[serde(default)]
    pub account: Option<AccountId>,
    pub sha256: String,
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    pub standard_webhooks_tolerance_secs: u64,
    pub dev_secret_file: PathBuf,
    pub dev_account: AccountId,
    pub dev_builder_ids: Vec<String>,
    pub sources: Vec<WebhookSourceSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSourceSettings {
    pub name: String,
    /// The webhook dialect: attestd's schema, or a CI's own events.
    #[serde(default)]
    pub kind: crate::ingest::adapters::SourceKind,
    pub account: AccountId,
    pub secrets: Vec<SecretRef>,
    /// `host[:port]/repository` patterns this source may attest (see `domain::scope`); none
    /// means it may attest nothing.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// The builder identities this source may claim; the first is used when a webhook names none.
    #[serde(default)]
    pub builder_ids: Vec<String>,
    /// Image templates (`registry.example.com/{repository}:{sha}`, see `domain::template`) for
    /// successful builds whose webhook names no image; their digests are resolved by the worker.
    #[serde(default)]
    pub images: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    pub enabled: bool,
    /// Whether `enabled` was given by a file or the environment rather than the defaults.
    #[serde(skip)]
    pub enabled_explicitly: bool,
    /// This worker's name in job records and logs; empty: the host name.
    pub name: String,
    pub concurrency: usize,
    pub lease_secs: u64,
    pub poll_interval_ms: u64,
    pub max_attempts: u32,
    pub missing_image_retries: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_secs: u64,
    pub max_reclaims: u32,
    pub lock_ttl_secs: u64,
    pub push_deadline_secs: u64,
    pub retain_done_hours: u64,
    pub prune_interval_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretBackendKind {
    Env,
    File,
    Vault,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsSettings {
    pub backend: SecretBackendKind,
    pub file_dir: PathBuf,
    pub vault_addr: String,
    pub vault_kv_mount: String,
    pub vault_token: SecretRef,
    pub vault_approle_role_id: SecretRef,
    pub vault_approle_secret_id: SecretRef,
    pub vault_ca_file: String,
    pub refresh_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSettings {
    pub default_key: String,
    /// With several accounts, let those without a `signing.accounts` entry share `default_key`.
    pub shared_default_key: bool,
    pub dev_key_prefix: PathBuf,
    #[serde(default)]
    pub accounts: BTreeMap<AccountId, String>,
    #[serde(default)]
    pub keys: BTreeMap<String, KeySettings>,
}

/// One configured signing key.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum KeySettings {
    /// A cosign key pair read from the secret backend and decrypted once.
    Cosign {
        private_key: String,
        #[serde(default)]
        password: Option<String>,
    },
    /// A Vault/OpenBao Transit key; signing happens on the server.
    Transit {
        #[serde(default = "default_transit_mount")]
        mount: String,
        key: String,
    },
}

fn default_transit_mount() -> String {
    "transit".to_owned()
}

/// How attestations are laid out in a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PushFormat {
    /// cosign's `sha256-<hex>.att` tag.
    #[default]
    Att,
    /// An OCI 1.1 referrer carrying a Sigstore bundle.
    Referrers,
    /// Both of the above.
    Both,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    pub host: String,
    #[serde(default)]
    pub format: PushFormat,
    #[serde(default)]
    pub insecure_http: bool,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub username: Option<String>,
    /// Reference in the secret backend.
    #[serde(default)]
    pub password: Option<String>,
}

/// Caps on what one verification may ask of attestd, and how policies are evaluated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySettings {
    pub max_policies: usize,
    pub max_policy_bytes: usize,
    pub max_attestation_layers: usize,
    pub max_layer_bytes: u64,
    pub max_deny_messages: usize,
    pub max_deny_message_bytes: usize,
    pub policy_timeout_ms: u64,
    pub evaluator_deadline_ms: u64,
    pub evaluator_memory_bytes: u64,
    pub evaluator_concurrency: usize,
    /// Empty: this attestd binary.
    pub evaluator_program: PathBuf,
}

impl VerifySettings {
    /// What one policy evaluation may use and return.
    pub fn eval_limits(&self) -> crate::policy::EvalLimits {
        crate::policy::EvalLimits {
            timeout_ms: self.policy_timeout_ms,
            max_messages: self.max_deny_messages,
            max_message_bytes: self.max_deny_message_bytes,
        }
    }

    /// What reading one image's attestations may fetch.
    pub fn fetch_limits(&self) -> crate::registry::FetchLimits {
        crate::registry::FetchLimits {
            max_attestations: self.max_attestation_layers,
            max_blob_bytes: self.max_layer_bytes,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("verify.max_policies", self.max_policies as u64),
            ("verify.max_policy_bytes", self.max_policy_bytes as u64),
            (
                "verify.max_attestation_layers",
                self.max_attestation_layers as u64,
            ),
            ("verify.max_layer_bytes", self.max_layer_bytes),
            ("verify.max_deny_messages", self.max_deny_messages as u64),
            (
                "verify.max_deny_message_bytes",
                self.max_deny_message_bytes as u64,
            ),
            ("verify.policy_timeout_ms", self.policy_timeout_ms),
            ("verify.evaluator_deadline_ms", self.evaluator_deadline_ms),
            (
                "verify.evaluator_concurrency",
                self.evaluator_concurrency as u64,
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(
                (*key).to_owned(),
                "must be at least 1".into(),
            ));
        }
        if self.max_deny_message_bytes < 64 {
            return Err(ConfigError::Invalid(
                "verify.max_deny_message_bytes".into(),
                "must be at least 64".into(),
            ));
        }
        if self.policy_timeout_ms > self.evaluator_deadline_ms {
            return Err(ConfigError::Invalid(
                "verify.policy_timeout_ms".into(),
                "must not exceed verify.evaluator_deadline_ms".into(),
            ));
        }
        if self.evaluator_memory_bytes < 64 * 1024 * 1024 {
            return Err(ConfigError::Invalid(
                "verify.evaluator_memory_bytes".into(),
                "must be at least 67108864 (64 MiB): the evaluator is the attestd binary".into(),
            ));
        }
        Ok(())
    }
}

/// Where `GET /metrics` is served, and how often the gauges read from the database are refreshed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Serve `/metrics` on `server.listen` too (open on loopback, admin token elsewhere).
    pub on_server_listen: bool,
    /// A separate listener serving only `/metrics`, without a token; `None` when empty.
    #[serde(deserialize_with = "empty_as_none")]
    pub listen: Option<SocketAddr>,
    pub refresh_secs: u64,
}

/// Group commit at ingest: concurrent webhooks are recorded in small batches, one commit each.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    /// Most webhooks recorded by one commit.
    pub batch_max_rows: usize,
    /// Microseconds a batch may wait for more webhooks while another batch is committing.
    pub batch_max_wait_us: u64,
    /// Batches committing at once (at least 1).
    pub batch_concurrency: usize,
    /// Webhooks waiting for a batch at most; beyond it `503 overloaded`.
    pub queue_rows: usize,
}

impl IngestSettings {
    /// The wait for more webhooks while another batch commits.
    pub fn batch_max_wait(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.batch_max_wait_us)
    }
}

/// `""` as `None`, anything else parsed.
fn empty_as_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let raw = String::deserialize(deserializer)?;
    if raw.trim().is_empty() {
        return Ok(None);
    }
    raw.trim()
        .parse()
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A service-level secret given in configuration: `env:NAME`, `file:/path`, or the literal value.
/// Resolved once at start-up; `Debug` never shows a literal.
#[derive(Clone, Deserialize)]
#[serde(from = "String")]
pub struct SecretRef(String);

impl From<String> for SecretRef {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl std::fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl SecretRef {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The reference with any literal value hidden.
    pub fn redacted(&self) -> String {
        if self.0.starts_with("env:") || self.0.starts_with("file:") {
            self.0.clone()
        } else if self.0.is_empty() {
            String::new()
        } else {
            "[redacted]".to_owned()
        }
    }

    /// Read the secret. `key` names the config key in errors.
    pub fn resolve(&self, key: &str) -> Result<SecretString, ConfigError> {
        let value = if let Some(var) = self.0.strip_prefix("env:") {
            std::env::var(var).map_err(|_| {
                ConfigError::Invalid(
                    key.to_owned(),
                    format!("environment variable {var} is not set"),
                )
            })?
        } else if let Some(path) = self.0.strip_prefix("file:") {
            std::fs::read_to_string(path)
                .map_err(|e| {
                    ConfigError::Invalid(key.to_owned(), format!("cannot read {path}: {e}"))
                })?
                .trim_end_matches(['\n', '\r'])
                .to_owned()
        } else {
            self.0.clone()
        };
        if value.is_empty() {
            return Err(ConfigError::Invalid(
                key.to_owned(),
                "the secret is empty".into(),
            ));
        }
        Ok(SecretString::from(value))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration key `{0}`: {1}")]
    Invalid(String, String),
}

impl Settings {
    /// Defaults, then `file` (if given), then `ATTESTD_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_as(file, None)
    }

    /// [`load`](Self::load), with `role` (`attestd serve --role`) over every other source.
    pub fn load_as(file: Option<&Path>, role: Option<Role>) -> Result<Self, ConfigError> {
        let mut given = Figment::new();
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid(
                    "--config".into(),
                    format!("{} does not exist", file.display()),
                ));
            }
            given = given.merge(Toml::file(file));
        }
        // Only ATTESTD_<SECTION>__<KEY> configures; ATTESTD_LOG, ATTESTD_CONFIG and test
        // variables share the prefix but are not settings.
        given = given.merge(
            Env::prefixed("ATTESTD_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        );
        if let Some(role) = role {
            given = given.merge(Serialized::default("server.role", role));
        }
        let mut settings: Settings = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(given.clone())
            .extract()
            .map_err(Box::new)?;
        settings.worker.enabled_explicitly = given.contains("worker.enabled");
        settings.validate()?;
        Ok(settings)
    }

    /// Whether this process serves the API and the web view.
    pub fn runs_api(&self) -> bool {
        self.server.role != Role::Worker
    }

    /// Whether this process runs the worker: `server.role` decides, and `worker.enabled = false`
    /// turns the worker of an `all` process off.
    pub fn runs_worker(&self) -> bool {
        match self.server.role {
            Role::All => self.worker.enabled,
            Role::Api => false,
            Role::Worker => true,
        }
    }

    /// Refuse combinations that cannot work, naming the key. `load` calls it; so does
    /// `App::build`, for settings assembled in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |k: &str, m: String| Err(ConfigError::Invalid(k.to_owned(), m));
        let db = self.database.url.expose_secret();
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            return invalid(
                "database.url",
                "must start with sqlite:, postgres:// or postgresql://".into(),
            );
        }
        if self.database.acquire_timeout_ms == 0 {
            return invalid("database.acquire_timeout_ms", "must be at least 1".into());
        }
        if self.ingest.batch_concurrency == 0 {
            return invalid("ingest.batch_concurrency", "must be at least 1".into());
        }
        if self.ingest.batch_max_rows == 0 {
            return invalid("ingest.batch_max_rows", "must be at least 1".into());
        }
        if self.ingest.queue_rows < self.ingest.batch_max_rows {
            return invalid(
                "ingest.queue_rows",
                format!(
                    "must be at least ingest.batch_max_rows ({})",
                    self.ingest.batch_max_rows
                ),
            );
        }
        if self.ingest.batch_max_wait_us > 1_000_000 {
            return invalid(
                "ingest.batch_max_wait_us",
                "must be at most 1000000 (one second); a few hundred microseconds is plenty".into(),
            );
        }
        if self.server.header_read_timeout_secs == 0 || self.server.body_read_timeout_secs == 0 {
            return invalid(
                "server.header_read_timeout_secs",
                "header and body read timeouts must be at least 1 second".into(),
            );
        }
        match self.server.role {
            Role::Worker if !self.worker.enabled => {
                return invalid(
                    "server.role",
                    "is \"worker\", which runs only the worker, but worker.enabled = false turns \
                     the worker off: remove worker.enabled = false, or choose role \"api\""
                        .into(),
                );
            }
            Role::Api if self.worker.enabled && self.worker.enabled_explicitly => {
                return invalid(
                    "worker.enabled",
                    "is true, but server.role = \"api\" never runs the worker: remove \
                     worker.enabled, or choose role \"all\""
                        .into(),
                );
            }
            _ => {}
        }
        if db.starts_with("sqlite:") && self.server.role != Role::All {
            return invalid(
                "server.role",
                format!(
                    "is \"{}\", but SQLite serves a single attestd process, which must run both \
                     the API and the worker (role \"all\"); separate API and worker processes \
                     need PostgreSQL",
                    self.server.role.as_str()
                ),
            );
        }
        if self.worker.name.len() > 64
            || !self
                .worker
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return invalid(
                "worker.name",
                "at most 64 letters, digits, '-', '_' and '.'".into(),
            );
        }
        if self.worker.concurrency == 0 {
            return invalid("worker.concurrency", "must be at least 1".into());
        }
        if self.worker.max_attempts == 0 {
            return invalid("worker.max_attempts", "must be at least 1".into());
        }
        if self.worker.lease_secs == 0 {
            return invalid("worker.lease_secs", "must be at least 1".into());
        }
        if self.worker.lock_ttl_secs < 2 {
            return invalid("worker.lock_ttl_secs", "must be at least 2".into());
        }
        if self.worker.push_deadline_secs == 0
            || self.worker.push_deadline_secs >= self.worker.lock_ttl_secs
        {
            return invalid(
                "worker.push_deadline_secs",
                format!(
                    "must be at least 1 and shorter than worker.lock_ttl_secs ({}), so a push \
                     ends before its tag lock can expire",
                    self.worker.lock_ttl_secs
                ),
            );
        }
        if self.metrics.refresh_secs == 0 {
            return invalid("metrics.refresh_secs", "must be at least 1".into());
        }
        if self.metrics.listen == Some(self.server.listen) && self.server.listen.port() != 0 {
            return invalid(
                "metrics.listen",
                "must differ from server.listen (leave it empty to serve /metrics there only)"
                    .into(),
            );
        }
        if self.worker.prune_interval_secs == 0 {
            return invalid("worker.prune_interval_secs", "must be at least 1".into());
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.webhook.sources.iter().enumerate() {
            let name_ok = !s.name.is_empty()
                && s.name != "build"
                && s.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !name_ok || !names.insert(s.name.as_str()) {
                return invalid(
                    &format!("webhook.sources[{i}].name"),
                    format!(
                        "'{}' must be unique, made of letters, digits, '-', '_' and '.', and not \
                         'build' (it names the route /v1/webhooks/<name>)",
                        s.name
                    ),
                );
            }
            if s.secrets.is_empty() || s.secrets.len() > 2 {
                return invalid(
                    &format!("webhook.sources[{i}].secrets"),
                    "give one secret, or two while rotating".into(),
                );
            }
            if s.builder_ids.is_empty() {
                return invalid(
                    &format!("webhook.sources[{i}].builder_ids"),
                    "list the builder identities this source may claim, e.g. \
                     [\"https://ci.example.com/runners/linux\"]; the signed provenance's \
                     runDetails.builder.id is taken from here"
                        .into(),
                );
            }
            for (j, id) in s.builder_ids.iter().enumerate() {
                check_builder_id(id).map_err(|m| {
                    ConfigError::Invalid(format!("webhook.sources[{i}].builder_ids[{j}]"), m)
                })?;
            }
            let mut patterns = Vec::new();
            for (j, pattern) in s.repositories.iter().enumerate() {
                let key = format!("webhook.sources[{i}].repositories[{j}]");
                let pattern: RepositoryPattern = pattern
                    .parse()
                    .map_err(|m| ConfigError::Invalid(key.clone(), m))?;
                if !self
                    .registries
                    .iter()
                    .any(|r| r.host.eq_ignore_ascii_case(pattern.host()))
                {
                    return invalid(
                        &key,
                        format!(
                            "registry '{}' is not listed under [[registries]]",
                            pattern.host()
                        ),
                    );
                }
                patterns.push(pattern);
            }
            self.validate_images(i, s, &RepositoryScope::new(patterns))?;
        }
        for (j, id) in self.webhook.dev_builder_ids.iter().enumerate() {
            check_builder_id(id)
                .map_err(|m| ConfigError::Invalid(format!("webhook.dev_builder_ids[{j}]"), m))?;
        }
        if self.webhook.sources.is_empty() && self.webhook.dev_builder_ids.is_empty() {
            return invalid(
                "webhook.dev_builder_ids",
                "the development source needs at least one builder id".into(),
            );
        }
        for (i, t) in self.auth.tokens.iter().enumerate() {
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return invalid(
                    &format!("auth.tokens[{i}].sha256"),
                    "must be 64 hex characters".into(),
                );
            }
            if t.account.is_none() && !t.admin {
                return invalid(
                    &format!("auth.tokens[{i}]"),
                    "needs an account, or admin = true".into(),
                );
            }
        }
        if !self.signing.default_key.is_empty()
            && !self.signing.keys.contains_key(&self.signing.default_key)
        {
            return invalid(
                "signing.default_key",
                format!(
                    "'{}' is not defined under [signing.keys]",
                    self.signing.default_key
                ),
            );
        }
        for (account, key) in &self.signing.accounts {
            if !self.signing.keys.contains_key(key) {
                return invalid(
                    &format!("signing.accounts.{account}"),
                    format!("'{key}' is not defined under [signing.keys]"),
                );
            }
        }
        let keyless = self.accounts_on_default_key();
        if self.accounts().len() > 1 && !keyless.is_empty() && !self.signing.shared_default_key {
            return invalid(
                "signing.accounts",
                format!(
                    "accounts without a key of their own: {}. Several accounts are configured, so \
                     sharing the default key must be explicit: name a key for each account under \
                     [signing.accounts], or set signing.shared_default_key = true",
                    list(&keyless)
                ),
            );
        }
        if !self.signing.keys.is_empty()
            && self.signing.default_key.is_empty()
            && !keyless.is_empty()
        {
            return invalid(
                "signing.default_key",
                format!(
                    "must name one of [signing.keys]; accounts without a key of their own in \
                     [signing.accounts]: {}",
                    list(&keyless)
                ),
            );
        }
        let uses_vault = self.secrets.backend == SecretBackendKind::Vault
            || self
                .signing
                .keys
                .values()
                .any(|k| matches!(k, KeySettings::Transit { .. }));
        if uses_vault && self.secrets.vault_addr.is_empty() {
            return invalid(
                "secrets.vault_addr",
                "is required by the vault backend and transit keys".into(),
            );
        }
        let mut hosts = std::collections::HashSet::new();
        for (i, r) in self.registries.iter().enumerate() {
            if r.host.is_empty() || r.host.contains('/') {
                return invalid(
                    &format!("registries[{i}].host"),
                    "must be a host[:port]".into(),
                );
            }
            if !hosts.insert(r.host.as_str()) {
                return invalid(
                    &format!("registries[{i}].host"),
                    format!("{} is listed twice", r.host),
                );
            }
            if r.insecure_http && !is_loopback_host(&r.host) {
                return invalid(
                    &format!("registries[{i}].insecure_http"),
                    "plain http is only allowed for loopback registries".into(),
                );
            }
            if r.username.is_some() != r.password.is_some() {
                return invalid(
                    &format!("registries[{i}]"),
                    "username and password go together".into(),
                );
            }
        }
        self.verify.validate()
    }

    /// A source's image templates: known variables, a literal registry host that is configured,
    /// an image reference when rendered with typical values, and — when the repository is written
    /// out — one of the source's `repositories`. Only kinds whose webhooks may name no image.
    fn validate_images(
        &self,
        i: usize,
        s: &WebhookSourceSettings,
        grants: &RepositoryScope,
    ) -> Result<(), ConfigError> {
        if !s.images.is_empty() && s.kind == crate::ingest::adapters::SourceKind::Attestd {
            return Err(ConfigError::Invalid(
                format!("webhook.sources[{i}].images"),
                "sources of kind attestd name their images (with digests) in the webhook; \
                 images templates are for the CI kinds"
                    .into(),
            ));
        }
        for (j, text) in s.images.iter().enumerate() {
            let key = format!("webhook.sources[{i}].images[{j}]");
            let invalid = |m: String| Err(ConfigError::Invalid(key.clone(), m));
            let template: ImageTemplate = match text.parse() {
                Ok(t) => t,
                Err(m) => return invalid(m),
            };
            if !self.registries.iter().any(|r| r.host == template.host()) {
                return invalid(format!(
                    "registry '{}' is not listed under [[registries]]",
                    template.host()
                ));
            }
            if template.has_literal_repository()
                && let Ok(image) = template.sample()
                && !grants.allows(&image)
            {
                return invalid(format!(
                    "repository '{}' is not one of this source's repositories",
                    image.name()
                ));
            }
        }
        Ok(())
    }

    /// Every account this configuration serves: those of the webhook sources (the development
    /// source's when none is configured), of the read tokens, and of `signing.accounts`.
    pub fn accounts(&self) -> BTreeSet<AccountId> {
        let mut accounts: BTreeSet<AccountId> = self
            .webhook
            .sources
            .iter()
            .map(|s| s.account.clone())
            .collect();
        if self.webhook.sources.is_empty() {
            accounts.insert(self.webhook.dev_account.clone());
        }
        accounts.extend(self.auth.tokens.iter().filter_map(|t| t.account.clone()));
        accounts.extend(self.signing.accounts.keys().cloned());
        accounts
    }

    /// The accounts without an entry in `signing.accounts`: they sign with the default key.
    pub fn accounts_on_default_key(&self) -> Vec<AccountId> {
        self.accounts()
            .into_iter()
            .filter(|a| !self.signing.accounts.contains_key(a))
            .collect()
    }

    /// The effective configuration as TOML-ish JSON with secrets redacted.
    pub fn redacted(&self) -> serde_json::Value {
        let db = redact_database_url(self.database.url.expose_secret());
        serde_json::json!({
            "server": {
                "role": self.server.role,
                "listen": self.server.listen.to_string(),
                "public_url": self.server.public_url,
                "body_limit_bytes": self.server.body_limit_bytes,
                "request_timeout_secs": self.server.request_timeout_secs,
                "shutdown_grace_secs": self.server.shutdown_grace_secs,
                "header_read_timeout_secs": self.server.header_read_timeout_secs,
                "body_read_timeout_secs": self.server.body_read_timeout_secs,
                "max_connections": self.server.max_connections,
                "max_in_flight_webhooks": self.server.max_in_flight_webhooks,
                "max_in_flight_reads": self.server.max_in_flight_reads,
                "max_in_flight_verify": self.server.max_in_flight_verify,
                "read_cache_mib": self.server.read_cache_mib,
            },
            "database": {
                "url": db,
                "max_connections": self.database.max_connections,
                "migrate_on_start": self.database.migrate_on_start,
                "acquire_timeout_ms": self.database.acquire_timeout_ms,
            },
            "ingest": {
                "batch_max_rows": self.ingest.batch_max_rows,
                "batch_max_wait_us": self.ingest.batch_max_wait_us,
                "batch_concurrency": self.ingest.batch_concurrency,
                "queue_rows": self.ingest.queue_rows,
            },
            "auth": {
                "anonymous_reads_on_loopback": self.auth.anonymous_reads_on_loopback,
                "tokens": self.auth.tokens.iter().map(|t| serde_json::json!({
                    "name": t.name, "account": t.account, "admin": t.admin, "sha256": "[redacted]",
                })).collect::<Vec<_>>(),
            },
            "webhook": {
                "dev_secret_file": self.webhook.dev_secret_file,
                "dev_account": self.webhook.dev_account,
                "standard_webhooks_tolerance_secs": self.webhook.standard_webhooks_tolerance_secs,
                "dev_builder_ids": self.webhook.dev_builder_ids,
                "sources": self.webhook.sources.iter().map(|s| serde_json::json!({
                    "name": s.name, "kind": s.kind, "account": s.account,
                    "repositories": s.repositories, "builder_ids": s.builder_ids,
                    "images": s.images,
                    "secrets": s.secrets.iter().map(SecretRef::redacted).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            },
            "worker": {
                "enabled": self.worker.enabled,
                "name": self.worker.name,
                "concurrency": self.worker.concurrency,
                "lease_secs": self.worker.lease_secs,
                "poll_interval_ms": self.worker.poll_interval_ms,
                "max_attempts": self.worker.max_attempts,
                "missing_image_retries": self.worker.missing_image_retries,
                "backoff_base_ms": self.worker.backoff_base_ms,
                "backoff_max_secs": self.worker.backoff_max_secs,
                "max_reclaims": self.worker.max_reclaims,
                "lock_ttl_secs": self.worker.lock_ttl_secs,
                "push_deadline_secs": self.worker.push_deadline_secs,
                "retain_done_hours": self.worker.retain_done_hours,
                "prune_interval_secs": self.worker.prune_interval_secs,
            },
            "secrets": {
                "backend": self.secrets.backend,
                "file_dir": self.secrets.file_dir,
                "vault_addr": self.secrets.vault_addr,
                "vault_kv_mount": self.secrets.vault_kv_mount,
                "vault_token": self.secrets.vault_token.redacted(),
                "vault_approle_role_id": self.secrets.vault_approle_role_id.redacted(),
                "vault_approle_secret_id": self.secrets.vault_approle_secret_id.redacted(),
                "vault_ca_file": self.secrets.vault_ca_file,
                "refresh_secs": self.secrets.refresh_secs,
            },
            "signing": {
                "default_key": self.signing.default_key,
                "shared_default_key": self.signing.shared_default_key,
                "dev_key_prefix": self.signing.dev_key_prefix,
                "accounts": self.signing.accounts,
                "keys": self.signing.keys.iter().map(|(name, k)| (name.clone(), match k {
                    KeySettings::Cosign { private_key, password } => serde_json::json!({
                        "type": "cosign", "private_key": private_key, "password": password,
                    }),
                    KeySettings::Transit { mount, key } => serde_json::json!({
                        "type": "transit", "mount": mount, "key": key,
                    }),
                })).collect::<serde_json::Map<_, _>>(),
            },
            "verify": {
                "max_policies": self.verify.max_policies,
                "max_policy_bytes": self.verify.max_policy_bytes,
                "max_attestation_layers": self.verify.max_attestation_layers,
                "max_layer_bytes": self.verify.max_layer_bytes,
                "max_deny_messages": self.verify.max_deny_messages,
                "max_deny_message_bytes": self.verify.max_deny_message_bytes,
                "policy_timeout_ms": self.verify.policy_timeout_ms,
                "evaluator_deadline_ms": self.verify.evaluator_deadline_ms,
                "evaluator_memory_bytes": self.verify.evaluator_memory_bytes,
                "evaluator_concurrency": self.verify.evaluator_concurrency,
                "evaluator_program": self.verify.evaluator_program,
            },
            "metrics": {
                "on_server_listen": self.metrics.on_server_listen,
                "listen": self.metrics.listen.map(|a| a.to_string()).unwrap_or_default(),
                "refresh_secs": self.metrics.refresh_secs,
            },
            "registries": self.registries.iter().map(|r| serde_json::json!({
                "host": r.host, "format": r.format, "insecure_http": r.insecure_http,
                "ca_file": r.ca_file, "username": r.username, "password": r.password,
            })).collect::<Vec<_>>(),
        })
    }
}

/// A database URL with its password hidden, wherever it is: in the userinfo (however many `@`
/// or `:` it contains) or in a `password`/`sslpassword` query parameter. A URL that does not
/// parse is hidden whole.
pub fn redact_database_url(raw: &str) -> String {
    const HIDDEN: &str = "[redacted]";
    if raw.starts_with("sqlite:") && !raw.contains('@') && !raw.contains("password") {
        return raw.to_owned();
    }
    let Ok(mut url) = url::Url::parse(raw) else {
        return HIDDEN.to_owned();
    };
    if url.password().is_some() && url.set_password(Some("REDACTED")).is_err() {
        return HIDDEN.to_owned();
    }
    if url
        .query_pairs()
        .any(|(k, _)| k.to_ascii_lowercase().contains("password"))
    {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let hide = k.to_ascii_lowercase().contains("password");
                (
                    k.into_owned(),
                    if hide {
                        "REDACTED".into()
                    } else {
                        v.into_owned()
                    },
                )
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string().replace("REDACTED", HIDDEN)
}

/// A builder id is a URI (SLSA `TypeURI`): a scheme, no whitespace, at most 2048 bytes.
fn check_builder_id(id: &str) -> Result<(), String> {
    let scheme_ok = id.split_once(':').is_some_and(|(scheme, rest)| {
        !rest.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    if !scheme_ok || id.len() > 2048 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "'{id}' must be a URI without whitespace, e.g. https://ci.example.com/runners/linux"
        ));
    }
    Ok(())
}

fn list(accounts: &[AccountId]) -> String {
    accounts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `localhost`, `127.x.x.x` or `[::1]`, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_parse_and_validate() {
        let s: Settings = Figment::from(Toml::string(DEFAULT_TOML)).extract().unwrap();
        s.validate().unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
        assert!(s.database.url.expose_secret().starts_with("sqlite:"));
    }

    #[test]
    fn ingest_batches_default_to_one_in_flight_and_are_validated() {
        let with = |extra: &str| -> Settings {
            Figment::from(Toml::string(DEFAULT_TOML))
                .merge(Toml::string(extra))
                .extract()
                .unwrap()
        };
        let s = with("");
        assert_eq!(s.ingest.batch_concurrency, 1);
        let err = with("[ingest]\nbatch_concurrency = 0")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("ingest.batch_concurrency"), "{err}");
        let s = with("[ingest]\nbatch_max_rows = 64\nqueue_rows = 10");
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("ingest.queue_rows"), "{err}");
        let s = with("[ingest]\nbatch_max_rows = 0");
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("ingest.batch_max_rows"), "{err}");
    }

    #[test]
    fn unknown_and_inconsistent_keys_are_named_in_the_error() {
        let err = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Toml::string("[server]\nlisten_addr = \"x\""))
            .extract::<Settings>()
            .unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");

        let s: Settings = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Toml::string("[signing]\ndefault_key = \"nope\""))
            .extract()
            .unwrap();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("signing.default_key"), "{err}");
    }

    #[test]
    fn a_push_deadline_not_shorter_than_the_lock_ttl_is_refused() {
        let with = |worker: &str| {
            Figment::from(Toml::string(DEFAULT_TOML))
                .merge(Toml::string(&format!("[worker]\n{worker}")))
                .extract::<Settings>()
                .unwrap()
                .validate()
        };
        with("lock_ttl_secs = 15\npush_deadline_secs = 14").unwrap();
        let err = with("lock_ttl_secs = 15\npush_deadline_secs = 15")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("worker.push_deadline_secs") && err.contains("lock_ttl_secs (15)"),
            "{err}"
        );
        let err = with("lease_secs = 0").unwrap_err().to_string();
        assert!(err.contains("worker.lease_secs"), "{err}");
    }

    #[test]
    fn redacted_config_hides_literal_secrets_and_database_passwords() {
        let s: Settings = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Toml::string(
                "[database]\nurl = \"postgres://app:hunter2@db/attestd\"\n\
                 [[webhook.sources]]\nname = \"ci\"\naccount = \"acme\"\nsecrets = [\"s3cr3t-literal\", \"env:NEXT\"]",
            ))
            .extract()
            .unwrap();
        let shown = s.redacted().to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cr3t-literal"), "{shown}");
        assert!(shown.contains("env:NEXT"));
        assert!(shown.contains("postgres://app:[redacted]@db/attestd"));
    }

    #[test]
    fn an_empty_metrics_listen_is_none_and_a_bad_one_names_the_key() {
        assert_eq!(with("").metrics.listen, None);
        let s = with("[metrics]\nlisten = \"0.0.0.0:9464\"");
        assert_eq!(s.metrics.listen, Some("0.0.0.0:9464".parse().unwrap()));
        s.validate().unwrap();
        let err = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Toml::string("[metrics]\nlisten = \"9464\""))
            .extract::<Settings>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("metrics.listen") || err.contains("listen"),
            "{err}"
        );
        let err =
            with("[server]\nlisten = \"127.0.0.1:8080\"\n[metrics]\nlisten = \"127.0.0.1:8080\"")
                .validate()
                .unwrap_err()
                .to_string();
        assert!(err.contains("metrics.listen"), "{err}");
    }

    fn with(toml: &str) -> Settings {
        Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Toml::string(toml))
            .extract()
            .unwrap()
    }

    const TWO_SOURCES: &str = "[[webhook.sources]]\nname = \"a\"\naccount = \"acme\"\nsecrets = [\"s1\"]\nbuilder_ids = [\"https://ci.example.com/a\"]\n\
         [[webhook.sources]]\nname = \"g\"\naccount = \"globex\"\nsecrets = [\"s2\"]\nbuilder_ids = [\"https://ci.example.com/g\"]\n";
    const TWO_KEYS: &str = "[signing.keys.a]\ntype = \"cosign\"\nprivate_key = \"a.key\"\n\
         [signing.keys.g]\ntype = \"cosign\"\nprivate_key = \"g.key\"\n";

    #[test]
    fn several_accounts_on_one_default_key_are_refused_naming_them_unless_shared_explicitly() {
        for shared_key in ["", "[signing]\ndefault_key = \"a\"\n"] {
            let config = format!("{TWO_SOURCES}{shared_key}{TWO_KEYS}");
            let err = with(&config).validate().unwrap_err().to_string();
            assert!(err.contains("`signing.accounts`"), "{err}");
            assert!(err.contains("acme, globex"), "{err}");
            assert!(err.contains("signing.shared_default_key = true"), "{err}");
        }
        // The development key (no [signing.keys]) counts as a shared default key too.
        let err = with(TWO_SOURCES).validate().unwrap_err().to_string();
        assert!(err.contains("acme, globex"), "{err}");
        // A token's account is an account.
        let token = format!(
            "[[auth.tokens]]\nname = \"t\"\naccount = \"initech\"\nsha256 = \"{}\"\n",
            "a".repeat(64)
        );
        let err = with(&format!("{TWO_SOURCES}{token}"))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("acme, globex, initech"), "{err}");

        let shared = with(&format!(
            "{TWO_SOURCES}[signing]\nshared_default_key = true\n"
        ));
        shared.validate().unwrap();
        assert_eq!(shared.accounts_on_default_key().len(), 2);
        assert!(
            shared
                .redacted()
                .to_string()
                .contains(r#""shared_default_key":true"#)
        );
    }

    #[test]
    fn every_account_with_its_own_key_needs_no_default_key() {
        let own = with(&format!(
            "{TWO_SOURCES}{TWO_KEYS}[signing.accounts]\nacme = \"a\"\nglobex = \"g\"\n"
        ));
        assert_eq!(own.signing.default_key, "");
        own.validate().unwrap();
        assert!(own.accounts_on_default_key().is_empty());

        // One account left without a key, and no default key: named, even when sharing is allowed.
        let half = with(&format!(
            "{TWO_SOURCES}[signing]\nshared_default_key = true\n{TWO_KEYS}[signing.accounts]\nacme = \"a\"\n"
        ));
        let err = half.validate().unwrap_err().to_string();
        assert!(err.contains("`signing.default_key`"), "{err}");
        assert!(err.contains("globex") && !err.contains("acme"), "{err}");
    }

    #[test]
    fn a_single_account_may_use_the_default_key_without_saying_so() {
        let one = with(
            "[[webhook.sources]]\nname = \"a\"\naccount = \"acme\"\nsecrets = [\"s1\"]\nbuilder_ids = [\"https://ci.example.com/a\"]\n\
             [signing]\ndefault_key = \"a\"\n[signing.keys.a]\ntype = \"cosign\"\nprivate_key = \"a.key\"\n",
        );
        one.validate().unwrap();
        assert_eq!(one.accounts().len(), 1);
        // Zero-setup: the development source's account only.
        let dev = with("");
        assert_eq!(
            dev.accounts().into_iter().collect::<Vec<_>>(),
            vec![dev.webhook.dev_account.clone()]
        );
    }

    #[test]
    fn sources_must_name_builders_and_patterns_on_configured_registries() {
        let with = |source: &str| {
            Figment::from(Toml::string(DEFAULT_TOML))
                .merge(Toml::string(&format!(
                    "[[webhook.sources]]\nname = \"ci\"\naccount = \"acme\"\nsecrets = [\"s\"]\n{source}"
                )))
                .extract::<Settings>()
                .unwrap()
                .validate()
                .map_err(|e| e.to_string())
        };
        let err = with("repositories = [\"localhost:5000/acme/*\"]").unwrap_err();
        assert!(err.contains("webhook.sources[0].builder_ids"), "{err}");
        let err = with("builder_ids = [\"not a uri\"]").unwrap_err();
        assert!(err.contains("webhook.sources[0].builder_ids[0]"), "{err}");
        let err = with(
            "builder_ids = [\"https://ci.example.com/b\"]\nrepositories = [\"ghcr.io/acme/*\"]",
        )
        .unwrap_err();
        assert!(
            err.contains("repositories[0]") && err.contains("ghcr.io"),
            "{err}"
        );
        let err = with(
            "builder_ids = [\"https://ci.example.com/b\"]\nrepositories = [\"localhost:5000/**/x\"]",
        )
        .unwrap_err();
        assert!(err.contains("repositories[0]"), "{err}");
        with("builder_ids = [\"https://ci.example.com/b\"]\nrepositories = [\"localhost:5000/acme/*\"]")
            .unwrap();
    }

    #[test]
    fn image_templates_are_checked_at_start_up_naming_the_key() {
        let with = |kind: &str, images: &str| {
            Figment::from(Toml::string(DEFAULT_TOML))
                .merge(Toml::string(&format!(
                    "[[registries]]\nhost = \"registry.example.com\"\n\
                     [[webhook.sources]]\nname = \"gh\"\nkind = \"{kind}\"\naccount = \"acme\"\n\
                     secrets = [\"s\"]\nbuilder_ids = [\"https://ci.example.com/gh\"]\n\
                     repositories = [\"registry.example.com/acme/**\"]\nimages = {images}\n"
                )))
                .extract::<Settings>()
                .unwrap()
                .validate()
                .map_err(|e| e.to_string())
        };
        with(
            "github",
            r#"["registry.example.com/acme/{repository}:{sha}", "registry.example.com/acme/app:{branch}-{sha}"]"#,
        )
        .unwrap();
        for (images, says) in [
            (r#"["registry.example.com/acme/app:{commit}"]"#, "{commit}"),
            (r#"["ghcr.io/acme/app:{sha}"]"#, "ghcr.io"),
            (r#"["{repository}:{sha}"]"#, "registry host"),
            (r#"["registry.example.com/acme/app"]"#, "no tag"),
            (
                r#"["registry.example.com/globex/app:{sha}"]"#,
                "not one of this source's repositories",
            ),
        ] {
            let err = with("github", images).unwrap_err();
            assert!(
                err.contains("webhook.sources[0].images[0]") && err.contains(says),
                "{images}: {err}"
            );
        }
        let err = with("attestd", r#"["registry.example.com/acme/app:{sha}"]"#).unwrap_err();
        assert!(err.contains("webhook.sources[0].images"), "{err}");
    }

    #[test]
    fn database_urls_are_redacted_by_parsing_them() {
        for (raw, secret) in [
            ("postgres://app:p@ss:w0rd@db.internal:5432/attestd", "p@ss"),
            (
                "postgres://app:hunter2@db/attestd?sslmode=require",
                "hunter2",
            ),
            (
                "postgresql://db/attestd?user=app&password=s3cr3t&sslmode=verify-full",
                "s3cr3t",
            ),
            ("postgres://app@db/attestd?sslpassword=k3y", "k3y"),
            ("postgres://app:%40t%3Asign@db/attestd", "sign"),
        ] {
            let shown = redact_database_url(raw);
            assert!(!shown.contains(secret), "{raw} -> {shown}");
            assert!(shown.contains("[redacted]"), "{raw} -> {shown}");
            assert!(shown.contains("attestd"), "{raw} -> {shown}");
        }
        assert_eq!(
            redact_database_url("postgres://app@db/attestd?sslmode=require"),
            "postgres://app@db/attestd?sslmode=require"
        );
        assert_eq!(
            redact_database_url("sqlite:data/attestd.db"),
            "sqlite:data/attestd.db"
        );
    }

    #[test]
    fn verify_defaults_are_the_limits_code_falls_back_to() {
        let s: Settings = Figment::from(Toml::string(DEFAULT_TOML)).extract().unwrap();
        assert_eq!(s.verify.eval_limits(), crate::policy::EvalLimits::default());
        assert_eq!(
            s.verify.fetch_limits(),
            crate::registry::FetchLimits::default()
        );
        let err = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Toml::string("[verify]\nmax_policies = 0"))
            .extract::<Settings>()
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("verify.max_policies"), "{err}");
    }

    /// `Settings::load_as` over a file holding `toml` (PostgreSQL unless it says otherwise).
    fn load_file(toml: &str, role: Option<Role>) -> Result<Settings, String> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("attestd.toml");
        let db = if toml.contains("[database]") {
            ""
        } else {
            "[database]\nurl = \"postgres://db/attestd\"\n"
        };
        std::fs::write(&file, format!("{db}{toml}")).unwrap();
        Settings::load_as(Some(&file), role).map_err(|e| e.to_string())
    }

    #[test]
    fn roles_decide_what_runs_and_worker_enabled_turns_off_only_an_all_process_worker() {
        let runs = |toml: &str, role| {
            let s = load_file(toml, role).unwrap();
            (s.runs_api(), s.runs_worker())
        };
        assert_eq!(runs("", None), (true, true));
        assert_eq!(runs("[worker]\nenabled = false\n", None), (true, false));
        assert_eq!(runs("[server]\nrole = \"api\"\n", None), (true, false));
        assert_eq!(runs("[server]\nrole = \"worker\"\n", None), (false, true));
        assert_eq!(
            runs("[worker]\nenabled = true\n", Some(Role::Worker)),
            (false, true)
        );
        // --role wins over the file.
        assert_eq!(
            runs("[server]\nrole = \"api\"\n", Some(Role::Worker)),
            (false, true)
        );
        let shown = load_file("[server]\nrole = \"worker\"\n", None)
            .unwrap()
            .redacted()
            .to_string();
        assert!(shown.contains(r#""role":"worker""#), "{shown}");
    }

    #[test]
    fn contradicting_roles_and_worker_switches_are_refused_naming_the_key() {
        let err = load_file(
            "[server]\nrole = \"worker\"\n[worker]\nenabled = false\n",
            None,
        )
        .unwrap_err();
        assert!(
            err.contains("`server.role`") && err.contains("worker.enabled = false"),
            "{err}"
        );
        let err = load_file("[worker]\nenabled = false\n", Some(Role::Worker)).unwrap_err();
        assert!(err.contains("`server.role`"), "{err}");
        let err =
            load_file("[server]\nrole = \"api\"\n[worker]\nenabled = true\n", None).unwrap_err();
        assert!(
            err.contains("`worker.enabled`") && err.contains("role = \"api\""),
            "{err}"
        );
        let err = load_file(
            "[database]\nurl = \"sqlite:x.db\"\n[server]\nrole = \"api\"\n",
            None,
        )
        .unwrap_err();
        assert!(
            err.contains("`server.role`") && err.contains("PostgreSQL"),
            "{err}"
        );
        let err = load_file("[worker]\nname = \"a/b\"\n", None).unwrap_err();
        assert!(err.contains("`worker.name`"), "{err}");
        let err = load_file("[server]\nrole = \"both\"\n", None).unwrap_err();
        assert!(err.contains("role"), "{err}");
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "registry.example.com",
            "10.0.0.1:5000",
            "localhost.evil.com",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
