//! What a user checks after a fault: every image's `sha256-<hex>.att` manifest in the registry
//! lists the envelope of each execution that attested it exactly once, nothing else, and every
//! layer verifies with the public key attestd publishes. Signatures are checked with RustCrypto's
//! `p256`, which attestd does not sign with.

use std::collections::BTreeMap;

use attestd::domain::Digest;
use attestd::domain::dsse::pae;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt as _;
use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::DecodePublicKey as _;
use serde_json::Value;

use super::attestd::Attestd;
use super::registry::TestRegistry;

const DSSE_LAYER: &str = "application/vnd.dsse.envelope.v1+json";

/// An image pushed for a scenario.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Image {
    pub repo: String,
    pub tag: String,
    pub digest: String,
}

impl Image {
    /// `host/repo:tag`, as a webhook names it.
    pub fn reference(&self, host: &str) -> String {
        format!("{host}/{}:{}", self.repo, self.tag)
    }
}

/// Push `count` small unique images `repo:t<i>`, eight at a time.
pub async fn push_images(reg: &TestRegistry, repo: &str, count: usize) -> Vec<Image> {
    futures::stream::iter(0..count)
        .map(|i| async move {
            let tag = format!("t{i}");
            let digest = reg.push_image(repo, &tag).await;
            Image {
                repo: repo.to_owned(),
                tag,
                digest: digest.to_string(),
            }
        })
        .buffered(8)
        .collect()
        .await
}

/// Whether the DSSE envelope's first signature over its PAE verifies with `public_pem`.
pub fn verifies(envelope: &[u8], public_pem: &str) -> bool {
    let check = || -> Option<bool> {
        let env: Value = serde_json::from_slice(envelope).ok()?;
        let payload = STANDARD.decode(env["payload"].as_str()?).ok()?;
        let sig = STANDARD
            .decode(env["signatures"][0]["sig"].as_str()?)
            .ok()?;
        let sig = p256::ecdsa::DerSignature::try_from(sig.as_slice()).ok()?;
        let key = p256::ecdsa::VerifyingKey::from_public_key_pem(public_pem).ok()?;
        Some(
            key.verify(&pae(env["payloadType"].as_str()?, &payload), &sig)
                .is_ok(),
        )
    };
    check().unwrap_or(false)
}

/// (repository, image digest) -> the (execution id, envelope) of each execution attesting it.
pub type Expected = BTreeMap<(String, String), Vec<(String, Vec<u8>)>>;

/// What the API says each of `ids` attested: its artifacts and its envelope. Panics when an
/// execution is missing or unsigned.
pub async fn expected_from_api(app: &Attestd, ids: &[String]) -> Expected {
    let mut expected = Expected::new();
    let envelopes: Vec<(String, Value, Vec<u8>)> = futures::stream::iter(ids.iter().cloned())
        .map(|id| async move {
            let execution = app
                .execution(&id)
                .await
                .unwrap_or_else(|| panic!("execution {id} acknowledged but missing (404)"));
            let envelope = app
                .envelope(&id)
                .await
                .unwrap_or_else(|| panic!("execution {id} has no envelope"));
            (id, execution, envelope)
        })
        .buffered(8)
        .collect()
        .await;
    for (id, execution, envelope) in envelopes {
        for artifact in execution["artifacts"].as_array().into_iter().flatten() {
            let image = artifact["image"].as_str().expect("artifact image");
            let (_host, path) = image.split_once('/').expect("host/repo:tag");
            let repo = path.rsplit_once(':').map_or(path, |(r, _)| r);
            let digest = artifact["digest"].as_str().expect("artifact digest");
            expected
                .entry((repo.to_owned(), digest.to_owned()))
                .or_default()
                .push((id.clone(), envelope.clone()));
        }
    }
    expected
}

/// The DSSE layer digests of `repo`'s `.att` manifest for `digest` (empty when there is none).
pub async fn att_layers(reg: &TestRegistry, repo: &str, digest: &str) -> Vec<String> {
    let parsed: Digest = digest.parse().expect("image digest");
    let tag = format!("sha256-{}.att", parsed.hex());
    let Some((_, body)) = reg.manifest(repo, &tag).await else {
        return Vec::new();
    };
    let manifest: Value = serde_json::from_slice(&body).expect(".att manifest JSON");
    manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["mediaType"] == DSSE_LAYER)
        .filter_map(|l| l["digest"].as_str().map(str::to_owned))
        .collect()
}

/// Check every image's `.att` against what the API says; the number of layers checked, or every
/// discrepancy found (missing, duplicated, foreign or unverifiable layers).
pub async fn check_att(
    reg: &TestRegistry,
    expected: &Expected,
    public_pem: &str,
) -> Result<usize, String> {
    let mut problems = Vec::new();
    let mut layers_checked = 0;
    for ((repo, digest), executions) in expected {
        let layers = att_layers(reg, repo, digest).await;
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for l in &layers {
            *seen.entry(l.as_str()).or_default() += 1;
        }
        for (layer, n) in &seen {
            if *n > 1 {
                problems.push(format!("{repo}@{digest}: layer {layer} listed {n} times"));
            }
        }
        let mut wanted: BTreeMap<String, &str> = BTreeMap::new();
        for (id, envelope) in executions {
            let layer = Digest::of(envelope).to_string();
            if !seen.contains_key(layer.as_str()) {
                problems.push(format!(
                    "{repo}@{digest}: the layer of execution {id} ({layer}) is missing"
                ));
            }
            wanted.insert(layer, id);
        }
        for layer in seen.keys() {
            let Some(id) = wanted.get(*layer) else {
                problems.push(format!(
                    "{repo}@{digest}: layer {layer} belongs to no execution"
                ));
                continue;
            };
            let blob = reg.blob(repo, layer).await;
            if !verifies(&blob, public_pem) {
                problems.push(format!(
                    "{repo}@{digest}: layer {layer} of execution {id} does not verify"
                ));
            }
            layers_checked += 1;
        }
    }
    if problems.is_empty() {
        Ok(layers_checked)
    } else {
        Err(format!(
            "{} problem(s) in the registry:\n{}",
            problems.len(),
            problems
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        ))
    }
}
