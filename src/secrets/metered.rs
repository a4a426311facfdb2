//! A [`SecretSource`] that counts its backend's failed reads (`attestd_secret_backend_errors_total`)
//! and otherwise passes every call through unchanged.

use std::sync::Arc;

use secrecy::SecretString;

use super::{SecretError, SecretSource};

/// Counts the failures of the source it wraps.
pub struct Metered(Arc<dyn SecretSource>);

impl Metered {
    pub fn wrap(source: Arc<dyn SecretSource>) -> Arc<dyn SecretSource> {
        Arc::new(Self(source))
    }
}

#[async_trait::async_trait]
impl SecretSource for Metered {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    async fn get(&self, reference: &str) -> Result<SecretString, SecretError> {
        let result = self.0.get(reference).await;
        if let Err(e) = &result {
            let error = match e {
                SecretError::NotFound { .. } => "not_found",
                SecretError::Unavailable { .. } => "unavailable",
                SecretError::Invalid { .. } => "invalid",
            };
            crate::metrics::secret_error(self.0.name(), error);
        }
        result
    }

    fn invalidate(&self) {
        self.0.invalidate();
    }
}
