//! A distribution token service for token-auth test registries: answers
//! `GET /token?scope=repository:<repo>:<actions>&service=…` for one user's basic credentials with
//! an ES256 JWT that the registry checks against the self-signed certificate named in the JWT's
//! `x5c` header (and in the registry's `rootcertbundle`). Counts the tokens it issues.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use tempfile::TempDir;

struct Shared {
    key: std::sync::Mutex<(EcdsaKeyPair, Vec<u8>)>,
    user: String,
    password: String,
    issued: AtomicUsize,
    lifetime_secs: AtomicU64,
}

/// A running token service; stops when dropped.
pub struct TokenIssuer {
    pub port: u16,
    /// The certificate the registry trusts (`rootcertbundle`).
    pub root_cert: PathBuf,
    shared: Arc<Shared>,
    _dir: TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl TokenIssuer {
    pub async fn start(user: &str, password: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = signing_key(&dir);
        let shared = Arc::new(Shared {
            key: std::sync::Mutex::new(key),
            user: user.to_owned(),
            password: password.to_owned(),
            issued: AtomicUsize::new(0),
            lifetime_secs: AtomicU64::new(300),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind token service");
        let port = listener.local_addr().expect("address").port();
        let app = axum::Router::new()
            .route("/token", get(issue))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            port,
            root_cert: cert,
            shared,
            _dir: dir,
            server,
        }
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> usize {
        self.shared.issued.load(Ordering::SeqCst)
    }

    /// The `expires_in` (and JWT lifetime) of tokens issued from now on.
    pub fn set_lifetime_secs(&self, secs: u64) {
        self.shared.lifetime_secs.store(secs, Ordering::SeqCst);
    }

    /// Sign with a new key from now on; `root_cert` then holds the new certificate (a registry
    /// reads it when it starts), so tokens issued before no longer verify there.
    pub fn rotate_key(&self) {
        let (cert, key) = signing_key(&self._dir);
        assert_eq!(cert, self.root_cert);
        *self.shared.key.lock().unwrap() = key;
    }

    /// A token for the test's own client, not counted.
    pub fn mint(&self, repository: &str) -> String {
        jwt(&self.shared, repository, &["pull", "push"], 600)
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A fresh P-256 key and its self-signed certificate, written to `cert.pem` in `dir`.
fn signing_key(dir: &TempDir) -> (PathBuf, (EcdsaKeyPair, Vec<u8>)) {
    let (cert, key) = super::registry::self_signed_cert(dir.path());
    let der = |path: &PathBuf| {
        pem::parse(std::fs::read(path).expect("PEM"))
            .expect("PEM")
            .contents()
            .to_vec()
    };
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der(&key))
        .expect("PKCS#8 P-256 key");
    let cert_der = der(&cert);
    (cert, (pair, cert_der))
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    scope: Option<String>,
}

async fn issue(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<axum::Json<serde_json::Value>, StatusCode> {
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", shared.user, shared.password))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let scope = q.scope.unwrap_or_default();
    let mut parts = scope.splitn(3, ':');
    let (_, repository, actions) = (parts.next(), parts.next(), parts.next());
    let (Some(repository), Some(actions)) = (repository, actions) else {
        return Err(StatusCode::BAD_REQUEST);
    };
    let actions: Vec<&str> = actions.split(',').collect();
    let lifetime = shared.lifetime_secs.load(Ordering::SeqCst);
    shared.issued.fetch_add(1, Ordering::SeqCst);
    Ok(axum::Json(serde_json::json!({
        "token": jwt(&shared, repository, &actions, lifetime),
        "expires_in": lifetime,
    })))
}

fn jwt(shared: &Shared, repository: &str, actions: &[&str], lifetime: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let key = shared.key.lock().unwrap();
    let header = serde_json::json!({
        "typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(&key.1)],
    });
    let claims = serde_json::json!({
        "iss": "test-issuer", "sub": shared.user, "aud": "test-registry",
        "exp": now + lifetime, "nbf": now - 10, "iat": now - 10,
        "jti": uuid::Uuid::new_v4().to_string(),
        "access": [{"type": "repository", "name": repository, "actions": actions}],
    });
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = key
        .0
        .sign(&SystemRandom::new(), signed.as_bytes())
        .expect("sign token");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}
