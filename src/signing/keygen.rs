//! Creating cosign key pairs on disk: `<prefix>.key` (`ENCRYPTED SIGSTORE PRIVATE KEY`, encrypted
//! by sigstore-rs exactly as `cosign generate-key-pair` does) and `<prefix>.pub`. Never overwrites
//! without `force`; the private key file is created with mode 0600.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use sigstore::crypto::SigningScheme;

use super::Signer as _;
use super::cosign::{CosignSigner, public_key_pem};
use crate::domain::KeyId;

/// What `generate_key_pair` wrote.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    pub private_key_path: PathBuf,
    pub public_key_path: PathBuf,
    pub key_id: KeyId,
    pub public_key_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    #[error("{} already exists; pass --force to overwrite it", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key generation failed: {0}")]
    Crypto(String),
}

/// `<prefix>.key` and `<prefix>.pub` for `prefix`.
pub fn key_paths(prefix: &Path) -> (PathBuf, PathBuf) {
    let with = |ext: &str| {
        let mut name = prefix.as_os_str().to_owned();
        name.push(ext);
        PathBuf::from(name)
    };
    (with(".key"), with(".pub"))
}

/// Generate an ECDSA P-256 key pair and write it in cosign's format, encrypted with `password`
/// (which may be empty). Creates missing parent directories. Refuses to replace either file
/// unless `force`. Costs one scrypt run (~0.1–0.2 s).
pub fn generate_key_pair(
    prefix: &Path,
    password: &[u8],
    force: bool,
) -> Result<GeneratedKey, KeygenError> {
    let (key_path, pub_path) = key_paths(prefix);
    if !force {
        for path in [&key_path, &pub_path] {
            if path.exists() {
                return Err(KeygenError::Exists(path.clone()));
            }
        }
    }
    let crypto = |e: sigstore::errors::SigstoreError| KeygenError::Crypto(e.to_string());
    let pair = SigningScheme::ECDSA_P256_SHA256_ASN1
        .create_signer()
        .and_then(|s| s.to_sigstore_keypair())
        .map_err(crypto)?;
    let encrypted = pair
        .private_key_to_encrypted_pem(password)
        .map_err(crypto)?;
    // sigstore's PEM uses CRLF line endings; cosign writes LF. Same bytes inside.
    let encrypted = pem::parse(encrypted.as_bytes())
        .map_err(|e| KeygenError::Crypto(format!("sigstore wrote an unreadable PEM: {e}")))?;
    let private_pem = secrecy::zeroize::Zeroizing::new(pem::encode_config(
        &encrypted,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    ));
    let public_der = pair.public_key_to_der().map_err(crypto)?;

    // Read our own output back before writing anything: what we write must be what we load.
    let signer = CosignSigner::from_pem("generated key", private_pem.as_bytes(), password)
        .map_err(|e| KeygenError::Crypto(e.to_string()))?;
    if signer.public_key_der() != public_der {
        return Err(KeygenError::Crypto(
            "the generated private and public keys do not match".into(),
        ));
    }

    if let Some(dir) = key_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| KeygenError::Io {
            path: dir.to_owned(),
            source,
        })?;
    }
    write_file(&key_path, private_pem.as_bytes(), 0o600)?;
    let public_key_pem = public_key_pem(&public_der);
    write_file(&pub_path, public_key_pem.as_bytes(), 0o644)?;
    Ok(GeneratedKey {
        private_key_path: key_path,
        public_key_path: pub_path,
        key_id: signer.key_id().clone(),
        public_key_pem,
    })
}

/// Write via a temporary file in the same directory and rename, so a crash never leaves half a
/// key and the mode is right from the first byte.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeygenError> {
    let io = |source| KeygenError::Io {
        path: path.to_owned(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let result = options.open(&tmp).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    if let Err(e) = result.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_reads_back_with_its_password_and_is_private_to_the_owner() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("nested/dir/cosign");
        let generated = generate_key_pair(&prefix, b"correct horse", false).unwrap();
        assert_eq!(
            generated.private_key_path,
            dir.path().join("nested/dir/cosign.key")
        );

        let key = std::fs::read(&generated.private_key_path).unwrap();
        assert!(key.starts_with(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
        let signer = CosignSigner::from_pem("cosign.key", &key, b"correct horse").unwrap();
        assert_eq!(signer.key_id(), &generated.key_id);
        let public = std::fs::read_to_string(&generated.public_key_path).unwrap();
        assert_eq!(public, generated.public_key_pem);
        assert_eq!(public, signer.public_key_pem());
        assert!(CosignSigner::from_pem("cosign.key", &key, b"wrong").is_err());

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&generated.private_key_path)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn existing_key_is_not_overwritten_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("cosign");
        let first = generate_key_pair(&prefix, b"", false).unwrap();
        let err = generate_key_pair(&prefix, b"", false).unwrap_err();
        assert!(matches!(err, KeygenError::Exists(_)), "{err}");
        assert!(err.to_string().contains("cosign.key"), "{err}");
        let key = std::fs::read(&first.private_key_path).unwrap();
        assert_eq!(
            CosignSigner::from_pem("k", &key, b"").unwrap().key_id(),
            &first.key_id
        );

        let second = generate_key_pair(&prefix, b"", true).unwrap();
        assert_ne!(second.key_id, first.key_id);
    }
}
