//! Signers (a decrypted cosign key held in memory, or a Vault/OpenBao Transit key) and DSSE
//! envelope assembly. The signature always covers the DSSE pre-authentication encoding.

pub mod cosign;
pub mod keygen;
pub mod keyring;
pub mod transit;

pub use cosign::{CosignSigner, KeyError};
pub use keygen::{GeneratedKey, KeygenError, generate_key_pair};
pub use keyring::{KeyKind, KeyState, Keyring, KeyringError, ListedKey, PublicKeyInfo};
pub use transit::TransitSigner;

use std::sync::Arc;

use crate::domain::KeyId;
use crate::domain::dsse;

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Transient: the backend holding the key did not answer.
    #[error("signing backend unavailable: {0}")]
    Unavailable(String),
    /// Permanent: the key cannot sign (wrong type, refused by the backend).
    #[error("signing failed: {0}")]
    Failed(String),
}

/// Something that produces ECDSA P-256 / SHA-256 signatures, ASN.1 DER encoded.
#[async_trait::async_trait]
pub trait Signer: Send + Sync {
    /// SHA-256 of the public key's SubjectPublicKeyInfo DER, hex.
    fn key_id(&self) -> &KeyId;
    /// The public key as a PKIX `PUBLIC KEY` PEM.
    fn public_key_pem(&self) -> &str;
    /// Sign `message` (hashing it with SHA-256) and return the DER signature.
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// Sign `payload` as a DSSE envelope and serialize it once; the returned bytes are what is stored.
pub async fn sign_envelope(
    signer: &dyn Signer,
    payload_type: &str,
    payload: &[u8],
) -> Result<Vec<u8>, SignError> {
    let sig = signer.sign(&dsse::pae(payload_type, payload)).await?;
    Ok(dsse::envelope_json(
        payload_type,
        payload,
        signer.key_id().as_str(),
        &sig,
    ))
}

/// Shared handle to a signer.
pub type DynSigner = Arc<dyn Signer>;
