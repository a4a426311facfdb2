//! A real CNCF distribution registry (`docker-registry serve`) on a free loopback port with its
//! own storage, anonymous over http or htpasswd basic auth over TLS; plus a plain-reqwest client
//! for it that shares no code with `attestd::registry`.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use attestd::config::{PushFormat, RegistrySettings};
use attestd::domain::Digest;
use attestd::secrets::{SecretError, SecretSource};
use secrecy::SecretString;
use tempfile::TempDir;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A running registry; killed on drop.
pub struct TestRegistry {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// PEM of the self-signed certificate when serving TLS.
    cert: Option<PathBuf>,
    /// Username and password when htpasswd auth is on.
    pub credentials: Option<(String, String)>,
    /// A bearer token this client's own requests carry (token-auth registries).
    pub bearer: Option<String>,
    http: reqwest::Client,
}

impl TestRegistry {
    /// Anonymous, plain http.
    pub async fn anonymous() -> Self {
        Self::start(false, None).await
    }

    /// htpasswd basic auth over TLS with a fresh self-signed certificate.
    pub async fn tls_basic(user: &str, password: &str) -> Self {
        Self::start(true, Some((user.to_owned(), password.to_owned()))).await
    }

    /// htpasswd basic auth over plain http (loopback only, as attestd allows), so a proxy in
    /// front can read the requests.
    pub async fn http_basic(user: &str, password: &str) -> Self {
        Self::start(false, Some((user.to_owned(), password.to_owned()))).await
    }

    /// Distribution's token auth over plain http: requests need a bearer token from `realm`
    /// (issuer `test-issuer`, service `test-registry`) signed by the key whose self-signed
    /// certificate is `root_cert`; see `support::token`.
    pub async fn http_token(realm: &str, root_cert: &Path) -> Self {
        let extra = format!(
            "auth: {{ token: {{ realm: \"{realm}\", service: test-registry, issuer: test-issuer, rootcertbundle: {} }} }}\n",
            root_cert.display()
        );
        Self::start_with(false, None, &extra).await
    }

    async fn start(tls: bool, credentials: Option<(String, String)>) -> Self {
        Self::start_with(tls, credentials, "").await
    }

    async fn start_with(tls: bool, credentials: Option<(String, String)>, extra: &str) -> Self {
        let bin = registry_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut yaml = format!(
            "version: 0.1\nlog: {{ level: warn }}\nstorage:\n  filesystem: {{ rootdirectory: {} }}\n  delete: {{ enabled: true }}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        let cert = if tls {
            let (cert, key) = self_signed_cert(dir.path());
            yaml.push_str(&format!(
                "  tls: {{ certificate: {}, key: {} }}\n",
                cert.display(),
                key.display()
            ));
            Some(cert)
        } else {
            None
        };
        if let Some((user, pass)) = &credentials {
            let htpasswd = dir.path().join("htpasswd");
            write_htpasswd(&htpasswd, user, pass);
            yaml.push_str(&format!(
                "auth: {{ htpasswd: {{ realm: test, path: {} }} }}\n",
                htpasswd.display()
            ));
        }
        yaml.push_str(extra);
        let config = dir.path().join("config.yml");
        std::fs::write(&config, yaml).expect("write registry config");
        let http = plain_client(cert.as_deref());
        let mut reg = Self {
            port,
            dir,
            child: None,
            cert,
            credentials,
            bearer: None,
            http,
        };
        reg.spawn(&bin).await;
        reg
    }

    async fn spawn(&mut self, bin: &Path) {
        let log = std::fs::File::create(self.dir.path().join("registry.log")).expect("log file");
        let child = Command::new(bin)
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = self
                .http
                .get(format!("{}/v2/", self.base_url()))
                .send()
                .await
                && (r.status().is_success() || r.status() == 401)
            {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "docker-registry exited with {status}:\n{}",
                    std::fs::read_to_string(self.dir.path().join("registry.log"))
                        .unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer GET /v2/ on port {} within 15 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kill the server; storage and port are kept for `restart`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port with the same storage.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn(&registry_bin()).await;
    }

    /// Rotate the htpasswd password (same user) while the registry keeps running, and wait until
    /// the registry refuses the old one: distribution re-reads htpasswd when its mtime changes.
    pub async fn rotate_password(&mut self, new: &str) {
        let (user, old) = self
            .credentials
            .clone()
            .expect("rotate_password needs a registry started with tls_basic");
        let staged = self.dir.path().join("htpasswd.next");
        write_htpasswd(&staged, &user, new);
        std::fs::rename(&staged, self.dir.path().join("htpasswd")).expect("replace htpasswd");
        self.credentials = Some((user.clone(), new.to_owned()));
        let status = |pass: String| {
            let request = self
                .http
                .get(format!("{}/v2/", self.base_url()))
                .basic_auth(&user, Some(pass));
            async move { request.send().await.map(|r| r.status().as_u16()).ok() }
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while status(old.clone()).await != Some(401) || status(new.to_owned()).await != Some(200) {
            assert!(
                Instant::now() < deadline,
                "the registry on port {} still takes the old password 10 s after htpasswd changed",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `127.0.0.1:<port>`, as written in image names.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn base_url(&self) -> String {
        let scheme = if self.cert.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Registry settings for attestd; the password is the secret reference `registry-password`.
    pub fn settings(&self, format: PushFormat) -> RegistrySettings {
        self.settings_via(&self.host(), format)
    }

    /// [`settings`](Self::settings) for reaching this registry as `host` (a proxy in front).
    pub fn settings_via(&self, host: &str, format: PushFormat) -> RegistrySettings {
        RegistrySettings {
            host: host.to_owned(),
            format,
            insecure_http: self.cert.is_none(),
            ca_file: self.cert.clone(),
            username: self.credentials.as_ref().map(|(u, _)| u.clone()),
            password: self
                .credentials
                .as_ref()
                .map(|_| "registry-password".to_owned()),
        }
    }

    fn authed(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match (&self.bearer, &self.credentials) {
            (Some(token), _) => rb.bearer_auth(token),
            (None, Some((u, p))) => rb.basic_auth(u, Some(p)),
            (None, None) => rb,
        }
    }

    /// Upload a blob (monolithic POST + PUT) with plain reqwest.
    pub async fn put_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::of(bytes);
        let r = self
            .authed(
                self.http
                    .post(format!("{}/v2/{repo}/blobs/uploads/", self.base_url())),
            )
            .send()
            .await
            .expect("start upload");
        assert_eq!(r.status(), 202, "start upload: {}", r.status());
        let location = r.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned();
        let url = if location.starts_with('/') {
            format!("{}{location}", self.base_url())
        } else {
            location
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        let r = self
            .authed(self.http.put(format!("{url}{sep}digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .expect("finish upload");
        assert_eq!(r.status(), 201, "finish upload: {}", r.status());
        digest
    }

    /// PUT a manifest under a tag or digest.
    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
        let r = self
            .authed(self.http.put(format!(
                "{}/v2/{repo}/manifests/{reference}",
                self.base_url()
            )))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("put manifest");
        assert_eq!(r.status(), 201, "put manifest {reference}: {}", r.status());
    }

    /// GET a manifest: `None` on 404, else (content type, body).
    pub async fn manifest(&self, repo: &str, reference: &str) -> Option<(String, Vec<u8>)> {
        let r = self
            .authed(self.http.get(format!(
                "{}/v2/{repo}/manifests/{reference}",
                self.base_url()
            )))
            .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
            .send()
            .await
            .expect("get manifest");
        if r.status() == 404 {
            return None;
        }
        assert_eq!(r.status(), 200, "get manifest {reference}: {}", r.status());
        let ct = r.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .to_owned();
        Some((ct, r.bytes().await.expect("manifest body").to_vec()))
    }

    /// GET a manifest as JSON, panicking if absent.
    pub async fn manifest_json(&self, repo: &str, reference: &str) -> serde_json::Value {
        let (_, body) = self
            .manifest(repo, reference)
            .await
            .unwrap_or_else(|| panic!("manifest {repo}:{reference} missing"));
        serde_json::from_slice(&body).expect("manifest JSON")
    }

    /// GET a blob's bytes.
    pub async fn blob(&self, repo: &str, digest: &str) -> Vec<u8> {
        let r = self
            .authed(
                self.http
                    .get(format!("{}/v2/{repo}/blobs/{digest}", self.base_url())),
            )
            .send()
            .await
            .expect("get blob");
        assert_eq!(r.status(), 200, "get blob {digest}: {}", r.status());
        r.bytes().await.expect("blob body").to_vec()
    }

    /// Push a small, unique image (config + one layer + OCI manifest) and return its digest.
    pub async fn push_image(&self, repo: &str, tag: &str) -> Digest {
        let nonce = uuid::Uuid::new_v4();
        let layer = format!("layer {nonce}").into_bytes();
        let layer_digest = self.put_blob(repo, &layer).await;
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer_digest.as_str()]},
            "config": {"Labels": {"nonce": nonce.to_string()}},
        }))
        .expect("config JSON");
        let config_digest = self.put_blob(repo, &config).await;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest.as_str(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest.as_str(), "size": layer.len()}],
        }))
        .expect("manifest JSON");
        self.put_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
        Digest::of(&manifest)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A secret backend holding a fixed map, for tests.
pub struct MapSecrets(pub HashMap<String, String>);

impl MapSecrets {
    pub fn with(reference: &str, value: &str) -> Self {
        Self(HashMap::from([(reference.to_owned(), value.to_owned())]))
    }

    pub fn empty() -> Self {
        Self(HashMap::new())
    }
}

#[async_trait::async_trait]
impl SecretSource for MapSecrets {
    fn name(&self) -> &'static str {
        "map"
    }

    async fn get(&self, reference: &str) -> Result<SecretString, SecretError> {
        self.0
            .get(reference)
            .map(|v| SecretString::from(v.clone()))
            .ok_or_else(|| SecretError::NotFound {
                backend: "map",
                reference: reference.to_owned(),
            })
    }
}

fn plain_client(cert: Option<&Path>) -> reqwest::Client {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if let Some(cert) = cert {
        let pem = std::fs::read(cert).expect("read cert");
        b = b.tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem).expect("cert PEM"));
    }
    b.build().expect("reqwest client")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn which(env: &str, name: &str) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(env)
        && !p.is_empty()
    {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn registry_bin() -> PathBuf {
    which("ATTESTD_TEST_REGISTRY_BIN", "docker-registry").unwrap_or_else(|| {
        panic!(
            "install docker-registry: run ./scripts/test (it installs it) or apt-get install docker-registry"
        )
    })
}

fn write_htpasswd(path: &Path, user: &str, pass: &str) {
    let bin = which("ATTESTD_TEST_HTPASSWD_BIN", "htpasswd").unwrap_or_else(|| {
        panic!("htpasswd not found: run ./scripts/test or apt-get install apache2-utils")
    });
    let out = Command::new(bin)
        .args(["-Bbn", "-C", "4", user, pass])
        .output()
        .expect("run htpasswd");
    assert!(out.status.success(), "htpasswd failed");
    std::fs::write(path, out.stdout).expect("write htpasswd");
}

/// A self-signed leaf for 127.0.0.1 that rustls accepts (CA:FALSE), per SERVICES.md.
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let bin = which("ATTESTD_TEST_OPENSSL_BIN", "openssl")
        .unwrap_or_else(|| panic!("openssl not found: apt-get install openssl"));
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new(bin)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}
