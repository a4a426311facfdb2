//! Where key material and registry credentials come from: environment variables, files (a
//! mounted Kubernetes secret) or Vault/OpenBao KV v2. Values are never logged or returned.

use secrecy::SecretString;

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
