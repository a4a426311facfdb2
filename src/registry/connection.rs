//! One configured registry: its TLS trust, its credentials (read from the secret backend on every
//! use and again after a 401/403, so a rotated password takes effect) and the clients speaking to
//! it: one reqwest client per credentials, every request authenticated with the cached decision
//! of [`AuthCache`]. oci-client supplies only the `Reference` type and error codes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_client::Reference;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::OnceCell;

use super::auth::{Access, AuthCache, Authorization};
use super::error::{ErrorCode, RegistryError, from_status};
use super::layout;
use crate::config::{PushFormat, RegistrySettings, is_loopback_host};
use crate::domain::Digest;
use crate::secrets::SecretSource;

const USER_AGENT: &str = concat!("attestd/", env!("CARGO_PKG_VERSION"));
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) struct Connection {
    pub host: String,
    pub format: PushFormat,
    insecure_http: bool,
    ca_pem: Option<Vec<u8>>,
    username: Option<String>,
    password_ref: Option<String>,
    secrets: Arc<dyn SecretSource>,
    current: Mutex<Option<Current>>,
    /// Whether the registry serves `GET /v2/<repo>/referrers/<digest>`; probed once.
    referrers_api: OnceCell<bool>,
}

/// A client built for one password; replaced when the secret backend returns another.
#[derive(Clone)]
struct Current {
    password: Option<SecretString>,
    session: Session,
}

/// A ready client plus the credentials it was built with.
#[derive(Clone)]
pub(crate) struct Session {
    /// The registry's HTTP client (its TLS trust; keep-alive connections are reused).
    raw: reqwest::Client,
    credentials: Option<(String, SecretString)>,
    scheme: &'static str,
    /// `scheme://host/`, the only origin credentials are sent to.
    base: Url,
    auth_cache: Arc<AuthCache>,
}

/// A manifest write that failed, and whether the answer settled it (nothing was stored).
pub(crate) struct WriteFailure {
    pub error: RegistryError,
    pub settled: bool,
}

impl From<WriteFailure> for RegistryError {
    fn from(f: WriteFailure) -> Self {
        f.error
    }
}

/// What a `HEAD` of a manifest said.
pub(crate) struct ManifestHead {
    pub digest: Option<String>,
    pub media_type: Option<String>,
    pub size: Option<u64>,
}

impl Connection {
    pub fn new(
        s: &RegistrySettings,
        secrets: Arc<dyn SecretSource>,
    ) -> Result<Self, RegistryError> {
        let misconfigured = |m: String| RegistryError::permanent(ErrorCode::Misconfigured, m);
        if s.insecure_http && !is_loopback_host(&s.host) {
            return Err(misconfigured(format!(
                "registry {}: plain http is only allowed for loopback registries",
                s.host
            )));
        }
        let ca_pem = match &s.ca_file {
            Some(path) if !path.as_os_str().is_empty() => {
                let pem = std::fs::read(path).map_err(|e| {
                    misconfigured(format!(
                        "registry {}: cannot read ca_file {}: {e}",
                        s.host,
                        path.display()
                    ))
                })?;
                let parsed = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| e.to_string())
                    .and_then(|c| {
                        if c.is_empty() {
                            Err("no certificate in it".to_owned())
                        } else {
                            Ok(c)
                        }
                    });
                if let Err(e) = parsed {
                    return Err(misconfigured(format!(
                        "registry {}: ca_file {} is not PEM certificates: {e}",
                        s.host,
                        path.display()
                    )));
                }
                Some(pem)
            }
            _ => None,
        };
        let conn = Self {
            host: s.host.clone(),
            format: s.format,
            insecure_http: s.insecure_http,
            ca_pem,
            username: s.username.clone().filter(|u| !u.is_empty()),
            password_ref: s.password.clone().filter(|p| !p.is_empty()),
            secrets,
            current: Mutex::new(None),
            referrers_api: OnceCell::new(),
        };
        // Build once now so a bad TLS setup fails at start-up, not on the first push.
        conn.build(None)?;
        Ok(conn)
    }

    /// A client with current credentials.
    pub async fn session(&self) -> Result<Session, RegistryError> {
        let password = match (&self.username, &self.password_ref) {
            (Some(_), Some(reference)) => Some(
                self.secrets
                    .get(reference)
                    .await
                    .map_err(|e| RegistryError::from_secret(&self.host, &e))?,
            ),
            _ => None,
        };
        let same = |cur: &Current| match (&cur.password, &password) {
            (None, None) => true,
            (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
            _ => false,
        };
        if let Ok(guard) = self.current.lock()
            && let Some(cur) = guard.as_ref()
            && same(cur)
        {
            return Ok(cur.session.clone());
        }
        let session = self.build(password.as_ref())?;
        if let Ok(mut guard) = self.current.lock() {
            *guard = Some(Current {
                password,
                session: session.clone(),
            });
        }
        Ok(session)
    }

    /// Run `op` with a session. After a 401/403, forget the credentials and run it once more, so
    /// a password rotated in the secret backend (still cached there, or in the client's tokens)
    /// is picked up within the same attempt. A second refusal is returned as it is (retryable),
    /// with the credentials forgotten again for the next attempt.
    pub async fn with_reauth<T, F, Fut>(&self, op: F) -> Result<T, RegistryError>
    where
        F: Fn(Session) -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        match op(self.session().await?).await {
            Err(e) if e.code() == ErrorCode::Unauthorized => {
                tracing::info!(registry.host = %self.host, "registry refused the credentials; reading them again and re-authenticating");
                self.forget_credentials();
                let again = op(self.session().await?).await;
                if let Err(e) = &again
                    && e.code() == ErrorCode::Unauthorized
                {
                    tracing::warn!(registry.host = %self.host, "registry refused the credentials read again");
                    self.forget_credentials();
                }
                again
            }
            other => other,
        }
    }

    /// Drop the session (and with it the cached auth decision and bearer tokens) and
    /// the secret backend's cache, so the next session reads the password again.
    fn forget_credentials(&self) {
        self.secrets.invalidate();
        if let Ok(mut guard) = self.current.lock() {
            *guard = None;
        }
    }

    fn build(&self, password: Option<&SecretString>) -> Result<Session, RegistryError> {
        let misconfigured = |m: String| RegistryError::permanent(ErrorCode::Misconfigured, m);
        let mut raw = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT);
        if let Some(pem) = &self.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| misconfigured(format!("registry {}: bad ca_file: {e}", self.host)))?;
            raw = raw.tls_certs_merge(certs);
        }
        let raw = raw.build().map_err(|e| {
            misconfigured(format!(
                "registry {}: cannot build a client: {e}",
                self.host
            ))
        })?;
        let credentials = match (&self.username, password) {
            (Some(user), Some(pass)) => Some((user.clone(), pass.clone())),
            _ => None,
        };
        let scheme = if self.insecure_http { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{}/", self.host))
            .map_err(|e| misconfigured(format!("registry {}: not a host name: {e}", self.host)))?;
        Ok(Session {
            raw,
            scheme,
            base,
            auth_cache: Arc::new(AuthCache::new(credentials.clone())),
            credentials,
        })
    }

    /// `GET /v2/` as attestd's pushes would reach it: anonymously, then, when the registry asks,
    /// with the configured credentials (basic, or a bearer token from the realm it names, which
    /// is what oci-client does). `Ok` says how access was granted; nothing secret is in either.
    pub async fn check_api(&self) -> Result<String, RegistryError> {
        let session = self.session().await?;
        let url = format!("{}://{}/v2/", session.scheme, self.host);
        let what = format!("GET {url}");
        let send = |request: reqwest::RequestBuilder| {
            let what = what.clone();
            async move {
                request.send().await.map_err(|e| {
                    RegistryError::from_oci(
                        &what,
                        &oci_client::errors::OciDistributionError::from(e),
                    )
                })
            }
        };
        let anonymous = send(session.raw.get(&url)).await?;
        let user = session.credentials.as_ref().map(|(user, _)| user.as_str());
        match (anonymous.status().as_u16(), user) {
            (200, None) => return Ok("answers anonymously".into()),
            (200, Some(user)) => {
                return Ok(format!(
                    "answers without credentials (those of {user} are sent with each push)"
                ));
            }
            (401, _) => {}
            (status, _) => return Err(from_status(&what, status)),
        }
        let challenge = anonymous
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let Some((user, password)) = &session.credentials else {
            return Err(RegistryError::retryable(
                ErrorCode::Unauthorized,
                format!(
                    "{what}: the registry asks for credentials and none are configured \
                     (username and password under [[registries]])"
                ),
            ));
        };
        let (scheme, authenticated) = match bearer_challenge(&challenge) {
            Some((realm, service)) => {
                let mut token_request = session
                    .raw
                    .get(&realm)
                    .basic_auth(user, Some(password.expose_secret()));
                if let Some(service) = &service {
                    token_request = token_request.query(&[("service", service)]);
                }
                let answer = send(token_request).await?;
                if !answer.status().is_success() {
                    return Err(from_status(
                        &format!("{what}: token request to {realm}"),
                        answer.status().as_u16(),
                    ));
                }
                let body: serde_json::Value = answer.json().await.map_err(|_| {
                    RegistryError::permanent(
                        ErrorCode::InvalidContent,
                        format!("{what}: the token service at {realm} did not answer JSON"),
                    )
                })?;
                let token = body["token"]
                    .as_str()
                    .or_else(|| body["access_token"].as_str())
                    .ok_or_else(|| {
                        RegistryError::permanent(
                            ErrorCode::InvalidContent,
                            format!("{what}: the token service at {realm} returned no token"),
                        )
                    })?
                    .to_owned();
                ("bearer token", session.raw.get(&url).bearer_auth(token))
            }
            None => (
                "basic",
                session
                    .raw
                    .get(&url)
                    .basic_auth(user, Some(password.expose_secret())),
            ),
        };
        let answer = send(authenticated).await?;
        match answer.status().as_u16() {
            200 => Ok(format!("credentials of {user} accepted ({scheme})")),
            status => Err(from_status(&what, status)),
        }
    }

    /// Whether the registry implements the OCI 1.1 referrers API (404 means it does not).
    pub async fn supports_referrers(
        &self,
        s: &Session,
        reference: &Reference,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        self.referrers_api
            .get_or_try_init(|| s.probe_referrers(reference, digest))
            .await
            .copied()
    }
}

impl Session {
    pub fn reference(&self, host: &str, repository: &str, tag: &str) -> Reference {
        Reference::with_tag(host.to_owned(), repository.to_owned(), tag.to_owned())
    }

    pub fn by_digest(&self, host: &str, repository: &str, digest: &str) -> Reference {
        Reference::with_digest(host.to_owned(), repository.to_owned(), digest.to_owned())
    }

    /// `…/v2/<repository>/<kind>/<tag or digest>` on this registry.
    fn url(&self, reference: &Reference, kind: &str) -> Result<Url, RegistryError> {
        let target = reference
            .digest()
            .or(reference.tag())
            .unwrap_or("latest")
            .to_owned();
        self.join(&format!("v2/{}/{kind}/{target}", reference.repository()))
    }

    fn join(&self, path: &str) -> Result<Url, RegistryError> {
        self.base.join(path).map_err(|e| {
            RegistryError::permanent(
                ErrorCode::Misconfigured,
                format!("{path} on {}: not a URL: {e}", self.base),
            )
        })
    }

    /// Send one request, authenticated as the registry last asked; after a 401 that teaches
    /// something new (another scheme, a fresh bearer token), once more. Credentials only go to
    /// this registry's own origin (a `Location` elsewhere gets none). Any other answer, a second
    /// 401 included, is returned for the caller to classify.
    async fn send(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Option<bytes::Bytes>,
        (repository, access): (&str, Access),
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let own_origin = url.origin() == self.base.origin();
        let attempt = |auth: Authorization| {
            let mut request = self
                .raw
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(body) = &body {
                request = request.body(body.clone());
            }
            if own_origin {
                request = auth.apply(request);
            }
            async move {
                request
                    .send()
                    .await
                    .map_err(|e| RegistryError::from_transport(what, e))
            }
        };
        let auth = if own_origin {
            self.auth_cache
                .authorization(&self.raw, repository, access, what)
                .await?
        } else {
            Authorization::None
        };
        let response = attempt(auth.clone()).await?;
        if response.status() != StatusCode::UNAUTHORIZED || !own_origin {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !self.auth_cache.learn(challenge, repository, access, &auth) {
            return Ok(response);
        }
        let auth = self
            .auth_cache
            .authorization(&self.raw, repository, access, what)
            .await?;
        attempt(auth).await
    }

    async fn read_manifest(
        &self,
        method: Method,
        reference: &Reference,
        access: Access,
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let url = self.url(reference, "manifests")?;
        let scope = (reference.repository(), access);
        self.send(method, url, accept_manifests(), None, scope, what)
            .await
    }

    /// A manifest's bytes and digest, or `None` if the registry says it does not exist. A
    /// manifest read by digest must have that digest.
    pub async fn manifest(
        &self,
        reference: &Reference,
        access: Access,
        what: &str,
    ) -> Result<Option<(Vec<u8>, String)>, RegistryError> {
        let response = self
            .read_manifest(Method::GET, reference, access, what)
            .await?;
        let status = response.status().as_u16();
        let header_digest = digest_header(response.headers());
        let body = response
            .bytes()
            .await
            .map_err(|e| RegistryError::from_transport(what, e))?;
        if status != 200 {
            let err = RegistryError::from_response(what, status, &body);
            return if err.is_not_found() {
                Ok(None)
            } else {
                Err(err)
            };
        }
        let digest = Digest::of(&body).to_string();
        let expected = reference.digest().or(header_digest
            .as_deref()
            .filter(|d| d.starts_with("sha256:")));
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(RegistryError::retryable(
                ErrorCode::Unavailable,
                format!("{what}: content digest mismatch in transfer"),
            ));
        }
        Ok(Some((body.to_vec(), digest)))
    }

    /// Whether a manifest exists, with the digest, media type and size the registry states.
    pub async fn manifest_head(
        &self,
        reference: &Reference,
        access: Access,
        what: &str,
    ) -> Result<Option<ManifestHead>, RegistryError> {
        let response = self
            .read_manifest(Method::HEAD, reference, access, what)
            .await?;
        match response.status().as_u16() {
            200 => {
                let headers = response.headers();
                let text = |name| {
                    headers
                        .get(name)
                        .and_then(|v: &HeaderValue| v.to_str().ok())
                };
                Ok(Some(ManifestHead {
                    digest: digest_header(headers),
                    media_type: text(CONTENT_TYPE)
                        .and_then(|t| t.split(';').next())
                        .map(|t| t.trim().to_owned())
                        .filter(|t| !t.is_empty()),
                    size: text(CONTENT_LENGTH).and_then(|n| n.parse().ok()),
                }))
            }
            // A HEAD answer has no body to name an error code in.
            404 => Ok(None),
            status => Err(from_status(what, status)),
        }
    }

    /// Upload a blob as one monolithic `POST` + `PUT` (attestation blobs are small). A registry
    /// that implemented the OCI single-`POST` upload could take it in one request; CNCF
    /// distribution 2.8 does not (it answers the `POST` with an upload session regardless).
    pub async fn push_blob(
        &self,
        reference: &Reference,
        bytes: &[u8],
        what: &str,
    ) -> Result<(), RegistryError> {
        let scope = (reference.repository(), Access::Push);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let start = self
            .send(
                Method::POST,
                self.join(&format!("v2/{}/blobs/uploads/", reference.repository()))?,
                headers,
                None,
                scope,
                what,
            )
            .await?;
        let location = match start.status().as_u16() {
            202 => start
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            status => {
                let body = start.bytes().await.unwrap_or_default();
                return Err(RegistryError::from_response(what, status, &body));
            }
        };
        let mut url = location
            .as_deref()
            .and_then(|l| self.base.join(l).ok())
            .ok_or_else(|| {
                RegistryError::permanent(
                    ErrorCode::InvalidContent,
                    format!("{what}: the registry started an upload without a usable Location"),
                )
            })?;
        url.query_pairs_mut()
            .append_pair("digest", Digest::of(bytes).as_str());
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let finish = self
            .send(
                Method::PUT,
                url,
                headers,
                Some(bytes::Bytes::copy_from_slice(bytes)),
                scope,
                what,
            )
            .await?;
        expect_created(finish, what).await
    }

    /// Write a manifest. A failure says whether the registry's answer settled the write (a
    /// refusal) or its fate is unknown: no answer, or a gateway's 502/504, behind which the
    /// registry may still store it.
    pub async fn push_manifest(
        &self,
        reference: &Reference,
        body: &[u8],
        media_type: &'static str,
        what: &str,
    ) -> Result<(), WriteFailure> {
        let unknown = |error| WriteFailure {
            error,
            settled: false,
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(media_type));
        let url = self.url(reference, "manifests").map_err(unknown)?;
        let response = self
            .send(
                Method::PUT,
                url,
                headers,
                Some(bytes::Bytes::copy_from_slice(body)),
                (reference.repository(), Access::Push),
                what,
            )
            .await
            .map_err(unknown)?;
        let settled = !matches!(response.status().as_u16(), 502 | 504);
        expect_created(response, what)
            .await
            .map_err(|error| WriteFailure { error, settled })
    }

    /// The digest a tag points at: from `Docker-Content-Digest` of a `HEAD`, else by reading it.
    pub async fn resolve(
        &self,
        reference: &Reference,
        what: &str,
    ) -> Result<String, RegistryError> {
        let not_found =
            || RegistryError::permanent(ErrorCode::ImageNotFound, format!("{what}: not found"));
        let head = self
            .manifest_head(reference, Access::Pull, what)
            .await?
            .ok_or_else(not_found)?;
        if let Some(digest) = head.digest {
            return Ok(digest);
        }
        self.manifest(reference, Access::Pull, what)
            .await?
            .map(|(_, digest)| digest)
            .ok_or_else(not_found)
    }

    /// A blob's bytes, streamed and refused as soon as it is known to exceed `max_bytes` (from
    /// `Content-Length`, or counting), and checked against its digest.
    pub async fn pull_blob(
        &self,
        reference: &Reference,
        digest: &str,
        max_bytes: u64,
        what: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        let too_large = || {
            RegistryError::permanent(
                ErrorCode::AttestationTooLarge,
                format!(
                    "{what}: blob {digest} is larger than {max_bytes} bytes (verify.max_layer_bytes)"
                ),
            )
        };
        let url = self.join(&format!("v2/{}/blobs/{digest}", reference.repository()))?;
        let mut response = self
            .send(
                Method::GET,
                url,
                HeaderMap::new(),
                None,
                (reference.repository(), Access::Pull),
                what,
            )
            .await?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.bytes().await.unwrap_or_default();
            return Err(RegistryError::from_response(what, status, &body));
        }
        if response.content_length().is_some_and(|n| n > max_bytes) {
            return Err(too_large());
        }
        let mut out = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| RegistryError::from_transport(what, e))?
        {
            if (out.len() + chunk.len()) as u64 > max_bytes {
                return Err(too_large());
            }
            out.extend_from_slice(&chunk);
        }
        if digest.starts_with("sha256:") && Digest::of(&out).as_str() != digest {
            return Err(RegistryError::retryable(
                ErrorCode::Unavailable,
                format!("{what}: content digest mismatch in transfer"),
            ));
        }
        Ok(out)
    }

    /// `GET /v2/<repository>/referrers/<digest>` (the OCI 1.1 referrers API), optionally
    /// filtered by artifact type.
    async fn get_referrers(
        &self,
        repository: &str,
        digest: &str,
        artifact_type: Option<&str>,
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut url = self.join(&format!("v2/{repository}/referrers/{digest}"))?;
        if let Some(t) = artifact_type {
            url.query_pairs_mut().append_pair("artifactType", t);
        }
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(layout::OCI_INDEX));
        self.send(
            Method::GET,
            url,
            headers,
            None,
            (repository, Access::Pull),
            what,
        )
        .await
    }

    /// The referrers list from the native API (only call when it is supported), filtered to
    /// `artifact_type` here too: a registry may ignore the filter.
    pub async fn referrers(
        &self,
        subject: &Reference,
        artifact_type: &str,
        what: &str,
    ) -> Result<Vec<serde_json::Value>, RegistryError> {
        let target = subject.digest().unwrap_or_default();
        let response = self
            .get_referrers(subject.repository(), target, Some(artifact_type), what)
            .await?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| RegistryError::from_transport(what, e))?;
        if status != 200 {
            return Err(RegistryError::from_response(what, status, &body));
        }
        let index: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            RegistryError::permanent(ErrorCode::InvalidContent, format!("{what}: {e}"))
        })?;
        Ok(index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["artifactType"] == artifact_type)
            .cloned()
            .collect())
    }

    async fn probe_referrers(
        &self,
        reference: &Reference,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let what = format!(
            "probe the referrers API of {}",
            reference.resolve_registry()
        );
        let response = self
            .get_referrers(reference.repository(), digest.as_str(), None, &what)
            .await?;
        match response.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            status => Err(from_status(&what, status)),
        }
    }
}

fn accept_manifests() -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&layout::ACCEPTED_MANIFESTS.join(", ")) {
        headers.insert(ACCEPT, v);
    }
    headers
}

fn digest_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A write's answer: `201 Created`, or the registry's error.
async fn expect_created(response: reqwest::Response, what: &str) -> Result<(), RegistryError> {
    let status = response.status().as_u16();
    if status == 201 {
        return Ok(());
    }
    let body = response.bytes().await.unwrap_or_default();
    Err(RegistryError::from_response(what, status, &body))
}
/// The realm and service of a `WWW-Authenticate: Bearer realm="…",service="…"` challenge.
pub(super) fn bearer_challenge(header: &str) -> Option<(String, Option<String>)> {
    let (scheme, params) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    for param in params.split(',') {
        let Some((key, value)) = param.trim().split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_owned();
        match key.trim().to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value),
            "service" => service = Some(value),
            _ => {}
        }
    }
    Some((realm?, service))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_give_realm_and_service() {
        assert_eq!(
            bearer_challenge(
                r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="x""#
            ),
            Some((
                "https://auth.example.com/token".to_owned(),
                Some("registry.example.com".to_owned())
            ))
        );
        assert_eq!(bearer_challenge(r#"Basic realm="test""#), None);
        assert_eq!(bearer_challenge("Bearer service=\"x\""), None);
    }
}
