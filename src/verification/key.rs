//! Trusted public keys, read from PKIX `PUBLIC KEY` PEM (what `cosign generate-key-pair` writes
//! to `cosign.pub`); a key's id is the SHA-256 of its SubjectPublicKeyInfo DER.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sigstore::crypto::{CosignVerificationKey, Signature};

use crate::domain::KeyId;

/// A public key whose signatures are trusted; ECDSA P-256/P-384/P-521, Ed25519 or RSA.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    key_id: KeyId,
    verifier: CosignVerificationKey,
}

/// Why a PEM text did not yield trusted keys. `block` counts PEM blocks from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no PEM block found")]
    NoPemBlock,
    #[error("expected one PEM block, found {0}")]
    SeveralPemBlocks(usize),
    #[error("PEM block {block}: {reason}")]
    MalformedPem { block: usize, reason: String },
    #[error(
        "PEM block {block}: expected `PUBLIC KEY` (PKIX SubjectPublicKeyInfo), found `{label}`"
    )]
    NotAPublicKey { block: usize, label: String },
    #[error("PEM block {block}: unsupported or malformed public key: {reason}")]
    Unsupported { block: usize, reason: String },
}

impl TrustedKey {
    /// A key from its SubjectPublicKeyInfo DER; the algorithm is read from the SPKI.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, String> {
        let verifier = CosignVerificationKey::try_from_der(der).map_err(|e| e.to_string())?;
        Ok(Self {
            key_id: KeyId::from_spki_der(der),
            verifier,
        })
    }

    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// True when `signature` (raw bytes; ASN.1 DER for ECDSA) is this key's over `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        self.verifier
            .verify_signature(Signature::Raw(signature), message)
            .is_ok()
    }
}

/// The one trusted key in `pem`.
pub fn trusted_key_from_pem(pem: &str) -> Result<TrustedKey, KeyError> {
    let mut keys = keys(pem)?;
    match keys.len() {
        1 => Ok(keys.remove(0)),
        n => Err(KeyError::SeveralPemBlocks(n)),
    }
}

/// Every trusted key in `pems`, one or more concatenated `PUBLIC KEY` blocks; repeats are dropped.
pub fn trusted_keys_from_pem_bundle(pems: &str) -> Result<Vec<TrustedKey>, KeyError> {
    let mut keys = keys(pems)?;
    let mut seen = std::collections::HashSet::new();
    keys.retain(|k| seen.insert(k.key_id.clone()));
    Ok(keys)
}

fn keys(text: &str) -> Result<Vec<TrustedKey>, KeyError> {
    let blocks = pem_blocks(text)?;
    if blocks.is_empty() {
        return Err(KeyError::NoPemBlock);
    }
    blocks
        .into_iter()
        .enumerate()
        .map(|(i, (label, der))| {
            let block = i + 1;
            if label != "PUBLIC KEY" {
                return Err(KeyError::NotAPublicKey { block, label });
            }
            TrustedKey::from_spki_der(&der)
                .map_err(|reason| KeyError::Unsupported { block, reason })
        })
        .collect()
}

/// `(label, DER)` of every `-----BEGIN label-----` .. `-----END label-----` block, in order.
fn pem_blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>, KeyError> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let block = blocks.len() + 1;
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut closed = false;
        for line in lines.by_ref() {
            if line == end {
                closed = true;
                break;
            }
            if line.contains(':') {
                return Err(KeyError::MalformedPem {
                    block,
                    reason: "encrypted or header-carrying PEM is not a public key".into(),
                });
            }
            body.push_str(line);
        }
        if !closed {
            return Err(KeyError::MalformedPem {
                block,
                reason: format!("missing `{end}`"),
            });
        }
        let der = STANDARD.decode(&body).map_err(|e| KeyError::MalformedPem {
            block,
            reason: format!("body is not base64: {e}"),
        })?;
        blocks.push((label.to_owned(), der));
    }
    Ok(blocks)
}
