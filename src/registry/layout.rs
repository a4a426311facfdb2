//! The bytes attestd writes to a registry, as pure functions: cosign's `.att` manifest and config,
//! the Sigstore bundle, the OCI 1.1 referrer manifest and the referrers tag-schema index.
//! Existing descriptors are carried as raw JSON so foreign entries survive a rewrite unchanged.

use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::domain::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DSSE_LAYER: &str = "application/vnd.dsse.envelope.v1+json";
pub const SIGSTORE_BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// The OCI empty descriptor's blob, `{}`.
pub const EMPTY_BLOB: &[u8] = b"{}";
pub const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
/// Layer annotation cosign reads the predicate type from.
pub const ANNOTATION_PREDICATE_TYPE: &str = "predicateType";
/// Layer annotation cosign expects on attestation layers (empty for DSSE).
pub const ANNOTATION_COSIGN_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
/// cosign readers stop at this many layers; attestd refuses to write more.
pub const MAX_ATT_LAYERS: usize = 1000;

/// Every manifest type a registry may answer with when we read one.
pub const ACCEPTED_MANIFESTS: &[&str] = &[
    OCI_MANIFEST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
];

/// cosign's tag for attestations of `digest`: `sha256-<hex>.att`.
pub fn att_tag(digest: &Digest) -> String {
    format!("sha256-{}.att", digest.hex())
}

/// The referrers tag-schema tag for `digest`: `sha256-<hex>`.
pub fn referrers_tag(digest: &Digest) -> String {
    format!("sha256-{}", digest.hex())
}

/// A content descriptor serialized as JSON.
pub fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({
        "mediaType": media_type,
        "digest": Digest::of(bytes).as_str(),
        "size": bytes.len(),
    })
}

/// The descriptor of the DSSE layer attestd appends to the `.att` manifest.
pub fn dsse_layer(envelope: &[u8], predicate_type: &str) -> Value {
    let mut d = descriptor(DSSE_LAYER, envelope);
    d["annotations"] = json!({
        ANNOTATION_PREDICATE_TYPE: predicate_type,
        ANNOTATION_COSIGN_SIGNATURE: "",
    });
    d
}

/// The digest string of a raw descriptor, if it has one.
pub fn digest_of(descriptor: &Value) -> Option<&str> {
    descriptor.get("digest").and_then(Value::as_str)
}

/// cosign's image config for a signature/attestation "image": zero timestamps, empty platform,
/// one `diff_ids` entry and one history entry per layer (layers are stored uncompressed, so the
/// diff id is the layer digest). Written with a fixed field order, as go-containerregistry does.
pub fn cosign_config(layer_digests: &[&str]) -> Vec<u8> {
    let history = vec![r#"{"created":"0001-01-01T00:00:00Z"}"#; layer_digests.len()].join(",");
    let diff_ids = serde_json::to_string(layer_digests).unwrap_or_else(|_| "[]".into());
    format!(
        r#"{{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{history}],"os":"","rootfs":{{"type":"layers","diff_ids":{diff_ids}}},"config":{{}}}}"#
    )
    .into_bytes()
}

/// A planned `.att` manifest: its layers (existing ones verbatim, then ours) and blobs to upload.
#[derive(Debug, Clone)]
pub struct AttManifest {
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

/// What to do with the `.att` tag for one new envelope.
#[derive(Debug, Clone)]
pub enum AttPlan {
    /// A layer with the envelope's digest is already listed.
    AlreadyPresent,
    /// Write this manifest (existing layers kept, the new one appended).
    Write(AttManifest),
    /// The manifest already holds the maximum number of layers.
    Full(usize),
}

/// Plan the `.att` manifest: `existing` is the current manifest body under the tag, if any.
pub fn plan_att(
    existing: Option<&[u8]>,
    envelope: &[u8],
    predicate_type: &str,
) -> Result<AttPlan, String> {
    let new_layer = dsse_layer(envelope, predicate_type);
    let new_digest = digest_of(&new_layer).unwrap_or_default().to_owned();
    let (mut layers, annotations) = match existing {
        None => (Vec::new(), None),
        Some(body) => {
            let m: Value = serde_json::from_slice(body)
                .map_err(|e| format!("the existing attestation manifest is not JSON: {e}"))?;
            let layers = match m.get("layers") {
                Some(Value::Array(l)) => l.clone(),
                // An index or anything else under the tag is not ours to overwrite.
                _ => return Err("the tag holds something other than an image manifest".into()),
            };
            (layers, m.get("annotations").cloned())
        }
    };
    if layers.iter().any(|l| digest_of(l) == Some(&new_digest)) {
        return Ok(AttPlan::AlreadyPresent);
    }
    if layers.len() >= MAX_ATT_LAYERS {
        return Ok(AttPlan::Full(layers.len()));
    }
    layers.push(new_layer);
    let digests: Vec<&str> = layers.iter().filter_map(digest_of).collect();
    if digests.len() != layers.len() {
        return Err("the existing attestation manifest has a layer without a digest".into());
    }
    let config = cosign_config(&digests);
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": layers,
    });
    if let Some(a) = annotations.filter(|a| a.as_object().is_some_and(|o| !o.is_empty())) {
        manifest["annotations"] = a;
    }
    Ok(AttPlan::Write(AttManifest {
        config,
        manifest: to_vec(&manifest),
    }))
}

/// The bundle's `verificationMaterial.publicKey.hint` for the key with hex key id `key_id`: the
/// standard (padded) base64 of the SHA-256 of the SubjectPublicKeyInfo DER, which is how cosign
/// writes it (sigstore/cosign at d6d86c2, `internal/key/svkeypair.go` `NewSignerVerifierKeypair`:
/// `base64.StdEncoding.EncodeToString(sha256.Sum256(x509.MarshalPKIXPublicKey(pub)))`; the same
/// in `cmd/cosign/cli/verify/verify_bundle.go`). The key id is that same digest in hex.
pub fn public_key_hint(key_id: &str) -> Result<String, String> {
    use base64::Engine as _;
    let digest = hex::decode(key_id)
        .ok()
        .filter(|d| d.len() == 32)
        .ok_or_else(|| format!("key id {key_id:?} is not a hex SHA-256"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(digest))
}

/// A Sigstore bundle v0.3 carrying `envelope` verbatim and naming the key `key_id` (hex) by
/// its cosign [`public_key_hint`]. Bundles attestd wrote before carried the hex key id as the
/// hint; readers take only the envelope, so those still read.
pub fn sigstore_bundle(envelope: &[u8], key_id: &str) -> Result<Vec<u8>, String> {
    let env: &RawValue = serde_json::from_slice(envelope)
        .map_err(|e| format!("the DSSE envelope is not JSON: {e}"))?;
    let material = serde_json::to_string(&json!({
        "publicKey": { "hint": public_key_hint(key_id)? },
        "tlogEntries": [],
    }))
    .map_err(|e| e.to_string())?;
    Ok(format!(
        r#"{{"mediaType":"{SIGSTORE_BUNDLE_V03}","verificationMaterial":{material},"dsseEnvelope":{}}}"#,
        env.get()
    )
    .into_bytes())
}

/// The DSSE envelope bytes inside a Sigstore bundle, exactly as embedded.
pub fn envelope_from_bundle(bundle: &[u8]) -> Result<Vec<u8>, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Bundle<'a> {
        #[serde(borrow)]
        dsse_envelope: Option<&'a RawValue>,
    }
    let b: Bundle<'_> =
        serde_json::from_slice(bundle).map_err(|e| format!("the bundle is not JSON: {e}"))?;
    b.dsse_envelope
        .map(|e| e.get().as_bytes().to_vec())
        .ok_or_else(|| "the bundle carries no dsseEnvelope".into())
}

/// Annotations on the referrer manifest (and copied into its index entry).
pub fn referrer_annotations(predicate_type: &str) -> Value {
    json!({
        "dev.sigstore.bundle.content": "dsse-envelope",
        "dev.sigstore.bundle.predicateType": predicate_type,
    })
}

/// The OCI 1.1 referrer manifest for `bundle`, whose subject is the image manifest `subject`.
/// It has no timestamp, so the same envelope always yields the same manifest digest.
pub fn referrer_manifest(bundle: &[u8], subject: &Value, predicate_type: &str) -> Vec<u8> {
    to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SIGSTORE_BUNDLE_V03,
        "config": descriptor(OCI_EMPTY, EMPTY_BLOB),
        "layers": [descriptor(SIGSTORE_BUNDLE_V03, bundle)],
        "subject": subject,
        "annotations": referrer_annotations(predicate_type),
    }))
}

/// The index entry describing a referrer manifest.
pub fn referrer_entry(manifest: &[u8], predicate_type: &str) -> Value {
    let mut d = descriptor(OCI_MANIFEST, manifest);
    d["artifactType"] = json!(SIGSTORE_BUNDLE_V03);
    d["annotations"] = referrer_annotations(predicate_type);
    d
}

/// The referrers tag-schema index with `entry` appended, or `None` if it is already listed.
/// Existing entries are kept as they are.
pub fn plan_referrers_index(
    existing: Option<&[u8]>,
    entry: Value,
) -> Result<Option<Vec<u8>>, String> {
    let mut index = match existing {
        None => json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [] }),
        Some(body) => {
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| format!("the referrers index is not JSON: {e}"))?;
            if !v.get("manifests").is_some_and(Value::is_array) {
                return Err("the referrers tag does not hold an image index".into());
            }
            v
        }
    };
    let Some(Value::Array(manifests)) = index.get_mut("manifests") else {
        return Err("the referrers tag does not hold an image index".into());
    };
    if manifests.iter().any(|m| digest_of(m) == digest_of(&entry)) {
        return Ok(None);
    }
    manifests.push(entry);
    if let Some(obj) = index.as_object_mut() {
        obj.insert("mediaType".into(), json!(OCI_INDEX));
    }
    Ok(Some(to_vec(&index)))
}

/// The subject descriptor of a manifest read from the registry.
pub fn subject_descriptor(body: &[u8], digest: &Digest) -> Value {
    let parsed: Option<Map<String, Value>> = serde_json::from_slice(body).ok();
    let media_type = parsed
        .as_ref()
        .and_then(|m| {
            m.get("mediaType")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| {
            if parsed.as_ref().is_some_and(|m| m.contains_key("manifests")) {
                OCI_INDEX.to_owned()
            } else {
                OCI_MANIFEST.to_owned()
            }
        });
    json!({ "mediaType": media_type, "digest": digest.as_str(), "size": body.len() })
}

/// Whether a manifest body lists a layer with `digest`.
pub fn lists_layer(body: &[u8], digest: &str) -> bool {
    lists(body, "layers", digest)
}

/// Whether an index body lists a manifest with `digest`.
pub fn lists_manifest(body: &[u8], digest: &str) -> bool {
    lists(body, "manifests", digest)
}

/// The layer digests a manifest body lists, in order (empty if it is not a manifest).
pub fn layer_digests(body: &[u8]) -> Vec<String> {
    listed(body, "layers")
}

/// The manifest digests an index body lists, in order (empty if it is not an index).
pub fn manifest_digests(body: &[u8]) -> Vec<String> {
    listed(body, "manifests")
}

/// Those of `expected` that `found` lacks, in `expected`'s order.
pub fn missing(expected: &[String], found: &[String]) -> Vec<String> {
    expected
        .iter()
        .filter(|d| !found.contains(d))
        .cloned()
        .collect()
}

fn listed(body: &[u8], field: &str) -> Vec<String> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get(field).and_then(Value::as_array).cloned())
        .map(|items| {
            items
                .iter()
                .filter_map(|d| digest_of(d).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn lists(body: &[u8], field: &str, digest: &str) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get(field).and_then(Value::as_array).cloned())
        .is_some_and(|items| items.iter().any(|d| digest_of(d) == Some(digest)))
}

fn to_vec(v: &Value) -> Vec<u8> {
    // Serializing a `Value` cannot fail: its keys are strings.
    serde_json::to_vec(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosign_config_matches_go_containerregistry_shape() {
        let d = format!("sha256:{}", "a".repeat(64));
        let c = String::from_utf8(cosign_config(&[&d])).unwrap();
        assert_eq!(
            c,
            format!(
                r#"{{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{{"created":"0001-01-01T00:00:00Z"}}],"os":"","rootfs":{{"type":"layers","diff_ids":["{d}"]}},"config":{{}}}}"#
            )
        );
        let v: Value = serde_json::from_str(&c).unwrap();
        assert_eq!(v["rootfs"]["diff_ids"][0], d);
    }

    #[test]
    fn empty_descriptor_constant_is_the_digest_of_empty_object() {
        assert_eq!(Digest::of(EMPTY_BLOB).as_str(), EMPTY_DIGEST);
    }

    #[test]
    fn plan_appends_after_foreign_layers_and_keeps_them_verbatim() {
        let foreign = json!({
            "mediaType": DSSE_LAYER, "digest": format!("sha256:{}", "b".repeat(64)), "size": 7,
            "annotations": {"predicateType": "https://spdx.dev/Document", "x": "y"},
            "urls": ["https://example.com/blob"],
        });
        let existing = to_vec(&json!({"schemaVersion": 2, "config": {}, "layers": [foreign]}));
        let AttPlan::Write(m) = plan_att(Some(&existing), b"{\"e\":1}", "p").unwrap() else {
            panic!("expected a write");
        };
        let v: Value = serde_json::from_slice(&m.manifest).unwrap();
        assert_eq!(v["mediaType"], OCI_MANIFEST);
        assert_eq!(v["layers"][0], foreign);
        assert_eq!(v["layers"][1]["digest"], Digest::of(b"{\"e\":1}").as_str());
        let cfg: Value = serde_json::from_slice(&m.config).unwrap();
        assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
        assert_eq!(cfg["history"].as_array().unwrap().len(), 2);
        assert_eq!(v["config"]["digest"], Digest::of(&m.config).as_str());
    }

    #[test]
    fn plan_is_idempotent_and_refuses_beyond_the_limit() {
        let AttPlan::Write(m) = plan_att(None, b"{}", "p").unwrap() else {
            panic!("expected a write");
        };
        assert!(matches!(
            plan_att(Some(&m.manifest), b"{}", "p").unwrap(),
            AttPlan::AlreadyPresent
        ));
        let layers: Vec<Value> = (0..MAX_ATT_LAYERS)
            .map(|i| descriptor(DSSE_LAYER, format!("{i}").as_bytes()))
            .collect();
        let full = to_vec(&json!({"schemaVersion": 2, "layers": layers}));
        assert!(matches!(
            plan_att(Some(&full), b"new", "p").unwrap(),
            AttPlan::Full(MAX_ATT_LAYERS)
        ));
    }

    #[test]
    fn plan_refuses_to_overwrite_what_is_not_an_image_manifest() {
        let index = to_vec(&json!({"schemaVersion": 2, "manifests": []}));
        assert!(plan_att(Some(&index), b"{}", "p").is_err());
    }

    #[test]
    fn bundle_embeds_the_envelope_bytes_unchanged() {
        let env = br#"{"payloadType":"t",  "payload":"cA==","signatures":[]}"#;
        let b = sigstore_bundle(env, &"ab".repeat(32)).unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["mediaType"], SIGSTORE_BUNDLE_V03);
        assert_eq!(envelope_from_bundle(&b).unwrap(), env.to_vec());
        assert!(sigstore_bundle(env, "kid").is_err(), "not a key id");
    }

    #[test]
    fn bundle_hint_is_cosigns_base64_sha256_of_the_public_key_der() {
        use base64::Engine as _;
        use sha2::Digest as _;
        let pem = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/keys/plain-p256.pub"),
        )
        .unwrap();
        let der = pem::parse(pem).unwrap().contents().to_vec();
        let digest = sha2::Sha256::digest(&der);
        let expected = base64::engine::general_purpose::STANDARD.encode(digest);
        assert_eq!(expected.len(), 44, "padded standard base64: {expected}");
        let key_id = crate::domain::KeyId::from_spki_der(&der);
        let b = sigstore_bundle(br#"{"payloadType":"t"}"#, key_id.as_str()).unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["verificationMaterial"]["publicKey"]["hint"], expected);
    }

    #[test]
    fn bundles_written_with_a_hex_hint_still_read() {
        let env = br#"{"payloadType":"t","payload":"cA==","signatures":[]}"#;
        let old = format!(
            r#"{{"mediaType":"{SIGSTORE_BUNDLE_V03}","verificationMaterial":{{"publicKey":{{"hint":"{}"}},"tlogEntries":[]}},"dsseEnvelope":{}}}"#,
            "ab".repeat(32),
            std::str::from_utf8(env).unwrap()
        );
        assert_eq!(envelope_from_bundle(old.as_bytes()).unwrap(), env.to_vec());
    }

    #[test]
    fn missing_names_the_expected_layers_a_read_back_lacks() {
        let AttPlan::Write(first) = plan_att(None, b"{\"a\":1}", "p").unwrap() else {
            panic!("expected a write");
        };
        let AttPlan::Write(both) = plan_att(Some(&first.manifest), b"{\"b\":2}", "p").unwrap()
        else {
            panic!("expected a write");
        };
        let expected = layer_digests(&both.manifest);
        assert_eq!(expected.len(), 2);
        assert!(missing(&expected, &layer_digests(&both.manifest)).is_empty());
        // Another writer's manifest that kept only the first layer.
        assert_eq!(
            missing(&expected, &layer_digests(&first.manifest)),
            vec![Digest::of(b"{\"b\":2}").to_string()]
        );
        assert_eq!(missing(&expected, &layer_digests(b"not json")), expected);
    }

    #[test]
    fn referrers_index_appends_and_never_drops_entries() {
        let a = referrer_entry(b"a", "p");
        let b = referrer_entry(b"b", "p");
        let first = plan_referrers_index(None, a.clone()).unwrap().unwrap();
        let second = plan_referrers_index(Some(&first), b.clone())
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&second).unwrap();
        assert_eq!(v["manifests"], json!([a, b]));
        assert!(plan_referrers_index(Some(&second), a).unwrap().is_none());
    }
}
