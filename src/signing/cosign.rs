//! cosign key pairs: reading cosign's encrypted private key format (scrypt + NaCl secretbox
//! around PKCS#8, under either PEM label) and plain PKCS#8, and signing with the parsed key.
//! Decryption happens once per key; every signature uses an aws-lc-rs key parsed at load time.
//! Only ECDSA P-256 is accepted (see [`KeyError::UnsupportedAlgorithm`]).

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crypto_secretbox::aead::{Aead, KeyInit};
use secrecy::zeroize::Zeroizing;
use serde::Deserialize;

use super::{SignError, Signer};
use crate::domain::KeyId;

/// The label `cosign generate-key-pair` (v2+) and sigstore-rs write.
pub const SIGSTORE_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// The label older cosign versions write.
pub const COSIGN_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";
const PKCS8_LABEL: &str = "PRIVATE KEY";

/// scrypt work factors accepted when decrypting (2^15 is cosign's default). The cap bounds the
/// memory (128·r·N bytes, 128 MiB at 2^17) and time a crafted key can make start-up spend.
const SCRYPT_LOG_N: [u8; 3] = [15, 16, 17];

/// Why a private key cannot be used. Names the key reference and the reason, never key material
/// or the password.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key {reference}: cannot decrypt: wrong password (or the encrypted key is corrupt)")]
    WrongPassword { reference: String },
    /// P-256 is what `cosign generate-key-pair` writes and what Transit `ecdsa-p256` keys are,
    /// so one algorithm covers both signers and every cosign/DSSE verifier; other types are
    /// refused rather than producing attestations some verifiers reject.
    #[error(
        "key {reference}: {algorithm} keys are not supported; attestd signs with ECDSA P-256 only \
         (create one with `attestd keys generate` or `cosign generate-key-pair`)"
    )]
    UnsupportedAlgorithm {
        reference: String,
        algorithm: &'static str,
    },
    #[error("key {reference}: {reason}")]
    Malformed { reference: String, reason: String },
}

/// A cosign ECDSA P-256 key held decrypted in memory.
pub struct CosignSigner {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    key_id: KeyId,
    public_key_der: Vec<u8>,
    public_key_pem: String,
}

impl std::fmt::Debug for CosignSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosignSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl CosignSigner {
    /// Parse a cosign encrypted key (either label) or an unencrypted PKCS#8 `PRIVATE KEY`.
    /// `password` may be empty (cosign allows it); an unencrypted key refuses a non-empty one.
    /// `reference` names the key in errors. Runs scrypt for encrypted keys (~0.1–0.5 s): call
    /// it off the async executor and only when the key bytes changed.
    pub fn from_pem(reference: &str, pem_bytes: &[u8], password: &[u8]) -> Result<Self, KeyError> {
        let malformed = |reason: String| KeyError::Malformed {
            reference: reference.to_owned(),
            reason,
        };
        let block =
            pem::parse(pem_bytes).map_err(|e| malformed(format!("not a PEM private key ({e})")))?;
        match block.tag() {
            SIGSTORE_LABEL | COSIGN_LABEL => {
                let der = decrypt(reference, block.contents(), password)?;
                Self::from_pkcs8(reference, &der)
            }
            PKCS8_LABEL if password.is_empty() => Self::from_pkcs8(reference, block.contents()),
            PKCS8_LABEL => Err(malformed(
                "the key is not encrypted but a password is configured; remove the password \
                 or use an encrypted cosign key"
                    .into(),
            )),
            "EC PRIVATE KEY" => Err(malformed(
                "SEC1 `EC PRIVATE KEY` is not supported; convert it with \
                 `openssl pkcs8 -topk8 -nocrypt` or import it with `cosign import-key-pair`"
                    .into(),
            )),
            "RSA PRIVATE KEY" => Err(KeyError::UnsupportedAlgorithm {
                reference: reference.to_owned(),
                algorithm: "RSA",
            }),
            other => Err(malformed(format!(
                "unsupported PEM label `{other}`; expected `{SIGSTORE_LABEL}`, `{COSIGN_LABEL}` \
                 or `{PKCS8_LABEL}`"
            ))),
        }
    }

    /// Parse an unencrypted PKCS#8 DER private key.
    pub fn from_pkcs8(reference: &str, der: &[u8]) -> Result<Self, KeyError> {
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, der)
            .map_err(|_| match other_algorithm(der) {
                Some(algorithm) => KeyError::UnsupportedAlgorithm {
                    reference: reference.to_owned(),
                    algorithm,
                },
                None => KeyError::Malformed {
                    reference: reference.to_owned(),
                    reason: "the decrypted content is not a PKCS#8 private key".into(),
                },
            })?;
        let public_key_der = key
            .public_key()
            .as_der()
            .map_err(|_| KeyError::Malformed {
                reference: reference.to_owned(),
                reason: "cannot encode the public key".into(),
            })?
            .as_ref()
            .to_vec();
        Ok(Self {
            key,
            rng: SystemRandom::new(),
            key_id: KeyId::from_spki_der(&public_key_der),
            public_key_pem: public_key_pem(&public_key_der),
            public_key_der,
        })
    }

    /// The public key as SubjectPublicKeyInfo DER.
    pub fn public_key_der(&self) -> &[u8] {
        &self.public_key_der
    }

    /// Sign without going through the async trait (for benchmarks and synchronous callers).
    pub fn sign_sync(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        self.key
            .sign(&self.rng, message)
            .map(|sig| sig.as_ref().to_vec())
            .map_err(|_| SignError::Failed("ECDSA P-256 signing failed".into()))
    }
}

#[async_trait::async_trait]
impl Signer for CosignSigner {
    fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    fn public_key_pem(&self) -> &str {
        &self.public_key_pem
    }

    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        // ~50 µs of CPU: cheaper inline than a hop to the blocking pool.
        self.sign_sync(message)
    }
}

/// `PUBLIC KEY` PEM of SubjectPublicKeyInfo DER, 64-character lines, trailing newline (as cosign
/// writes `cosign.pub`).
pub fn public_key_pem(spki_der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("PUBLIC KEY", spki_der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// The algorithm of a PKCS#8 key that is not ECDSA P-256, if aws-lc-rs recognises it.
fn other_algorithm(der: &[u8]) -> Option<&'static str> {
    if EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_ASN1_SIGNING, der).is_ok() {
        Some("ECDSA P-384")
    } else if EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P521_SHA512_ASN1_SIGNING, der).is_ok() {
        Some("ECDSA P-521")
    } else if EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256K1_SHA256_ASN1_SIGNING, der).is_ok() {
        Some("ECDSA secp256k1")
    } else if signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).is_ok() {
        Some("Ed25519")
    } else if signature::RsaKeyPair::from_pkcs8(der).is_ok() {
        Some("RSA")
    } else {
        None
    }
}

#[derive(Deserialize)]
struct EncryptedKey {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Deserialize)]
struct Kdf {
    name: String,
    params: KdfParams,
    salt: String,
}

#[derive(Deserialize)]
struct KdfParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

/// Open cosign's encrypted-key JSON (go-securesystemslib `encrypted` format) with `password`.
fn decrypt(reference: &str, body: &[u8], password: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let malformed = |reason: String| KeyError::Malformed {
        reference: reference.to_owned(),
        reason,
    };
    let doc: EncryptedKey = serde_json::from_slice(body).map_err(|e| {
        malformed(format!(
            "encrypted key body is not cosign's JSON format ({e})"
        ))
    })?;
    if doc.kdf.name != "scrypt" {
        return Err(malformed(format!(
            "unsupported key derivation `{}` (expected scrypt)",
            doc.kdf.name
        )));
    }
    if doc.cipher.name != "nacl/secretbox" {
        return Err(malformed(format!(
            "unsupported cipher `{}` (expected nacl/secretbox)",
            doc.cipher.name
        )));
    }
    let KdfParams { n, r, p } = doc.kdf.params;
    let log_n = SCRYPT_LOG_N
        .into_iter()
        .find(|&l| n == 1u64 << l)
        .filter(|_| r == 8 && p == 1)
        .ok_or_else(|| {
            malformed(format!(
                "unsupported scrypt parameters N={n}, r={r}, p={p} (accepted: N=2^15, 2^16 or \
                 2^17 with r=8, p=1)"
            ))
        })?;
    let b64 = |field: &str, v: &str| {
        STANDARD
            .decode(v)
            .map_err(|_| malformed(format!("`{field}` is not base64")))
    };
    let salt = b64("kdf.salt", &doc.kdf.salt)?;
    let nonce = b64("cipher.nonce", &doc.cipher.nonce)?;
    let ciphertext = b64("ciphertext", &doc.ciphertext)?;
    let nonce: [u8; 24] = nonce
        .try_into()
        .map_err(|_| malformed("`cipher.nonce` is not 24 bytes".into()))?;

    let params = scrypt::Params::new(log_n, r, p)
        .map_err(|e| malformed(format!("invalid scrypt parameters ({e})")))?;
    let mut box_key = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password, &salt, &params, box_key.as_mut_slice())
        .map_err(|e| malformed(format!("scrypt failed ({e})")))?;
    let cipher = crypto_secretbox::XSalsa20Poly1305::new_from_slice(box_key.as_slice())
        .map_err(|_| malformed("bad secretbox key length".into()))?;
    cipher
        .decrypt(&nonce.into(), ciphertext.as_slice())
        .map(Zeroizing::new)
        .map_err(|_| KeyError::WrongPassword {
            reference: reference.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::dsse::{self, Envelope, IN_TOTO_PAYLOAD_TYPE};
    use crate::signing::sign_envelope;
    use p256::ecdsa::signature::Verifier as _;
    use p256::pkcs8::DecodePublicKey as _;

    fn generated_pkcs8() -> Vec<u8> {
        let rng = SystemRandom::new();
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .unwrap()
            .as_ref()
            .to_vec()
    }

    #[tokio::test]
    async fn envelope_signature_covers_the_pae_and_verifies_with_p256() {
        let signer = CosignSigner::from_pkcs8("test", &generated_pkcs8()).unwrap();
        let payload = br#"{"_type":"https://in-toto.io/Statement/v1"}"#;
        let bytes = sign_envelope(&signer, IN_TOTO_PAYLOAD_TYPE, payload)
            .await
            .unwrap();
        let envelope: Envelope = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(envelope.signatures[0].keyid, signer.key_id().as_str());

        let key = p256::ecdsa::VerifyingKey::from_public_key_pem(signer.public_key_pem()).unwrap();
        let sig = p256::ecdsa::DerSignature::try_from(
            STANDARD
                .decode(&envelope.signatures[0].sig)
                .unwrap()
                .as_slice(),
        )
        .unwrap();
        key.verify(&envelope.signed_bytes().unwrap(), &sig).unwrap();
        // The signature is over the PAE, not over the bare payload.
        assert!(key.verify(payload, &sig).is_err());
        let mut tampered = payload.to_vec();
        tampered[2] ^= 1;
        assert!(
            key.verify(&dsse::pae(IN_TOTO_PAYLOAD_TYPE, &tampered), &sig)
                .is_err()
        );
    }

    #[test]
    fn key_id_is_sha256_of_the_spki_der_in_the_public_pem() {
        let signer = CosignSigner::from_pkcs8("test", &generated_pkcs8()).unwrap();
        let block = pem::parse(signer.public_key_pem()).unwrap();
        assert_eq!(block.tag(), "PUBLIC KEY");
        assert_eq!(block.contents(), signer.public_key_der());
        assert_eq!(
            signer.key_id(),
            &KeyId::from_spki_der(signer.public_key_der())
        );
        assert_eq!(signer.key_id().as_str().len(), 64);
        // What p256 derives independently from the same PEM has the same DER.
        use p256::pkcs8::EncodePublicKey as _;
        let key = p256::ecdsa::VerifyingKey::from_public_key_pem(signer.public_key_pem()).unwrap();
        assert_eq!(
            key.to_public_key_der().unwrap().as_bytes(),
            signer.public_key_der()
        );
    }

    fn fixture(name: &str) -> (Vec<u8>, Vec<u8>, String) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys");
        let read = |ext: &str| std::fs::read(dir.join(format!("{name}.{ext}"))).unwrap();
        let public = String::from_utf8(read("pub")).unwrap();
        (read("key"), read("password"), public)
    }

    /// Sign with our key, verify with the RustCrypto `p256` crate against the fixture's `.pub`
    /// (written by the independent Python implementation), and check a one-byte change fails.
    fn assert_signs_verifiably(name: &str, signer: &CosignSigner, fixture_pub: &str) {
        let key = p256::ecdsa::VerifyingKey::from_public_key_pem(fixture_pub).unwrap();
        let message = dsse::pae(IN_TOTO_PAYLOAD_TYPE, b"{\"subject\":[]}");
        let sig = signer.sign_sync(&message).unwrap();
        let sig = p256::ecdsa::DerSignature::try_from(sig.as_slice()).unwrap();
        key.verify(&message, &sig)
            .unwrap_or_else(|e| panic!("{name}: signature does not verify: {e}"));
        let mut changed = message.clone();
        *changed.last_mut().unwrap() ^= 0x01;
        assert!(
            key.verify(&changed, &sig).is_err(),
            "{name}: tampered message verified"
        );
        let fixture_der = pem::parse(fixture_pub).unwrap();
        assert_eq!(signer.public_key_der(), fixture_der.contents(), "{name}");
    }

    #[test]
    fn every_p256_fixture_key_loads_and_its_signature_verifies_with_the_fixture_pub() {
        for name in [
            "cosign-p256-n15",
            "cosign-p256-n15-cosign-label",
            "cosign-p256-n16",
            "cosign-p256-n16-cosign-label",
            "cosign-p256-n17",
            "cosign-p256-n17-cosign-label",
            "cosign-p256-empty-password",
            "plain-p256",
        ] {
            let (key, password, public) = fixture(name);
            let signer = CosignSigner::from_pem(name, &key, &password)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_signs_verifiably(name, &signer, &public);
        }
    }

    #[test]
    fn wrong_password_is_refused_naming_the_reference_and_not_the_password() {
        let (key, _, _) = fixture("cosign-p256-n15");
        for wrong in [&b"Ts7#pL-n15-sigstore: quartz vulture 4813"[..], b""] {
            let err = CosignSigner::from_pem("secret/attestd#cosign_key", &key, wrong).unwrap_err();
            assert!(matches!(err, KeyError::WrongPassword { .. }), "{err}");
            let text = err.to_string();
            assert!(text.contains("secret/attestd#cosign_key"), "{text}");
            assert!(text.contains("wrong password"), "{text}");
            assert!(!text.contains("quartz"), "{text}");
        }
        // A key encrypted with the empty password is not opened by a non-empty one.
        let (key, _, _) = fixture("cosign-p256-empty-password");
        let err = CosignSigner::from_pem("cosign.key", &key, b"x").unwrap_err();
        assert!(matches!(err, KeyError::WrongPassword { .. }), "{err}");
    }

    #[test]
    fn p384_and_ed25519_keys_are_refused_naming_the_algorithm() {
        for (name, algorithm) in [
            ("cosign-p384-n15", "ECDSA P-384"),
            ("cosign-ed25519-n15", "Ed25519"),
            ("plain-p384", "ECDSA P-384"),
            ("plain-ed25519", "Ed25519"),
        ] {
            let (key, password, _) = fixture(name);
            let err = CosignSigner::from_pem(name, &key, &password).unwrap_err();
            assert!(
                matches!(&err, KeyError::UnsupportedAlgorithm { algorithm: a, .. } if *a == algorithm),
                "{name}: {err}"
            );
            let text = err.to_string();
            assert!(text.contains(name) && text.contains(algorithm), "{text}");
            assert!(text.contains("ECDSA P-256 only"), "{text}");
        }
    }

    #[test]
    fn corrupt_encrypted_pem_is_refused_as_malformed() {
        let (key, password, _) = fixture("cosign-p256-n15");
        let mut text = String::from_utf8(key).unwrap();
        // Drop one base64 line from the middle of the body.
        let lines: Vec<&str> = text.lines().collect();
        text = [&lines[..3], &lines[4..]].concat().join("\n");
        let err = CosignSigner::from_pem("cosign.key", text.as_bytes(), &password).unwrap_err();
        assert!(matches!(err, KeyError::Malformed { .. }), "{err}");
        assert!(err.to_string().starts_with("key cosign.key: "), "{err}");
    }

    #[test]
    fn sigstore_decrypts_the_same_fixture_to_the_same_public_key() {
        // Cross-check of our decryption against sigstore-rs, for the N it accepts.
        let (key, password, _) = fixture("cosign-p256-n16-cosign-label");
        let ours = CosignSigner::from_pem("k", &key, &password).unwrap();
        let theirs =
            sigstore::crypto::signing_key::SigStoreKeyPair::from_encrypted_pem(&key, &password)
                .unwrap();
        assert_eq!(theirs.public_key_to_der().unwrap(), ours.public_key_der());
    }

    #[test]
    fn garbage_and_unknown_labels_are_refused_naming_the_reference() {
        let err = CosignSigner::from_pem("kv/keys#release", b"not a pem", b"").unwrap_err();
        assert!(
            err.to_string().starts_with("key kv/keys#release: "),
            "{err}"
        );

        let cert = pem::encode(&pem::Pem::new("CERTIFICATE", vec![1, 2, 3]));
        let err = CosignSigner::from_pem("cosign.key", cert.as_bytes(), b"").unwrap_err();
        assert!(err.to_string().contains("CERTIFICATE"), "{err}");

        let plain = pem::encode(&pem::Pem::new(PKCS8_LABEL, generated_pkcs8()));
        let err = CosignSigner::from_pem("cosign.key", plain.as_bytes(), b"pw").unwrap_err();
        assert!(err.to_string().contains("not encrypted"), "{err}");
    }

    #[test]
    fn excessive_scrypt_work_factor_is_refused_before_deriving() {
        let body = serde_json::json!({
            "kdf": {"name": "scrypt", "params": {"N": 1u64 << 20, "r": 8, "p": 1}, "salt": "AAAA"},
            "cipher": {"name": "nacl/secretbox", "nonce": STANDARD.encode([0u8; 24])},
            "ciphertext": "AAAA",
        });
        let pem = pem::encode(&pem::Pem::new(
            SIGSTORE_LABEL,
            serde_json::to_vec(&body).unwrap(),
        ));
        let started = std::time::Instant::now();
        let err = CosignSigner::from_pem("cosign.key", pem.as_bytes(), b"").unwrap_err();
        assert!(err.to_string().contains("N=1048576"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
    }
}
