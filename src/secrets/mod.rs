//! Where key material and registry credentials come from: environment variables, files (a
//! mounted Kubernetes secret) or Vault/OpenBao KV v2. Values are never logged or returned.

pub mod env;
pub mod file;
pub mod metered;
pub mod vault;

use std::sync::Arc;

use secrecy::SecretString;

use crate::config::{ConfigError, SecretBackendKind, SecretsSettings};

/// Why a secret could not be read. Messages name the reference, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The reference does not exist in the backend (a configuration mistake, not transient).
    #[error("secret {reference} not found in the {backend} backend")]
    NotFound {
        backend: &'static str,
        reference: String,
    },
    /// The backend could not be reached or answered with an error; worth retrying.
    #[error("secret backend {backend} unavailable while reading {reference}: {reason}")]
    Unavailable {
        backend: &'static str,
        reference: String,
        reason: String,
    },
    /// The reference or the stored value is unusable (escapes the secret directory, not UTF-8,
    /// not a string); a configuration mistake, not transient.
    #[error("secret {reference} in the {backend} backend is invalid: {reason}")]
    Invalid {
        backend: &'static str,
        reference: String,
        reason: String,
    },
}

impl SecretError {
    /// True when retrying later may succeed (the backend was down or refused for now).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// A backend holding named secrets.
#[async_trait::async_trait]
pub trait SecretSource: Send + Sync {
    /// The backend's name for logs ("env", "file", "vault").
    fn name(&self) -> &'static str;
    /// Read one secret. `reference` is an env var name, a file name, or a KV `path#field`.
    async fn get(&self, reference: &str) -> Result<SecretString, SecretError>;
    /// Drop cached values so the next `get` reads the backend again.
    fn invalidate(&self) {}
}

/// The backend `secrets.backend` selects. Fails (naming the key) when its settings are unusable,
/// e.g. the Vault token reference cannot be resolved or the CA file cannot be read; a Vault server
/// that is down is not an error here.
pub fn from_settings(settings: &SecretsSettings) -> Result<Arc<dyn SecretSource>, ConfigError> {
    Ok(match settings.backend {
        SecretBackendKind::Env => Arc::new(env::EnvSource),
        SecretBackendKind::File => Arc::new(file::FileSource::new(&settings.file_dir)),
        SecretBackendKind::Vault => Arc::new(vault::VaultKvSource::new(
            Arc::new(vault::VaultClient::from_settings(settings)?),
            &settings.vault_kv_mount,
            std::time::Duration::from_secs(settings.refresh_secs),
        )),
    })
}
