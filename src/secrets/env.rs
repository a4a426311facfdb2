//! Secrets from environment variables: the reference is the variable name (cosign's
//! `COSIGN_PASSWORD` convention works as is). An empty variable is an empty secret, which is how
//! cosign spells "no password".

use secrecy::SecretString;

use super::{SecretError, SecretSource};

/// Reads each secret from the process environment at the time of the call.
#[derive(Debug, Default, Clone, Copy)]
pub struct EnvSource;

#[async_trait::async_trait]
impl SecretSource for EnvSource {
    fn name(&self) -> &'static str {
        "env"
    }

    async fn get(&self, reference: &str) -> Result<SecretString, SecretError> {
        match std::env::var(reference) {
            Ok(value) => Ok(SecretString::from(value)),
            Err(std::env::VarError::NotPresent) => Err(SecretError::NotFound {
                backend: "env",
                reference: reference.to_owned(),
            }),
            Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::Invalid {
                backend: "env",
                reference: reference.to_owned(),
                reason: "the value is not valid UTF-8".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[tokio::test]
    async fn set_variable_is_read_and_missing_one_is_not_found_by_name() {
        // PATH is always set in test processes; no need to mutate the environment.
        let path = EnvSource.get("PATH").await.unwrap();
        assert_eq!(path.expose_secret(), std::env::var("PATH").unwrap());

        let err = EnvSource
            .get("ATTESTD_TEST_SURELY_UNSET_VARIABLE")
            .await
            .unwrap_err();
        assert!(matches!(err, SecretError::NotFound { .. }));
        assert!(
            err.to_string()
                .contains("ATTESTD_TEST_SURELY_UNSET_VARIABLE"),
            "{err}"
        );
    }
}
