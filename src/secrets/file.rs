//! Secrets from files in one directory, the layout of a mounted Kubernetes secret (`cosign.key`,
//! `cosign.password`, `cosign.pub`). A reference is a file name inside that directory; references
//! that could escape it (absolute paths, `..`, separators) are refused.

use std::path::{Path, PathBuf};

use secrecy::SecretString;

use super::{SecretError, SecretSource};

/// Reads `<dir>/<reference>` on every call, so a remounted secret is picked up.
#[derive(Debug, Clone)]
pub struct FileSource {
    dir: PathBuf,
}

impl FileSource {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    fn path_of(&self, reference: &str) -> Result<PathBuf, SecretError> {
        // Kubernetes secret keys are `[-._a-zA-Z0-9]+`; anything else cannot be a mounted key
        // and might walk out of the directory.
        let plain = !reference.is_empty()
            && reference != "."
            && reference != ".."
            && reference
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !plain {
            return Err(SecretError::Invalid {
                backend: "file",
                reference: reference.to_owned(),
                reason:
                    "must be a file name inside secrets.file_dir (letters, digits, '-', '_', '.')"
                        .into(),
            });
        }
        Ok(self.dir.join(reference))
    }
}

#[async_trait::async_trait]
impl SecretSource for FileSource {
    fn name(&self) -> &'static str {
        "file"
    }

    async fn get(&self, reference: &str) -> Result<SecretString, SecretError> {
        let path = self.path_of(reference)?;
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SecretError::NotFound {
                    backend: "file",
                    reference: reference.to_owned(),
                });
            }
            Err(e) => {
                return Err(SecretError::Unavailable {
                    backend: "file",
                    reference: reference.to_owned(),
                    reason: format!("cannot read {}: {}", path.display(), e.kind()),
                });
            }
        };
        let mut text = String::from_utf8(bytes).map_err(|_| SecretError::Invalid {
            backend: "file",
            reference: reference.to_owned(),
            reason: "the file is not valid UTF-8".into(),
        })?;
        // `echo pw > cosign.password` adds one newline that is not part of the password.
        if text.ends_with("\r\n") {
            text.truncate(text.len() - 2);
        } else if text.ends_with('\n') {
            text.truncate(text.len() - 1);
        }
        Ok(SecretString::from(text))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[tokio::test]
    async fn file_in_the_directory_is_read_without_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cosign.password"), "pw with spaces \n").unwrap();
        std::fs::write(dir.path().join("empty"), "").unwrap();
        let source = FileSource::new(dir.path());
        let pw = source.get("cosign.password").await.unwrap();
        assert_eq!(pw.expose_secret(), "pw with spaces ");
        assert_eq!(source.get("empty").await.unwrap().expose_secret(), "");
    }

    #[tokio::test]
    async fn references_escaping_the_directory_are_refused() {
        let outer = tempfile::tempdir().unwrap();
        std::fs::write(outer.path().join("outside"), "x").unwrap();
        let inner = outer.path().join("mounted");
        std::fs::create_dir(&inner).unwrap();
        let source = FileSource::new(&inner);
        for bad in ["../outside", "/etc/passwd", "..", ".", "a/b", ""] {
            let err = source.get(bad).await.unwrap_err();
            assert!(matches!(err, SecretError::Invalid { .. }), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn missing_file_is_not_found_naming_the_reference() {
        let dir = tempfile::tempdir().unwrap();
        let err = FileSource::new(dir.path())
            .get("cosign.key")
            .await
            .unwrap_err();
        assert!(matches!(err, SecretError::NotFound { .. }));
        assert!(err.to_string().contains("cosign.key"), "{err}");
    }
}
