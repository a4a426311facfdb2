//! Pushing signed attestations to OCI registries where cosign looks for them (`sha256-<hex>.att`)
//! and, optionally, as OCI 1.1 referrers; and reading them back for verification.
//! Only registries listed in configuration are ever contacted.

mod auth;
mod connection;
mod error;
pub mod layout;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use self::auth::Access;
use self::connection::{Connection, Session, WriteFailure};
pub use self::error::{ErrorCode, PushError, RegistryError};
use self::layout::AttPlan;
use crate::config::{PushFormat, RegistrySettings};
use crate::domain::{Digest, ImageRef};
use crate::secrets::SecretSource;

/// One attestation to push next to an image.
#[derive(Debug, Clone, Copy)]
pub struct PushRequest<'a> {
    pub image: &'a ImageRef,
    /// The image manifest's digest; the attestation's subject.
    pub digest: &'a Digest,
    /// The serialized DSSE envelope, pushed byte for byte.
    pub envelope: &'a [u8],
    pub predicate_type: &'a str,
    /// The signing key's id, named in the Sigstore bundle's `publicKey.hint`.
    pub key_id: &'a str,
}

/// Asked immediately before each read-modify-write manifest write of a push (the `.att` manifest,
/// the referrers tag-schema index); an error stops the push before it writes. The worker's fence
/// checks in the database that it still holds the tag's lock under its fencing token.
#[async_trait::async_trait]
pub trait WriteFence: Send + Sync {
    async fn check(&self) -> Result<(), RegistryError>;

    /// Told when the manifest write after a passed check got an answer that settles it: stored,
    /// or refused by the registry. Not told when its fate is unknown (no answer, a timeout, a
    /// gateway's 502/504), as the write may still land.
    fn settled(&self) {}
}

/// No fence: for callers that serialize writers some other way (tests, tools).
pub struct Unfenced;

#[async_trait::async_trait]
impl WriteFence for Unfenced {
    async fn check(&self) -> Result<(), RegistryError> {
        Ok(())
    }
}

/// Where an attestation ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    /// `host/repo:sha256-<hex>.att`, or `host/repo@sha256:…` of the referrer in referrers-only
    /// mode.
    pub reference: String,
    /// Digest of the manifest `reference` names, as read back from the registry.
    pub manifest_digest: String,
    /// `host/repo@sha256:…` of the OCI 1.1 referrer manifest, when that format is configured.
    pub referrer: Option<String>,
    /// Nothing was written: every configured format already held this envelope.
    pub already_present: bool,
}

/// Where a fetched attestation was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttestationSource {
    /// A layer of the `sha256-<hex>.att` manifest.
    AttTag,
    /// A Sigstore bundle in the referrer manifest with this digest.
    Referrer { manifest_digest: String },
}

/// A DSSE envelope read from a registry, with the annotations it was published under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedAttestation {
    pub source: AttestationSource,
    /// Digest of the blob the envelope came from (the layer, or the bundle).
    pub blob_digest: String,
    /// The envelope bytes as stored.
    pub envelope: Vec<u8>,
    /// Layer annotations (`.att`) or referrer descriptor annotations.
    pub annotations: BTreeMap<String, String>,
}

/// What reading one image's attestations may fetch; the defaults are `config/default.toml`'s
/// `[verify]` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Attestations (`.att` layers plus referrer bundles) read per image.
    pub max_attestations: usize,
    /// Largest attestation blob, in bytes.
    pub max_blob_bytes: u64,
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self {
            max_attestations: 32,
            max_blob_bytes: 4 * 1024 * 1024,
        }
    }
}

/// The registries attestd may talk to, built from configuration.
pub struct Registries {
    by_host: HashMap<String, Connection>,
    fetch_limits: FetchLimits,
}

impl std::fmt::Debug for Registries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut hosts: Vec<&String> = self.by_host.keys().collect();
        hosts.sort();
        f.debug_struct("Registries").field("hosts", &hosts).finish()
    }
}

impl Registries {
    /// Clients for every listed registry; fails on unusable TLS settings (e.g. a bad `ca_file`).
    /// Passwords are read from `secrets` on each use, never here.
    pub fn new(
        settings: &[RegistrySettings],
        secrets: Arc<dyn SecretSource>,
    ) -> Result<Self, RegistryError> {
        let mut by_host = HashMap::new();
        for s in settings {
            by_host.insert(s.host.clone(), Connection::new(s, secrets.clone())?);
        }
        Ok(Self {
            by_host,
            fetch_limits: FetchLimits::default(),
        })
    }

    /// Read attestations within `limits` instead of the defaults.
    pub fn with_fetch_limits(mut self, limits: FetchLimits) -> Self {
        self.fetch_limits = limits;
        self
    }

    /// Whether `host` (as written in image names, with `:port`) is configured.
    pub fn is_allowed(&self, host: &str) -> bool {
        self.by_host.contains_key(host)
    }

    /// The configured hosts, sorted.
    pub fn hosts(&self) -> Vec<&str> {
        let mut hosts: Vec<&str> = self.by_host.keys().map(String::as_str).collect();
        hosts.sort_unstable();
        hosts
    }

    /// Reach `host`'s `/v2/` with its credentials (`attestd check`); says how access was granted.
    pub async fn check_api(&self, host: &str) -> Result<String, RegistryError> {
        self.connection(host)?.check_api().await
    }

    fn connection(&self, host: &str) -> Result<&Connection, RegistryError> {
        self.by_host.get(host).ok_or_else(|| {
            RegistryError::permanent(
                ErrorCode::RegistryNotConfigured,
                format!("registry {host} is not configured; add it under [[registries]]"),
            )
        })
    }

    /// Push one attestation in the registry's configured format(s) and read it back.
    ///
    /// The `.att` manifest is rewritten read-modify-write: existing layers are kept verbatim
    /// and the new one appended, or nothing is written if a layer with the envelope's digest is
    /// already there. That is only safe with one writer per tag: the caller must serialize
    /// pushes for the same (registry, repository, digest) — the worker holds a distributed lock
    /// — so this function assumes no concurrent writer. The same holds for the referrers
    /// tag-schema index. Retrying after any error is safe, which is why a 401/403 re-reads the
    /// password and runs the whole push once more.
    pub async fn push(&self, req: &PushRequest<'_>) -> Result<PushOutcome, PushError> {
        self.push_fenced(req, &Unfenced).await
    }

    /// [`push`](Self::push), asking `fence` right before each manifest write. After a write,
    /// the read-back must list every layer (or index entry) written — those read and the new
    /// one — or the push fails as retryable: another writer replaced the manifest.
    pub async fn push_fenced(
        &self,
        req: &PushRequest<'_>,
        fence: &dyn WriteFence,
    ) -> Result<PushOutcome, PushError> {
        let conn = self.connection(&req.image.registry)?;
        conn.with_reauth(|s| async move { self.push_with(conn, &s, req, fence).await })
            .await
            .inspect_err(|e| counted(&req.image.registry, "push", e))
    }

    async fn push_with(
        &self,
        conn: &Connection,
        s: &Session,
        req: &PushRequest<'_>,
        fence: &dyn WriteFence,
    ) -> Result<PushOutcome, PushError> {
        let subject = image_descriptor(s, req.image, req.digest).await?;
        let name = req.image.name();
        let att_reference = format!("{name}:{}", layout::att_tag(req.digest));
        Ok(match conn.format {
            PushFormat::Att => {
                let att = push_att(s, req, fence).await?;
                PushOutcome {
                    reference: att_reference,
                    manifest_digest: att.manifest_digest,
                    referrer: None,
                    already_present: att.already_present,
                }
            }
            PushFormat::Referrers => {
                let r = push_referrer(conn, s, req, &subject, fence).await?;
                let reference = format!("{name}@{}", r.manifest_digest);
                PushOutcome {
                    referrer: Some(reference.clone()),
                    reference,
                    manifest_digest: r.manifest_digest,
                    already_present: r.already_present,
                }
            }
            PushFormat::Both => {
                let att = push_att(s, req, fence).await?;
                let r = push_referrer(conn, s, req, &subject, fence).await?;
                PushOutcome {
                    reference: att_reference,
                    manifest_digest: att.manifest_digest,
                    referrer: Some(format!("{name}@{}", r.manifest_digest)),
                    already_present: att.already_present && r.already_present,
                }
            }
        })
    }

    /// The first half of an `.att` push — both blobs uploaded, no manifest written — as a crash
    /// between the two would leave it. Exposed for tests; `push` calls the whole sequence.
    #[doc(hidden)]
    pub async fn upload_att_blobs_only(&self, req: &PushRequest<'_>) -> Result<(), PushError> {
        let conn = self.connection(&req.image.registry)?;
        let s = conn.session().await?;
        let tag = s.reference(
            &req.image.registry,
            &req.image.repository,
            &layout::att_tag(req.digest),
        );
        if let AttPlan::Write(m) = plan_att(&s, req, &tag).await?.1 {
            upload_att_blobs(&s, req, &tag, &m).await?;
        }
        Ok(())
    }

    /// Every DSSE envelope published for `digest`: the `.att` layers, then (for registries
    /// configured with the referrers format) the Sigstore bundles among its referrers. More
    /// attestations than the fetch limits allow, or a larger blob, is an error, found before the
    /// blob (or the rest of it) is downloaded.
    pub async fn fetch_attestations(
        &self,
        image: &ImageRef,
        digest: &Digest,
    ) -> Result<Vec<FetchedAttestation>, RegistryError> {
        let conn = self.connection(&image.registry)?;
        conn.with_reauth(|s| async move { self.fetch_with(conn, &s, image, digest).await })
            .await
            .inspect_err(|e| counted(&image.registry, "fetch", e))
    }

    async fn fetch_with(
        &self,
        conn: &Connection,
        s: &Session,
        image: &ImageRef,
        digest: &Digest,
    ) -> Result<Vec<FetchedAttestation>, RegistryError> {
        let (host, repo) = (&image.registry, &image.repository);
        let limits = self.fetch_limits;
        let mut out = Vec::new();

        let tag = s.reference(host, repo, &layout::att_tag(digest));
        let what = format!("read {}/{repo}:{}", host, layout::att_tag(digest));
        if let Some((body, _)) = s.manifest(&tag, Access::Pull, &what).await? {
            let manifest: Value = serde_json::from_slice(&body).map_err(|e| {
                RegistryError::permanent(ErrorCode::InvalidContent, format!("{what}: {e}"))
            })?;
            let layers: Vec<&Value> = manifest["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|l| l["mediaType"] == layout::DSSE_LAYER)
                .collect();
            check_count(layers.len(), &limits, &what)?;
            for layer in layers {
                let Some(blob) = layout::digest_of(layer) else {
                    continue;
                };
                check_size(layer, &limits, &what)?;
                let envelope = s
                    .pull_blob(&tag, blob, limits.max_blob_bytes, &what)
                    .await?;
                out.push(FetchedAttestation {
                    source: AttestationSource::AttTag,
                    blob_digest: blob.to_owned(),
                    envelope,
                    annotations: annotations(layer),
                });
            }
        }

        if conn.format != PushFormat::Att {
            let what = format!("read the referrers of {host}/{repo}@{digest}");
            let bundles: Vec<Value> = list_referrers(conn, s, image, digest, &what)
                .await?
                .into_iter()
                .filter(|entry| entry["artifactType"] == layout::SIGSTORE_BUNDLE_V03)
                .collect();
            check_count(out.len() + bundles.len(), &limits, &what)?;
            for entry in bundles {
                let Some(manifest_digest) = layout::digest_of(&entry) else {
                    continue;
                };
                let by_digest = s.by_digest(host, repo, manifest_digest);
                let Some((body, _)) = s.manifest(&by_digest, Access::Pull, &what).await? else {
                    continue;
                };
                let manifest: Value = serde_json::from_slice(&body).map_err(|e| {
                    RegistryError::permanent(ErrorCode::InvalidContent, format!("{what}: {e}"))
                })?;
                for layer in manifest["layers"].as_array().into_iter().flatten() {
                    if layer["mediaType"] != layout::SIGSTORE_BUNDLE_V03 {
                        continue;
                    }
                    let Some(blob) = layout::digest_of(layer) else {
                        continue;
                    };
                    check_count(out.len() + 1, &limits, &what)?;
                    check_size(layer, &limits, &what)?;
                    let bundle = s
                        .pull_blob(&by_digest, blob, limits.max_blob_bytes, &what)
                        .await?;
                    let envelope = layout::envelope_from_bundle(&bundle).map_err(|e| {
                        RegistryError::permanent(ErrorCode::InvalidContent, format!("{what}: {e}"))
                    })?;
                    out.push(FetchedAttestation {
                        source: AttestationSource::Referrer {
                            manifest_digest: manifest_digest.to_owned(),
                        },
                        blob_digest: blob.to_owned(),
                        envelope,
                        annotations: annotations(&entry),
                    });
                }
            }
        }
        Ok(out)
    }

    /// The manifest digest `image`'s tag points at now.
    pub async fn resolve(&self, image: &ImageRef) -> Result<Digest, RegistryError> {
        let conn = self.connection(&image.registry)?;
        let Some(tag) = &image.tag else {
            return Err(RegistryError::permanent(
                ErrorCode::Rejected,
                format!("{image} has no tag to resolve"),
            ));
        };
        let what = &format!("resolve {image}");
        let digest = conn
            .with_reauth(|s| async move {
                let reference = s.reference(&image.registry, &image.repository, tag);
                s.resolve(&reference, what).await
            })
            .await
            .inspect_err(|e| counted(&image.registry, "resolve", e))?;
        digest.parse().map_err(|_| {
            RegistryError::permanent(
                ErrorCode::InvalidContent,
                format!("{what}: the registry answered with an unsupported digest {digest}"),
            )
        })
    }
}

/// Count a failed operation on a configured registry (`attestd_registry_errors_total`).
fn counted(host: &str, operation: &'static str, e: &RegistryError) {
    crate::metrics::registry_error(host, operation, e.code().as_str());
}

/// The subject descriptor of the image manifest, from a `HEAD` (its digest, media type and
/// size), or from the manifest itself when the registry leaves a header out. Its absence is
/// `ImageNotFound`, permanent as far as the registry can tell; the worker still retries it a few
/// times (replication lag).
async fn image_descriptor(
    s: &Session,
    image: &ImageRef,
    digest: &Digest,
) -> Result<Value, RegistryError> {
    let name = image.name();
    let reference = s.by_digest(&image.registry, &image.repository, digest.as_str());
    let what = format!("read image manifest {name}@{digest}");
    let not_found = || {
        RegistryError::permanent(
            ErrorCode::ImageNotFound,
            format!("image manifest {digest} not found in {name}"),
        )
    };
    let head = s
        .manifest_head(&reference, Access::Push, &what)
        .await?
        .ok_or_else(not_found)?;
    if let (Some(media_type), Some(size)) = (head.media_type, head.size) {
        return Ok(serde_json::json!({
            "mediaType": media_type, "digest": digest.as_str(), "size": size,
        }));
    }
    match s.manifest(&reference, Access::Push, &what).await? {
        Some((body, _)) => Ok(layout::subject_descriptor(&body, digest)),
        None => Err(not_found()),
    }
}

/// The result of writing one layout.
struct Written {
    manifest_digest: String,
    already_present: bool,
}

async fn plan_att(
    s: &Session,
    req: &PushRequest<'_>,
    tag: &oci_client::Reference,
) -> Result<(Option<String>, AttPlan), RegistryError> {
    let what = format!("read {}:{}", req.image.name(), layout::att_tag(req.digest));
    let existing = s.manifest(tag, Access::Push, &what).await?;
    let plan = layout::plan_att(
        existing.as_ref().map(|(b, _)| b.as_slice()),
        req.envelope,
        req.predicate_type,
    )
    .map_err(|e| RegistryError::permanent(ErrorCode::InvalidContent, format!("{what}: {e}")))?;
    Ok((existing.map(|(_, d)| d), plan))
}

async fn upload_att_blobs(
    s: &Session,
    req: &PushRequest<'_>,
    tag: &oci_client::Reference,
    m: &layout::AttManifest,
) -> Result<(), RegistryError> {
    let name = req.image.name();
    s.push_blob(
        tag,
        req.envelope,
        &format!("upload the attestation blob to {name}"),
    )
    .await?;
    s.push_blob(
        tag,
        &m.config,
        &format!("upload the attestation config to {name}"),
    )
    .await
}

async fn push_att(
    s: &Session,
    req: &PushRequest<'_>,
    fence: &dyn WriteFence,
) -> Result<Written, RegistryError> {
    let name = req.image.name();
    let att_tag = layout::att_tag(req.digest);
    let tag = s.reference(&req.image.registry, &req.image.repository, &att_tag);
    let (existing_digest, plan) = plan_att(s, req, &tag).await?;
    let m = match plan {
        AttPlan::AlreadyPresent => {
            return Ok(Written {
                manifest_digest: existing_digest.unwrap_or_default(),
                already_present: true,
            });
        }
        AttPlan::Full(n) => {
            return Err(RegistryError::permanent(
                ErrorCode::TooManyLayers,
                format!(
                    "{name}:{att_tag} already holds {n} attestations; cosign reads at most {}, so attestd will not add more",
                    layout::MAX_ATT_LAYERS
                ),
            ));
        }
        AttPlan::Write(m) => m,
    };
    upload_att_blobs(s, req, &tag, &m).await?;
    fence.check().await?;
    settle(
        fence,
        s.push_manifest(
            &tag,
            &m.manifest,
            layout::OCI_MANIFEST,
            &format!("write {name}:{att_tag}"),
        )
        .await,
    )?;

    let what = format!("read back {name}:{att_tag}");
    let layer = Digest::of(req.envelope).to_string();
    // The tag naming exactly the manifest written lists every layer written; only when it names
    // another (or the registry does not say) is the manifest read to see which are missing.
    let written = Digest::of(&m.manifest).to_string();
    let head = s.manifest_head(&tag, Access::Push, &what).await?;
    let (digest, listed) = match head.and_then(|h| h.digest) {
        Some(digest) if digest == written => (digest, layout::layer_digests(&m.manifest)),
        _ => match s.manifest(&tag, Access::Push, &what).await? {
            Some((body, digest)) => (digest, layout::layer_digests(&body)),
            None => (String::new(), Vec::new()),
        },
    };
    // Every layer written must be there: ours, and those read before the write.
    match layout::missing(&layout::layer_digests(&m.manifest), &listed).as_slice() {
        [] => Ok(Written {
            manifest_digest: digest,
            already_present: false,
        }),
        [only] if *only == layer => Err(RegistryError::retryable(
            ErrorCode::NotVisible,
            format!("{what}: the new attestation layer {layer} is not listed yet"),
        )),
        lost => Err(RegistryError::retryable(
            ErrorCode::NotVisible,
            format!(
                "{what}: the manifest no longer lists {} written with it ({}); another writer replaced it",
                plural(lost.len(), "layer"),
                lost.join(", ")
            ),
        )),
    }
}

/// Tell `fence` when a fenced manifest write's answer settled it; its error, if any.
fn settle(fence: &dyn WriteFence, written: Result<(), WriteFailure>) -> Result<(), RegistryError> {
    match written {
        Ok(()) => {
            fence.settled();
            Ok(())
        }
        Err(f) => {
            if f.settled {
                fence.settled();
            }
            Err(f.error)
        }
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

async fn list_referrers(
    conn: &Connection,
    s: &Session,
    image: &ImageRef,
    digest: &Digest,
    what: &str,
) -> Result<Vec<Value>, RegistryError> {
    let subject = s.by_digest(&image.registry, &image.repository, digest.as_str());
    if conn.supports_referrers(s, &subject, digest).await? {
        return s
            .referrers(&subject, layout::SIGSTORE_BUNDLE_V03, what)
            .await;
    }
    let tag = s.reference(
        &image.registry,
        &image.repository,
        &layout::referrers_tag(digest),
    );
    let Some((body, _)) = s.manifest(&tag, Access::Pull, what).await? else {
        return Ok(Vec::new());
    };
    let index: Value = serde_json::from_slice(&body)
        .map_err(|e| RegistryError::permanent(ErrorCode::InvalidContent, format!("{what}: {e}")))?;
    Ok(index["manifests"].as_array().cloned().unwrap_or_default())
}

async fn push_referrer(
    conn: &Connection,
    s: &Session,
    req: &PushRequest<'_>,
    subject: &Value,
    fence: &dyn WriteFence,
) -> Result<Written, RegistryError> {
    let name = req.image.name();
    let (host, repo) = (&req.image.registry, &req.image.repository);
    let invalid = |e: String| RegistryError::permanent(ErrorCode::InvalidContent, e);
    let bundle = layout::sigstore_bundle(req.envelope, req.key_id).map_err(invalid)?;
    let manifest = layout::referrer_manifest(&bundle, subject, req.predicate_type);
    let manifest_digest = Digest::of(&manifest);
    let entry = layout::referrer_entry(&manifest, req.predicate_type);
    let subject_ref = s.by_digest(host, repo, req.digest.as_str());
    let native = conn.supports_referrers(s, &subject_ref, req.digest).await?;
    let what = format!("read the referrers of {name}@{}", req.digest);

    let fallback_tag = s.reference(host, repo, &layout::referrers_tag(req.digest));
    let existing_index = if native {
        let listed = s
            .referrers(&subject_ref, layout::SIGSTORE_BUNDLE_V03, &what)
            .await?;
        if listed
            .iter()
            .any(|d| layout::digest_of(d) == Some(manifest_digest.as_str()))
        {
            return Ok(Written {
                manifest_digest: manifest_digest.to_string(),
                already_present: true,
            });
        }
        None
    } else {
        let existing = s.manifest(&fallback_tag, Access::Push, &what).await?;
        if let Some((body, _)) = &existing
            && layout::lists_manifest(body, manifest_digest.as_str())
        {
            return Ok(Written {
                manifest_digest: manifest_digest.to_string(),
                already_present: true,
            });
        }
        Some(existing.map(|(b, _)| b))
    };

    let by_digest = s.by_digest(host, repo, manifest_digest.as_str());
    s.push_blob(
        &by_digest,
        layout::EMPTY_BLOB,
        &format!("upload the empty config to {name}"),
    )
    .await?;
    s.push_blob(
        &by_digest,
        &bundle,
        &format!("upload the Sigstore bundle to {name}"),
    )
    .await?;
    s.push_manifest(
        &by_digest,
        &manifest,
        layout::OCI_MANIFEST,
        &format!("write the referrer manifest to {name}"),
    )
    .await?;

    let visible = match existing_index {
        // The registry indexes referrers itself.
        None => s
            .referrers(&subject_ref, layout::SIGSTORE_BUNDLE_V03, &what)
            .await?
            .iter()
            .any(|d| layout::digest_of(d) == Some(manifest_digest.as_str())),
        // No referrers API: maintain the tag-schema index ourselves.
        Some(existing) => {
            let tag = layout::referrers_tag(req.digest);
            let planned = layout::plan_referrers_index(existing.as_deref(), entry)
                .map_err(|e| invalid(format!("{name}:{tag}: {e}")))?;
            if let Some(index) = &planned {
                fence.check().await?;
                settle(
                    fence,
                    s.push_manifest(
                        &fallback_tag,
                        index,
                        layout::OCI_INDEX,
                        &format!("write the referrers index {name}:{tag}"),
                    )
                    .await,
                )?;
            }
            let listed = s
                .manifest(&fallback_tag, Access::Push, &what)
                .await?
                .map(|(body, _)| layout::manifest_digests(&body))
                .unwrap_or_default();
            // Every entry written (those read and ours) must still be there.
            let lost = layout::missing(
                &planned
                    .as_deref()
                    .map(layout::manifest_digests)
                    .unwrap_or_default(),
                &listed,
            );
            if lost.iter().any(|d| *d != manifest_digest.as_str()) {
                return Err(RegistryError::retryable(
                    ErrorCode::NotVisible,
                    format!(
                        "{what}: the referrers index {name}:{tag} no longer lists {} written with it ({}); another writer replaced it",
                        plural(lost.len(), "entry"),
                        lost.join(", ")
                    ),
                ));
            }
            listed.iter().any(|d| *d == manifest_digest.as_str())
        }
    };
    if !visible {
        return Err(RegistryError::retryable(
            ErrorCode::NotVisible,
            format!("{what}: the new referrer {manifest_digest} is not listed yet"),
        ));
    }
    Ok(Written {
        manifest_digest: manifest_digest.to_string(),
        already_present: false,
    })
}

/// `count` attestations are more than `limits` lets one image have.
fn check_count(count: usize, limits: &FetchLimits, what: &str) -> Result<(), RegistryError> {
    if count > limits.max_attestations {
        return Err(RegistryError::permanent(
            ErrorCode::TooManyLayers,
            format!(
                "{what}: the image has more than {max} attestations; attestd reads at most {max} per image (verify.max_attestation_layers)",
                max = limits.max_attestations
            ),
        ));
    }
    Ok(())
}

/// A descriptor whose declared `size` is over the limit is refused before its blob is fetched.
fn check_size(descriptor: &Value, limits: &FetchLimits, what: &str) -> Result<(), RegistryError> {
    match descriptor["size"].as_u64() {
        Some(size) if size > limits.max_blob_bytes => Err(RegistryError::permanent(
            ErrorCode::AttestationTooLarge,
            format!(
                "{what}: an attestation of {size} bytes is larger than {} bytes (verify.max_layer_bytes)",
                limits.max_blob_bytes
            ),
        )),
        _ => Ok(()),
    }
}

fn annotations(descriptor: &Value) -> BTreeMap<String, String> {
    descriptor["annotations"]
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}
