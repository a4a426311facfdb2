//! Signing with a Vault/OpenBao Transit key (type `ecdsa-p256`) that never leaves the server, as
//! cosign's `hashivault://` does: attestd sends the SHA-256 of the message and gets a DER
//! signature back. The signer is pinned to one key version, so the key id it reports always
//! matches the key that signed; every returned signature is verified locally before use.

use std::sync::Arc;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ParsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::{SignError, Signer};
use crate::domain::KeyId;
use crate::secrets::vault::{VaultClient, VaultError};

/// One version of a Transit key, with its public key read from the server.
pub struct TransitSigner {
    client: Arc<VaultClient>,
    mount: String,
    key: String,
    version: u64,
    key_id: KeyId,
    public_key_pem: String,
    verifier: ParsedPublicKey,
}

impl std::fmt::Debug for TransitSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransitSigner")
            .field("addr", &self.client.addr())
            .field("mount", &self.mount)
            .field("key", &self.key)
            .field("version", &self.version)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl TransitSigner {
    /// Read the latest version's public key from `GET /v1/<mount>/keys/<key>`. A server that
    /// does not answer gives `SignError::Unavailable`; a missing key or one that is not
    /// `ecdsa-p256` gives `SignError::Failed`.
    pub async fn load(client: Arc<VaultClient>, mount: &str, key: &str) -> Result<Self, SignError> {
        let mount = mount.trim_matches('/').to_owned();
        let what = format!("transit key {mount}/{key} at {}", client.addr());
        let failed = |reason: &str| SignError::Failed(format!("{what}: {reason}"));
        let json = client
            .get(&format!("{mount}/keys/{key}"))
            .await
            .map_err(|e| vault_error(&what, e))?;
        let data = json
            .get("data")
            .ok_or_else(|| failed("answer has no data"))?;
        let key_type = data.get("type").and_then(Value::as_str).unwrap_or("");
        if key_type != "ecdsa-p256" {
            return Err(failed(&format!(
                "type is `{key_type}`; attestd signs with ECDSA P-256 only (create the key with \
                 type=ecdsa-p256)"
            )));
        }
        let version = data
            .get("latest_version")
            .and_then(Value::as_u64)
            .ok_or_else(|| failed("answer has no latest_version"))?;
        let public_pem = data
            .pointer(&format!("/keys/{version}/public_key"))
            .and_then(Value::as_str)
            .ok_or_else(|| failed(&format!("answer has no public key for version {version}")))?;
        let block = pem::parse(public_pem)
            .ok()
            .filter(|b| b.tag() == "PUBLIC KEY")
            .ok_or_else(|| failed("public key is not a `PUBLIC KEY` PEM"))?;
        let verifier = ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, block.contents())
            .map_err(|_| failed("public key is not an ECDSA P-256 SubjectPublicKeyInfo"))?;
        Ok(Self {
            key_id: KeyId::from_spki_der(block.contents()),
            public_key_pem: super::cosign::public_key_pem(block.contents()),
            client,
            mount,
            key: key.to_owned(),
            version,
            verifier,
        })
    }

    /// The key version this signer signs with.
    pub fn version(&self) -> u64 {
        self.version
    }

    fn what(&self) -> String {
        format!(
            "transit key {}/{} v{} at {}",
            self.mount,
            self.key,
            self.version,
            self.client.addr()
        )
    }
}

#[async_trait::async_trait]
impl Signer for TransitSigner {
    fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    fn public_key_pem(&self) -> &str {
        &self.public_key_pem
    }

    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let what = self.what();
        let failed = |reason: &str| SignError::Failed(format!("{what}: {reason}"));
        let hash = digest::digest(&digest::SHA256, message);
        let body = json!({
            "input": STANDARD.encode(hash.as_ref()),
            "prehashed": true,
            "hash_algorithm": "sha2-256",
            "marshaling_algorithm": "asn1",
            "key_version": self.version,
        });
        let json = self
            .client
            .post(&format!("{}/sign/{}", self.mount, self.key), &body)
            .await
            .map_err(|e| vault_error(&what, e))?;
        let signature = json
            .pointer("/data/signature")
            .and_then(Value::as_str)
            .ok_or_else(|| failed("answer has no data.signature"))?;
        let prefix = format!("vault:v{}:", self.version);
        let der = signature
            .strip_prefix(&prefix)
            .ok_or_else(|| failed(&format!("signature does not start with `{prefix}`")))?;
        let der = STANDARD
            .decode(der)
            .map_err(|_| failed("signature is not base64"))?;
        self.verifier
            .verify_sig(message, &der)
            .map_err(|_| failed("the returned signature does not verify with the public key"))?;
        Ok(der)
    }
}

fn vault_error(what: &str, e: VaultError) -> SignError {
    match e {
        VaultError::Unavailable(reason) => SignError::Unavailable(format!("{what}: {reason}")),
        VaultError::NotFound => SignError::Failed(format!("{what}: not found")),
        VaultError::Invalid(reason) => SignError::Failed(format!("{what}: {reason}")),
    }
}
