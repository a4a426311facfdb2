//! Registry failures, split the way the worker needs them: permanent (fail the job, tell the
//! user) or retryable (back off and try again). Messages never contain credentials.

use oci_client::errors::{OciDistributionError, OciErrorCode};

use crate::secrets::SecretError;

/// A stable, machine-readable reason for a registry failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The image's registry host is not listed under `[[registries]]`.
    RegistryNotConfigured,
    /// The image manifest (by digest or tag) does not exist in the repository.
    ImageNotFound,
    /// The registry refused our credentials (401/403). Retryable: the password may be mid-rotation.
    Unauthorized,
    /// The `.att` manifest already holds the maximum number of layers (push), or an image has
    /// more attestations than `verify.max_attestation_layers` (read).
    TooManyLayers,
    /// An attestation blob is larger than `verify.max_layer_bytes`.
    AttestationTooLarge,
    /// The registry rejected a request for a reason retrying will not fix.
    Rejected,
    /// Content in the registry (or given to us) is malformed.
    InvalidContent,
    /// The registry could not be reached, timed out, or answered 5xx/429.
    Unavailable,
    /// The write was accepted but reading it back did not show it.
    NotVisible,
    /// The push stopped before writing: another worker took over the tag's lock.
    LockLost,
    /// The registry password is missing from the secret backend.
    SecretNotFound,
    /// The secret backend could not be reached.
    SecretUnavailable,
    /// The registry settings cannot be used (e.g. an unreadable `ca_file`).
    Misconfigured,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RegistryNotConfigured => "registry_not_configured",
            Self::ImageNotFound => "image_not_found",
            Self::Unauthorized => "registry_unauthorized",
            Self::TooManyLayers => "too_many_attestations",
            Self::AttestationTooLarge => "attestation_too_large",
            Self::Rejected => "registry_rejected",
            Self::InvalidContent => "invalid_registry_content",
            Self::Unavailable => "registry_unavailable",
            Self::NotVisible => "attestation_not_visible",
            Self::LockLost => "tag_lock_lost",
            Self::SecretNotFound => "registry_secret_not_found",
            Self::SecretUnavailable => "secret_backend_unavailable",
            Self::Misconfigured => "registry_misconfigured",
        }
    }
}

/// A registry failure; the message is safe to show users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Retrying will not help; the job should fail with this message.
    #[error("{message}")]
    Permanent { code: ErrorCode, message: String },
    /// Transient; the job should be retried with backoff.
    #[error("{message}")]
    Retryable { code: ErrorCode, message: String },
}

/// The error `Registries::push` returns.
pub type PushError = RegistryError;

impl RegistryError {
    pub fn permanent(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Permanent {
            code,
            message: message.into(),
        }
    }

    pub fn retryable(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Retryable {
            code,
            message: message.into(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Permanent { code, .. } | Self::Retryable { code, .. } => *code,
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable { .. })
    }

    pub fn message(&self) -> &str {
        match self {
            Self::Permanent { message, .. } | Self::Retryable { message, .. } => message,
        }
    }

    /// Classify an oci-client error; `what` says what we were doing ("push the attestation blob
    /// to host/repo"). Registry-supplied text is left out: it can echo request details.
    pub(crate) fn from_oci(what: &str, err: &OciDistributionError) -> Self {
        use OciDistributionError as E;
        match err {
            E::RequestError(e) => {
                if e.is_builder() {
                    Self::permanent(ErrorCode::Misconfigured, format!("{what}: invalid request"))
                } else if e.is_timeout() {
                    Self::retryable(ErrorCode::Unavailable, format!("{what}: timed out"))
                } else if e.is_connect() {
                    Self::retryable(
                        ErrorCode::Unavailable,
                        format!("{what}: cannot connect to the registry ({})", root_cause(e)),
                    )
                } else {
                    Self::retryable(
                        ErrorCode::Unavailable,
                        format!("{what}: request failed ({})", root_cause(e)),
                    )
                }
            }
            E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => unauthorized(what),
            E::ServerError { code, .. } => from_status(what, *code),
            E::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    unauthorized(what)
                } else if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Toomanyrequests))
                {
                    Self::retryable(
                        ErrorCode::Unavailable,
                        format!("{what}: the registry is rate limiting (429)"),
                    )
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestBlobUnknown
                            | OciErrorCode::BlobUploadUnknown
                            | OciErrorCode::BlobUploadInvalid
                    )
                }) {
                    // A blob vanished between upload and manifest PUT (garbage collection, an
                    // expired upload session): the next attempt uploads it again.
                    Self::retryable(
                        ErrorCode::Unavailable,
                        format!("{what}: the registry lost an uploaded blob"),
                    )
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                            | OciErrorCode::BlobUnknown
                    )
                }) {
                    Self::permanent(ErrorCode::ImageNotFound, format!("{what}: not found"))
                } else {
                    let names: Vec<String> = envelope
                        .errors
                        .iter()
                        .map(|e| {
                            serde_json::to_value(&e.code)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_owned))
                                .unwrap_or_else(|| "UNKNOWN".into())
                        })
                        .collect();
                    Self::permanent(
                        ErrorCode::Rejected,
                        format!("{what}: the registry refused it ({})", names.join(", ")),
                    )
                }
            }
            E::DigestError(_) => Self::retryable(
                ErrorCode::Unavailable,
                format!("{what}: content digest mismatch in transfer"),
            ),
            E::IoError(e) => Self::retryable(ErrorCode::Unavailable, format!("{what}: {e}")),
            E::SpecViolationError(_)
            | E::RegistryNoLocationError
            | E::RegistryNoDigestError
            | E::ManifestParsingError(_)
            | E::VersionedParsingError(_)
            | E::UnsupportedMediaTypeError(_)
            | E::UnsupportedSchemaVersionError(_)
            | E::JsonError(_)
            | E::ManifestEncodingError(_)
            | E::HeaderValueError(_) => Self::permanent(
                ErrorCode::InvalidContent,
                format!("{what}: unexpected registry response ({err})"),
            ),
            _ => Self::permanent(ErrorCode::Rejected, format!("{what}: {err}")),
        }
    }

    /// A request that got no HTTP answer (connect, timeout, broken body).
    pub(crate) fn from_transport(what: &str, err: reqwest::Error) -> Self {
        Self::from_oci(what, &OciDistributionError::from(err))
    }

    /// A registry's non-success answer: the status decides auth, rate limits and outages; for
    /// the rest, the error codes in its body (as the distribution specification lists them).
    pub(crate) fn from_response(what: &str, status: u16, body: &[u8]) -> Self {
        if matches!(status, 401 | 403 | 408 | 429 | 500..=599) {
            return from_status(what, status);
        }
        match serde_json::from_slice::<oci_client::errors::OciEnvelope>(body) {
            Ok(envelope) if !envelope.errors.is_empty() => Self::from_oci(
                what,
                &OciDistributionError::RegistryError {
                    envelope,
                    url: String::new(),
                },
            ),
            _ => from_status(what, status),
        }
    }

    pub(crate) fn from_secret(host: &str, err: &SecretError) -> Self {
        match err {
            SecretError::NotFound { .. } | SecretError::Invalid { .. } => Self::permanent(
                ErrorCode::SecretNotFound,
                format!("password for registry {host}: {err}"),
            ),
            SecretError::Unavailable { .. } => Self::retryable(
                ErrorCode::SecretUnavailable,
                format!("password for registry {host}: {err}"),
            ),
        }
    }

    /// Whether the error came from an absent manifest or repository (HTTP 404).
    pub(crate) fn is_not_found(&self) -> bool {
        self.code() == ErrorCode::ImageNotFound
    }
}

/// Classify an HTTP status the registry answered with.
pub(crate) fn from_status(what: &str, status: u16) -> RegistryError {
    match status {
        401 | 403 => unauthorized(what),
        404 => RegistryError::permanent(ErrorCode::ImageNotFound, format!("{what}: not found")),
        408 | 429 | 500..=599 => RegistryError::retryable(
            ErrorCode::Unavailable,
            format!("{what}: the registry answered HTTP {status}"),
        ),
        _ => RegistryError::permanent(
            ErrorCode::Rejected,
            format!("{what}: the registry answered HTTP {status}"),
        ),
    }
}

/// Retryable: during a rotation the registry and the secret backend change at different moments,
/// and the next attempt reads the password again.
fn unauthorized(what: &str) -> RegistryError {
    RegistryError::retryable(
        ErrorCode::Unauthorized,
        format!(
            "{what}: the registry refused the credentials (check the registry's username and password in the configuration and secret backend)"
        ),
    )
}

/// The innermost cause of an error, which is where "connection refused" lives.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_split_into_permanent_and_retryable() {
        assert_eq!(from_status("x", 401).code(), ErrorCode::Unauthorized);
        assert!(from_status("x", 401).is_retryable());
        assert!(from_status("x", 403).is_retryable());
        assert!(!from_status("x", 404).is_retryable());
        assert!(from_status("x", 503).is_retryable());
        assert!(from_status("x", 429).is_retryable());
        assert!(!from_status("x", 400).is_retryable());
    }

    fn envelope_error(code: &str) -> RegistryError {
        let envelope = serde_json::from_value(serde_json::json!({
            "errors": [{"code": code, "message": "m"}]
        }))
        .unwrap();
        RegistryError::from_oci(
            "x",
            &OciDistributionError::RegistryError {
                envelope,
                url: "u".into(),
            },
        )
    }

    #[test]
    fn registry_error_codes_are_classified() {
        assert_eq!(envelope_error("DENIED").code(), ErrorCode::Unauthorized);
        assert!(envelope_error("UNAUTHORIZED").is_retryable());
        assert_eq!(
            envelope_error("MANIFEST_UNKNOWN").code(),
            ErrorCode::ImageNotFound
        );
        assert!(envelope_error("MANIFEST_BLOB_UNKNOWN").is_retryable());
        assert!(envelope_error("TOOMANYREQUESTS").is_retryable());
        let other = envelope_error("MANIFEST_INVALID");
        assert_eq!(other.code(), ErrorCode::Rejected);
        assert!(other.to_string().contains("MANIFEST_INVALID"), "{other}");
    }
}
