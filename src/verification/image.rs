//! Verifying an image as it is in its registry: resolve the reference, fetch every published
//! attestation (`.att` layers and, where configured, referrers) and check them. The only part of
//! verification that does I/O, and only against configured registries.

use std::str::FromStr;

use super::{CandidateEnvelope, TrustedKey, VerificationReport, verify_with};
use crate::domain::{Digest, ImageRef};
use crate::policy::{EvalLimits, Policy};
use crate::registry::{AttestationSource, Registries, RegistryError};

/// An image to verify: `registry/repo@sha256:<hex>` or `registry/repo:tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageToVerify {
    pub image: ImageRef,
    pub digest: Option<Digest>,
}

impl FromStr for ImageToVerify {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('@') {
            Some((name, digest)) => Ok(Self {
                image: name.parse().map_err(|e| format!("image {name}: {e}"))?,
                digest: Some(digest.parse().map_err(|e| format!("digest {e}"))?),
            }),
            None => {
                let image: ImageRef = s.parse().map_err(|e| format!("image {s}: {e}"))?;
                if image.tag.is_none() {
                    return Err(format!(
                        "{s} names neither a digest (@sha256:...) nor a tag (:tag)"
                    ));
                }
                Ok(Self {
                    image,
                    digest: None,
                })
            }
        }
    }
}

/// The digest `target` names, resolving its tag in the registry if it gives no digest.
pub async fn resolve(
    registries: &Registries,
    target: &ImageToVerify,
) -> Result<Digest, RegistryError> {
    match &target.digest {
        Some(d) => Ok(d.clone()),
        None => registries.resolve(&target.image).await,
    }
}

/// Every attestation published for `image@digest`, within the registries' fetch limits.
pub async fn fetch_candidates(
    registries: &Registries,
    image: &ImageRef,
    digest: &Digest,
) -> Result<Vec<CandidateEnvelope>, RegistryError> {
    let name = image.name();
    let fetched = registries.fetch_attestations(image, digest).await?;
    Ok(fetched
        .into_iter()
        .enumerate()
        .map(|(i, f)| CandidateEnvelope {
            source: match f.source {
                AttestationSource::AttTag => {
                    format!("{name}:sha256-{}.att layer {i}", digest.hex())
                }
                AttestationSource::Referrer { manifest_digest } => {
                    format!("{name}@{manifest_digest} (referrer)")
                }
            },
            annotations: f.annotations,
            bytes: f.envelope,
        })
        .collect())
}

/// Fetch `target`'s attestations and verify them with `keys`, evaluating `policies` in this
/// process within `limits` (the CLI's way: it is the user's own process).
pub async fn verify_image(
    registries: &Registries,
    target: &ImageToVerify,
    keys: &[TrustedKey],
    policies: &[Policy],
    limits: &EvalLimits,
) -> Result<VerificationReport, RegistryError> {
    let digest = resolve(registries, target).await?;
    let candidates = fetch_candidates(registries, &target.image, &digest).await?;
    Ok(verify_with(&digest, &candidates, keys, policies, limits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_need_a_digest_or_a_tag() {
        let d = format!("sha256:{}", "a".repeat(64));
        let t: ImageToVerify = format!("localhost:5000/acme/app@{d}").parse().unwrap();
        assert_eq!(t.digest.unwrap().to_string(), d);
        let t: ImageToVerify = "localhost:5000/acme/app:1.0".parse().unwrap();
        assert_eq!(t.image.tag.as_deref(), Some("1.0"));
        assert!("localhost:5000/acme/app".parse::<ImageToVerify>().is_err());
        assert!(
            "localhost:5000/acme/app@sha256:nope"
                .parse::<ImageToVerify>()
                .is_err()
        );
        assert!("app:1.0".parse::<ImageToVerify>().is_err());
    }
}
