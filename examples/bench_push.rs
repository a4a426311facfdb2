//! Attestations pushed per second through `Registries::push`, beside a raw baseline making the
//! same blob + config + manifest requests with a bare reqwest client, at concurrency 1, 8 and 32.
//! Every push targets a distinct image digest, as the worker's per-digest lock would allow.
//! attestd makes 8 requests per push to the raw client's 5: it also checks the image (`HEAD`), reads
//! the current `.att` to append to it, and reads the tag back (`HEAD`); see docs/PERFORMANCE.md.
//!
//! ```sh
//! docker-registry serve config.yml &   # an anonymous registry on 127.0.0.1:PORT
//! cargo run --release --example bench_push -- --registry 127.0.0.1:PORT
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use attestd::config::{PushFormat, RegistrySettings, is_loopback_host};
use attestd::domain::{Digest, ImageRef};
use attestd::registry::{PushRequest, Registries, layout};
use attestd::secrets::{SecretError, SecretSource};
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use secrecy::SecretString;

#[derive(Parser)]
struct Args {
    /// Registry host:port (anonymous; plain http when loopback).
    #[arg(long)]
    registry: String,
    /// Repository to push into.
    #[arg(long, default_value = "bench/app")]
    repository: String,
    /// Pushes per concurrency level and per client.
    #[arg(long, default_value_t = 200)]
    count: usize,
}

/// The bench uses an anonymous registry: no secret is ever read.
struct NoSecrets;

#[async_trait::async_trait]
impl SecretSource for NoSecrets {
    fn name(&self) -> &'static str {
        "none"
    }

    async fn get(&self, reference: &str) -> Result<SecretString, SecretError> {
        Err(SecretError::NotFound {
            backend: "none",
            reference: reference.to_owned(),
        })
    }
}

struct Raw {
    http: reqwest::Client,
    base: String,
    repo: String,
}

impl Raw {
    async fn put_blob(&self, bytes: &[u8]) -> anyhow::Result<Digest> {
        let digest = Digest::of(bytes);
        let r = self
            .http
            .post(format!("{}/v2/{}/blobs/uploads/", self.base, self.repo))
            .send()
            .await?;
        if r.status() != 202 {
            bail!("start upload: HTTP {}", r.status());
        }
        let location = r
            .headers()
            .get("location")
            .context("upload location")?
            .to_str()?
            .to_owned();
        let url = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        let r = self
            .http
            .put(format!("{url}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await?;
        if r.status() != 201 {
            bail!("finish upload: HTTP {}", r.status());
        }
        Ok(digest)
    }

    async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<()> {
        let r = self
            .http
            .put(format!(
                "{}/v2/{}/manifests/{reference}",
                self.base, self.repo
            ))
            .header("content-type", media_type)
            .body(body)
            .send()
            .await?;
        if r.status() != 201 {
            bail!("put manifest: HTTP {}", r.status());
        }
        Ok(())
    }

    /// A small distinct image; returns its digest.
    async fn image(&self, n: usize, salt: &str) -> anyhow::Result<Digest> {
        let layer = format!("layer {salt} {n}").into_bytes();
        let layer_digest = self.put_blob(&layer).await?;
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
        );
        let config_digest = self.put_blob(config.as_bytes()).await?;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": layout::OCI_MANIFEST,
            "config": {"mediaType": layout::OCI_CONFIG, "digest": config_digest.as_str(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest.as_str(), "size": layer.len()}],
        }))?;
        self.put_manifest(
            &format!("img-{salt}-{n}"),
            layout::OCI_MANIFEST,
            manifest.clone(),
        )
        .await?;
        Ok(Digest::of(&manifest))
    }

    /// What an `.att` push minimally costs: envelope blob, config blob, manifest PUT.
    async fn push_att(&self, digest: &Digest, envelope: &[u8]) -> anyhow::Result<()> {
        let layer = layout::dsse_layer(envelope, "https://slsa.dev/provenance/v1");
        self.put_blob(envelope).await?;
        let layer_digest = Digest::of(envelope);
        let config = layout::cosign_config(&[layer_digest.as_str()]);
        self.put_blob(&config).await?;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": layout::OCI_MANIFEST,
            "config": layout::descriptor(layout::OCI_CONFIG, &config),
            "layers": [layer],
        }))?;
        self.put_manifest(&layout::att_tag(digest), layout::OCI_MANIFEST, manifest)
            .await
    }
}

/// A DSSE-shaped envelope of realistic size (~3 KB); unsigned, since only the push is measured.
fn envelope(salt: &str, n: usize) -> Vec<u8> {
    use base64::Engine as _;
    let payload = format!(
        "{{\"bench\":\"{salt}-{n}\",\"pad\":\"{}\"}}",
        "x".repeat(2000)
    );
    format!(
        r#"{{"payloadType":"application/vnd.in-toto+json","payload":"{}","signatures":[{{"keyid":"bench","sig":"MEUCIQ=="}}]}}"#,
        base64::engine::general_purpose::STANDARD.encode(payload)
    )
    .into_bytes()
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let insecure = is_loopback_host(&args.registry);
    let scheme = if insecure { "http" } else { "https" };
    let raw = Arc::new(Raw {
        http: reqwest::Client::new(),
        base: format!("{scheme}://{}", args.registry),
        repo: args.repository.clone(),
    });
    let regs = Arc::new(Registries::new(
        &[RegistrySettings {
            host: args.registry.clone(),
            format: PushFormat::Att,
            insecure_http: insecure,
            ca_file: None,
            username: None,
            password: None,
        }],
        Arc::new(NoSecrets),
    )?);
    let image: Arc<ImageRef> = Arc::new(format!("{}/{}", args.registry, args.repository).parse()?);
    let run = uuid::Uuid::new_v4().simple().to_string();

    println!(
        "concurrency  attestd/s  raw/s  attestd/raw   ({} pushes each)",
        args.count
    );
    for concurrency in [1usize, 8, 32] {
        let salt = format!("{run}-c{concurrency}");
        // Images exist before timing: push() checks the subject is there.
        let digests: Vec<Digest> = stream::iter(0..args.count)
            .map(|n| {
                let raw = raw.clone();
                let salt = salt.clone();
                async move { raw.image(n, &salt).await }
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;

        let start = Instant::now();
        stream::iter(digests.iter().enumerate())
            .map(|(n, digest)| {
                let (regs, image, salt) = (regs.clone(), image.clone(), salt.clone());
                async move {
                    let env = envelope(&salt, n);
                    regs.push(&PushRequest {
                        image: &image,
                        digest,
                        envelope: &env,
                        predicate_type: "https://slsa.dev/provenance/v1",
                        key_id: "bench",
                    })
                    .await
                    .map(drop)
                    .map_err(anyhow::Error::from)
                }
            })
            .buffer_unordered(concurrency)
            .try_collect::<()>()
            .await?;
        let ours = rate(args.count, start.elapsed());

        let start = Instant::now();
        stream::iter(0..args.count)
            .map(|n| {
                let (raw, salt) = (raw.clone(), format!("{salt}-raw"));
                async move {
                    let digest = Digest::of(format!("{salt}-{n}").as_bytes());
                    raw.push_att(&digest, &envelope(&salt, n)).await
                }
            })
            .buffer_unordered(concurrency)
            .try_collect::<()>()
            .await?;
        let baseline = rate(args.count, start.elapsed());

        println!(
            "{concurrency:>11}  {ours:>9.1}  {baseline:>5.1}  {:>11.2}",
            ours / baseline
        );
    }
    Ok(())
}
