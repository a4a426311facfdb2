//! `attestd::registry` against a real distribution registry. Everything pushed is read back with
//! plain reqwest (a client the push did not use) and checked the way cosign or a user would.

use std::sync::Arc;
use std::time::Duration;

use attestd::config::PushFormat;
use attestd::domain::dsse::{self, IN_TOTO_PAYLOAD_TYPE};
use attestd::domain::{Digest, ImageRef};
use attestd::registry::{
    AttestationSource, ErrorCode, PushOutcome, PushRequest, Registries, RegistryError,
};
use attestd::secrets::SecretSource;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::Verifier as _;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::support::registry::{MapSecrets, OCI_INDEX, OCI_MANIFEST, TestRegistry};

const REPO: &str = "team/app";
const SLSA: &str = "https://slsa.dev/provenance/v1";
const DSSE_LAYER: &str = "application/vnd.dsse.envelope.v1+json";
const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// A P-256 key generated per test: signs with aws-lc-rs, verifies with RustCrypto's p256.
struct TestKey {
    pair: EcdsaKeyPair,
    /// The SubjectPublicKeyInfo DER, encoded by p256.
    spki_der: Vec<u8>,
    /// Hex SHA-256 of `spki_der`, as attestd names keys.
    id: String,
}

impl TestKey {
    fn new() -> Self {
        use p256::pkcs8::EncodePublicKey as _;
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).expect("generate key");
        let spki_der = p256::PublicKey::from_sec1_bytes(pair.public_key().as_ref())
            .expect("p256 public key")
            .to_public_key_der()
            .expect("SPKI DER")
            .into_vec();
        let id = hex::encode(sha2::Sha256::digest(&spki_der));
        Self { pair, spki_der, id }
    }

    /// A signed DSSE envelope over an in-toto statement about `image@digest`; `marker` makes
    /// envelopes distinct.
    fn envelope(&self, image: &ImageRef, digest: &Digest, marker: &str) -> Vec<u8> {
        let statement = serde_json::to_vec(&json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": image.name(), "digest": {"sha256": digest.hex()}}],
            "predicateType": SLSA,
            "predicate": {"buildDefinition": {"buildType": "test", "externalParameters": {"marker": marker}}},
        }))
        .expect("statement JSON");
        let sig = self
            .pair
            .sign(
                &SystemRandom::new(),
                &dsse::pae(IN_TOTO_PAYLOAD_TYPE, &statement),
            )
            .expect("sign");
        let env = dsse::Envelope::new(IN_TOTO_PAYLOAD_TYPE, &statement, &self.id, sig.as_ref());
        serde_json::to_vec(&env).expect("envelope JSON")
    }

    /// Verify the envelope's signature over PAE with p256 and return the statement.
    fn verify(&self, envelope: &[u8]) -> Value {
        let env: Value = serde_json::from_slice(envelope).expect("envelope JSON");
        let payload = STANDARD
            .decode(env["payload"].as_str().expect("payload"))
            .expect("payload base64");
        let sig = STANDARD
            .decode(env["signatures"][0]["sig"].as_str().expect("sig"))
            .expect("sig base64");
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(self.pair.public_key().as_ref())
            .expect("p256 public key");
        let sig = p256::ecdsa::Signature::from_der(&sig).expect("DER signature");
        key.verify(
            &dsse::pae(env["payloadType"].as_str().expect("payloadType"), &payload),
            &sig,
        )
        .expect("the DSSE signature verifies with p256");
        serde_json::from_slice(&payload).expect("statement JSON")
    }
}

fn registries(
    reg: &TestRegistry,
    format: PushFormat,
    secrets: impl SecretSource + 'static,
) -> Registries {
    Registries::new(&[reg.settings(format)], Arc::new(secrets)).expect("registries")
}

fn image(reg: &TestRegistry, repo: &str) -> ImageRef {
    format!("{}/{repo}:v1", reg.host())
        .parse()
        .expect("image ref")
}

async fn push(
    regs: &Registries,
    image: &ImageRef,
    digest: &Digest,
    envelope: &[u8],
    key: &TestKey,
) -> Result<PushOutcome, RegistryError> {
    regs.push(&PushRequest {
        image,
        digest,
        envelope,
        predicate_type: SLSA,
        key_id: &key.id,
    })
    .await
}

fn att_tag(digest: &Digest) -> String {
    format!("sha256-{}.att", digest.hex())
}

fn layer_digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_owned())
        .collect()
}

#[tokio::test]
async fn attestation_pushed_anonymously_reads_back_with_another_client_and_verifies() {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "v1").await;
    let image = image(&reg, REPO);
    let key = TestKey::new();
    let envelope = key.envelope(&image, &digest, "one");
    let regs = registries(&reg, PushFormat::Att, MapSecrets::empty());

    let outcome = push(&regs, &image, &digest, &envelope, &key).await.unwrap();
    assert_eq!(
        outcome.reference,
        format!("{}/{REPO}:{}", reg.host(), att_tag(&digest))
    );
    assert!(!outcome.already_present);
    assert_eq!(outcome.referrer, None);

    let (content_type, body) = reg.manifest(REPO, &att_tag(&digest)).await.unwrap();
    assert_eq!(content_type, OCI_MANIFEST);
    assert_eq!(Digest::of(&body).as_str(), outcome.manifest_digest);
    let manifest: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], OCI_MANIFEST);
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], DSSE_LAYER);
    assert_eq!(layers[0]["size"], envelope.len());
    assert_eq!(
        layers[0]["annotations"],
        json!({"predicateType": SLSA, "dev.cosignproject.cosign/signature": ""})
    );

    let layer_digest = layers[0]["digest"].as_str().unwrap();
    assert_eq!(reg.blob(REPO, layer_digest).await, envelope);

    let config_bytes = reg
        .blob(REPO, manifest["config"]["digest"].as_str().unwrap())
        .await;
    let config: Value = serde_json::from_slice(&config_bytes).unwrap();
    assert_eq!(config["architecture"], "");
    assert_eq!(config["os"], "");
    assert_eq!(
        config["rootfs"],
        json!({"type": "layers", "diff_ids": [layer_digest]})
    );
    assert_eq!(
        config["history"],
        json!([{"created": "0001-01-01T00:00:00Z"}])
    );

    let statement = key.verify(&reg.blob(REPO, layer_digest).await);
    assert_eq!(statement["subject"][0]["digest"]["sha256"], digest.hex());
    assert_eq!(statement["subject"][0]["name"], image.name());

    assert_eq!(regs.resolve(&image).await.unwrap(), digest);
    let fetched = regs.fetch_attestations(&image, &digest).await.unwrap();
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].envelope, envelope);
    assert_eq!(fetched[0].source, AttestationSource::AttTag);
    assert_eq!(fetched[0].annotations["predicateType"], SLSA);
}

#[tokio::test]
async fn tls_registry_with_basic_auth_takes_the_push_and_refuses_a_wrong_password() {
    let reg = TestRegistry::tls_basic("attestd", "s3cret-pass").await;
    let digest = reg.push_image(REPO, "v1").await;
    let image = image(&reg, REPO);
    let key = TestKey::new();
    let envelope = key.envelope(&image, &digest, "tls");

    let regs = registries(
        &reg,
        PushFormat::Att,
        MapSecrets::with("registry-password", "s3cret-pass"),
    );
    let outcome = push(&regs, &image, &digest, &envelope, &key).await.unwrap();
    assert!(!outcome.already_present);
    let manifest = reg.manifest_json(REPO, &att_tag(&digest)).await;
    let layer = &layer_digests(&manifest)[0];
    key.verify(&reg.blob(REPO, layer).await);
    assert_eq!(reg.blob(REPO, layer).await, envelope);

    let wrong = registries(
        &reg,
        PushFormat::Att,
        MapSecrets::with("registry-password", "not-the-password"),
    );
    let other = key.envelope(&image, &digest, "wrong password");
    let err = push(&wrong, &image, &digest, &other, &key)
        .await
        .unwrap_err();
    assert!(
        err.is_retryable(),
        "a password may be mid-rotation: {err:?}"
    );
    assert_eq!(err.code(), ErrorCode::Unauthorized, "{err:?}");
    assert!(err.to_string().contains("credentials"), "{err}");
    assert!(!err.to_string().contains("not-the-password"), "{err}");

    let missing = registries(&reg, PushFormat::Att, MapSecrets::empty());
    let err = push(&missing, &image, &digest, &other, &key)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::SecretNotFound, "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn foreign_attestation_layer_survives_and_the_same_envelope_is_not_added_twice() {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "v1").await;
    let image = image(&reg, REPO);
    let key = TestKey::new();

    // Someone else's SBOM attestation, already under the .att tag.
    let sbom = br#"{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"sig":"AAAA"}]}"#;
    let sbom_digest = reg.put_blob(REPO, sbom).await;
    let config = format!(
        r#"{{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{{"created":"0001-01-01T00:00:00Z"}}],"os":"","rootfs":{{"type":"layers","diff_ids":["{sbom_digest}"]}},"config":{{}}}}"#
    );
    let config_digest = reg.put_blob(REPO, config.as_bytes()).await;
    let foreign = json!({
        "mediaType": DSSE_LAYER, "digest": sbom_digest.as_str(), "size": sbom.len(),
        "annotations": {"predicateType": "https://spdx.dev/Document",
                        "dev.cosignproject.cosign/signature": "", "org.example/tool": "syft"},
    });
    let foreign_manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest.as_str(), "size": config.len()},
        "layers": [foreign],
    }))
    .unwrap();
    reg.put_manifest(REPO, &att_tag(&digest), OCI_MANIFEST, &foreign_manifest)
        .await;

    let regs = registries(&reg, PushFormat::Att, MapSecrets::empty());
    let envelope = key.envelope(&image, &digest, "ours");
    let first = push(&regs, &image, &digest, &envelope, &key).await.unwrap();
    let manifest = reg.manifest_json(REPO, &att_tag(&digest)).await;
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0], foreign, "the foreign layer is kept verbatim");
    assert_eq!(layers[1]["digest"], Digest::of(&envelope).as_str());
    let config: Value = serde_json::from_slice(
        &reg.blob(REPO, manifest["config"]["digest"].as_str().unwrap())
            .await,
    )
    .unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"],
        json!(layer_digests(&manifest))
    );
    assert_eq!(config["history"].as_array().unwrap().len(), 2);

    let (_, before) = reg.manifest(REPO, &att_tag(&digest)).await.unwrap();
    let again = push(&regs, &image, &digest, &envelope, &key).await.unwrap();
    assert!(again.already_present);
    assert_eq!(again.manifest_digest, first.manifest_digest);
    let (_, after) = reg.manifest(REPO, &att_tag(&digest)).await.unwrap();
    assert_eq!(before, after, "a repeated push writes nothing");

    let fetched = regs.fetch_attestations(&image, &digest).await.unwrap();
    assert_eq!(fetched.len(), 2);
    assert_eq!(fetched[0].envelope, sbom.to_vec());
    assert_eq!(fetched[0].annotations["org.example/tool"], "syft");
    assert_eq!(fetched[1].envelope, envelope);
}

#[tokio::test]
async fn three_envelopes_pushed_in_turn_become_three_layers_in_order() {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "v1").await;
    let image = image(&reg, REPO);
    let key = TestKey::new();
    let regs = registries(&reg, PushFormat::Att, MapSecrets::empty());

    let envelopes: Vec<Vec<u8>> = ["a", "b", "c"]
        .iter()
        .map(|m| key.envelope(&image, &digest, m))
        .collect();
    for env in &envelopes {
        assert!(
            !push(&regs, &image, &digest, env, &key)
                .await
                .unwrap()
                .already_present
        );
    }
    let manifest = reg.manifest_json(REPO, &att_tag(&digest)).await;
    let expected: Vec<String> = envelopes
        .iter()
        .map(|e| Digest::of(e).to_string())
        .collect();
    assert_eq!(layer_digests(&manifest), expected);
    for (layer, env) in expected.iter().zip(&envelopes) {
        assert_eq!(&reg.blob(REPO, layer).await, env);
        key.verify(env);
    }
}

#[tokio::test]
async fn blobs_uploaded_before_a_crash_leave_exactly_one_layer_after_the_retry() {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "v1").await;
    let image = image(&reg, REPO);
    let key = TestKey::new();
    let regs = registries(&reg, PushFormat::Att, MapSecrets::empty());
    let envelope = key.envelope(&image, &digest, "crash");
    let req = PushRequest {
        image: &image,
        digest: &digest,
        envelope: &envelope,
        predicate_type: SLSA,
        key_id: &key.id,
    };

    regs.upload_att_blobs_only(&req).await.unwrap();
    assert!(reg.manifest(REPO, &att_tag(&digest)).await.is_none());
    assert_eq!(
        reg.blob(REPO, Digest::of(&envelope).as_str()).await,
        envelope
    );

    let outcome = regs.push(&req).await.unwrap();
    assert!(!outcome.already_present);
    let manifest = reg.manifest_json(REPO, &att_tag(&digest)).await;
    assert_eq!(
        layer_digests(&manifest),
        vec![Digest::of(&envelope).to_string()]
    );

    // A crash after the manifest write (before the job was marked done) is also harmless.
    regs.upload_att_blobs_only(&req).await.unwrap();
    assert!(regs.push(&req).await.unwrap().already_present);
    let manifest = reg.manifest_json(REPO, &att_tag(&digest)).await;
    assert_eq!(layer_digests(&manifest).len(), 1);
}

#[tokio::test]
async fn referrers_format_writes_a_bundle_referrer_and_appends_to_the_fallback_index() {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "v1").await;
    let (_, image_manifest) = reg.manifest(REPO, digest.as_str()).await.unwrap();
    let image = image(&reg, REPO);
    let key = TestKey::new();
    let regs = registries(&reg, PushFormat::Referrers, MapSecrets::empty());

    let first_env = key.envelope(&image, &digest, "first");
    let first = push(&regs, &image, &digest, &first_env, &key)
        .await
        .unwrap();
    assert!(!first.already_present);
    let referrer = first.referrer.clone().unwrap();
    let first_digest = referrer.rsplit_once('@').unwrap().1.to_owned();
    assert_eq!(first.manifest_digest, first_digest);
    assert!(
        reg.manifest(REPO, &att_tag(&digest)).await.is_none(),
        "referrers-only mode writes no .att tag"
    );

    let (content_type, body) = reg.manifest(REPO, &first_digest).await.unwrap();
    assert_eq!(content_type, OCI_MANIFEST);
    assert_eq!(Digest::of(&body).as_str(), first_digest);
    let m: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(m["mediaType"], OCI_MANIFEST);
    assert_eq!(m["artifactType"], BUNDLE);
    assert_eq!(
        m["subject"],
        json!({"mediaType": OCI_MANIFEST, "digest": digest.as_str(), "size": image_manifest.len()})
    );
    assert_eq!(
        m["config"],
        json!({"mediaType": "application/vnd.oci.empty.v1+json",
               "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
               "size": 2})
    );
    assert_eq!(
        reg.blob(REPO, m["config"]["digest"].as_str().unwrap())
            .await,
        b"{}"
    );
    assert_eq!(m["layers"].as_array().unwrap().len(), 1);
    assert_eq!(m["layers"][0]["mediaType"], BUNDLE);
    let bundle: Value = serde_json::from_slice(
        &reg.blob(REPO, m["layers"][0]["digest"].as_str().unwrap())
            .await,
    )
    .unwrap();
    assert_eq!(bundle["mediaType"], BUNDLE);
    assert_eq!(
        bundle["verificationMaterial"]["publicKey"]["hint"],
        STANDARD.encode(sha2::Sha256::digest(&key.spki_der)),
        "cosign's hint: standard base64 of the SHA-256 of the public key's DER"
    );
    let embedded = serde_json::to_vec(&bundle["dsseEnvelope"]).unwrap();
    assert_eq!(
        bundle["dsseEnvelope"],
        serde_json::from_slice::<Value>(&first_env).unwrap()
    );
    let statement = key.verify(&embedded);
    assert_eq!(statement["subject"][0]["digest"]["sha256"], digest.hex());

    let fallback = format!("sha256-{}", digest.hex());
    let (content_type, index) = reg.manifest(REPO, &fallback).await.unwrap();
    assert_eq!(content_type, OCI_INDEX);
    let index: Value = serde_json::from_slice(&index).unwrap();
    assert_eq!(index["mediaType"], OCI_INDEX);
    let entries = index["manifests"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["digest"], first_digest.as_str());
    assert_eq!(entries[0]["mediaType"], OCI_MANIFEST);
    assert_eq!(entries[0]["size"], body.len());
    assert_eq!(entries[0]["artifactType"], BUNDLE);
    assert_eq!(
        entries[0]["annotations"]["dev.sigstore.bundle.predicateType"],
        SLSA
    );

    let second_env = key.envelope(&image, &digest, "second");
    let second = push(&regs, &image, &digest, &second_env, &key)
        .await
        .unwrap();
    let index = reg.manifest_json(REPO, &fallback).await;
    let after = index["manifests"].as_array().unwrap();
    assert_eq!(after.len(), 2);
    assert_eq!(after[0], entries[0], "the first referrer is kept verbatim");
    assert_eq!(after[1]["digest"], second.manifest_digest.as_str());

    assert!(
        push(&regs, &image, &digest, &first_env, &key)
            .await
            .unwrap()
            .already_present
    );
    assert_eq!(
        reg.manifest_json(REPO, &fallback).await["manifests"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let fetched = regs.fetch_attestations(&image, &digest).await.unwrap();
    let envelopes: Vec<&Vec<u8>> = fetched.iter().map(|f| &f.envelope).collect();
    assert_eq!(envelopes, vec![&first_env, &second_env]);
    assert!(matches!(
        &fetched[0].source,
        AttestationSource::Referrer { manifest_digest } if *manifest_digest == first_digest
    ));
}

#[tokio::test]
async fn both_formats_write_the_att_tag_and_a_referrer() {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "v1").await;
    let image = image(&reg, REPO);
    let key = TestKey::new();
    let regs = registries(&reg, PushFormat::Both, MapSecrets::empty());
    let envelope = key.envelope(&image, &digest, "both");

    let outcome = push(&regs, &image, &digest, &envelope, &key).await.unwrap();
    assert!(outcome.reference.ends_with(&att_tag(&digest)));
    let att = reg.manifest_json(REPO, &att_tag(&digest)).await;
    assert_eq!(layer_digests(&att), vec![Digest::of(&envelope).to_string()]);
    let index = reg
        .manifest_json(REPO, &format!("sha256-{}", digest.hex()))
        .await;
    let referrer = outcome.referrer.unwrap();
    assert_eq!(
        index["manifests"][0]["digest"],
        referrer.rsplit_once('@').unwrap().1
    );
    assert!(
        push(&regs, &image, &digest, &envelope, &key)
            .await
            .unwrap()
            .already_present
    );
    let fetched = regs.fetch_attestations(&image, &digest).await.unwrap();
    assert_eq!(fetched.len(), 2, "one from .att, one from the referrer");
    assert!(fetched.iter().all(|f| f.envelope == envelope));
}

#[tokio::test]
async fn a_digest_missing_from_the_registry_is_a_permanent_not_found() {
    let reg = TestRegistry::anonymous().await;
    reg.push_image(REPO, "v1").await;
    let image = image(&reg, REPO);
    let missing = Digest::of(b"never pushed");
    let key = TestKey::new();
    let regs = registries(&reg, PushFormat::Both, MapSecrets::empty());
    let envelope = key.envelope(&image, &missing, "missing");

    let err = push(&regs, &image, &missing, &envelope, &key)
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
    assert_eq!(err.code(), ErrorCode::ImageNotFound);
    assert_eq!(
        err.to_string(),
        format!(
            "image manifest {missing} not found in {}/{REPO}",
            reg.host()
        )
    );
    assert!(reg.manifest(REPO, &att_tag(&missing)).await.is_none());
}

#[tokio::test]
async fn a_stopped_registry_is_retryable_and_the_push_succeeds_after_restart() {
    let mut reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "v1").await;
    let image = image(&reg, REPO);
    let key = TestKey::new();
    let regs = registries(&reg, PushFormat::Att, MapSecrets::empty());
    let envelope = key.envelope(&image, &digest, "outage");

    reg.stop();
    let err = push(&regs, &image, &digest, &envelope, &key)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(err.code(), ErrorCode::Unavailable);

    reg.restart().await;
    let outcome = push(&regs, &image, &digest, &envelope, &key).await.unwrap();
    assert!(!outcome.already_present);
    let manifest = reg.manifest_json(REPO, &att_tag(&digest)).await;
    assert_eq!(
        layer_digests(&manifest),
        vec![Digest::of(&envelope).to_string()]
    );
}

#[tokio::test]
async fn a_host_not_in_the_configuration_is_refused_without_any_request() {
    let reg = TestRegistry::anonymous().await;
    let regs = registries(&reg, PushFormat::Att, MapSecrets::empty());
    // A listener on another loopback port stands in for the unlisted registry.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    assert!(!regs.is_allowed(&host));
    assert!(regs.is_allowed(&reg.host()));

    let image: ImageRef = format!("{host}/{REPO}:v1").parse().unwrap();
    let digest = Digest::of(b"anything");
    let key = TestKey::new();
    let envelope = key.envelope(&image, &digest, "unlisted");
    let err = push(&regs, &image, &digest, &envelope, &key)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::RegistryNotConfigured);
    assert!(!err.is_retryable());
    assert!(err.to_string().contains(&host), "{err}");
    let fetch = regs.fetch_attestations(&image, &digest).await.unwrap_err();
    assert_eq!(fetch.code(), ErrorCode::RegistryNotConfigured);
    let resolve = regs.resolve(&image).await.unwrap_err();
    assert_eq!(resolve.code(), ErrorCode::RegistryNotConfigured);

    let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(accepted.is_err(), "attestd connected to an unlisted host");
}

#[tokio::test]
async fn skopeo_reads_the_att_manifest() {
    let skopeo = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("skopeo"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "skopeo not found: run ./scripts/test (it installs it) or apt-get install skopeo"
            )
        });
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "v1").await;
    let image = image(&reg, REPO);
    let key = TestKey::new();
    let regs = registries(&reg, PushFormat::Att, MapSecrets::empty());
    let envelope = key.envelope(&image, &digest, "skopeo");
    push(&regs, &image, &digest, &envelope, &key).await.unwrap();

    let out = tokio::process::Command::new(skopeo)
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!(
            "docker://{}/{REPO}:{}",
            reg.host(),
            att_tag(&digest)
        ))
        .output()
        .await
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: Value = serde_json::from_slice(&out.stdout).expect("skopeo prints the manifest");
    assert_eq!(manifest["mediaType"], OCI_MANIFEST);
    assert_eq!(
        layer_digests(&manifest),
        vec![Digest::of(&envelope).to_string()]
    );
}
