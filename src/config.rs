//! Typed settings: the embedded `config/default.toml`, then an optional file, then `ATTESTD_*`
//! environment variables. Invalid combinations fail here, at start-up, naming the key.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::domain::AccountId;
use crate::domain::scope::RepositoryPattern;

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
    #[serde(default)]
    pub registries: Vec<RegistrySettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
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
    pub dev_secret_file: PathBuf,
    pub dev_account: AccountId,
    pub dev_builder_ids: Vec<String>,
    pub sources: Vec<WebhookSourceSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSourceSettings {
    pub name: String,
    pub account: AccountId,
    pub secrets: Vec<SecretRef>,
    /// `host[:port]/repository` patterns this source may attest (see `domain::scope`); none
    /// means it may attest nothing.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// The builder identities this source may claim; the first is used when a webhook names none.
    #[serde(default)]
    pub builder_ids: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    pub enabled: bool,
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
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid(
                    "--config".into(),
                    format!("{} does not exist", file.display()),
                ));
            }
            figment = figment.merge(Toml::file(file));
        }
        // Only ATTESTD_<SECTION>__<KEY> configures; ATTESTD_LOG, ATTESTD_CONFIG and test
        // variables share the prefix but are not settings.
        figment = figment.merge(
            Env::prefixed("ATTESTD_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        );
        let settings: Settings = figment.extract().map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
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
        if self.server.header_read_timeout_secs == 0 || self.server.body_read_timeout_secs == 0 {
            return invalid(
                "server.header_read_timeout_secs",
                "header and body read timeouts must be at least 1 second".into(),
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
        if self.worker.prune_interval_secs == 0 {
            return invalid("worker.prune_interval_secs", "must be at least 1".into());
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.webhook.sources.iter().enumerate() {
            if s.name.is_empty() || !names.insert(s.name.as_str()) {
                return invalid(
                    &format!("webhook.sources[{i}].name"),
                    format!("'{}' must be non-empty and unique", s.name),
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
            }
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
            },
            "database": {
                "url": db,
                "max_connections": self.database.max_connections,
                "migrate_on_start": self.database.migrate_on_start,
                "acquire_timeout_ms": self.database.acquire_timeout_ms,
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
                "dev_builder_ids": self.webhook.dev_builder_ids,
                "sources": self.webhook.sources.iter().map(|s| serde_json::json!({
                    "name": s.name, "account": s.account,
                    "repositories": s.repositories, "builder_ids": s.builder_ids,
                    "secrets": s.secrets.iter().map(SecretRef::redacted).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            },
            "worker": {
                "enabled": self.worker.enabled,
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
