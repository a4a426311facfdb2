//! How one registry wants requests authenticated, learnt from the 401 challenge of a real request
//! and kept: anonymous, basic, or a bearer token per repository until it expires. A 401 to a
//! request sent as the registry last asked teaches the new decision (another scheme, or a fresh
//! token) and the request is sent once more; a 401 after that is the caller's (`Unauthorized`).
//!
//! oci-client 0.18 cannot do this through its public API: before a request it sends `GET /v2/`
//! to learn the scheme whenever its token cache has nothing for the (repository, operation) —
//! which for an anonymous registry is every request, since "no token needed" is never cached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};

use super::error::{ErrorCode, RegistryError, from_status};

/// What a request needs the registry to allow; a bearer token's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Access {
    Pull,
    /// Pull and push: a push asks for both from its first request on, so one token serves it.
    Push,
}

/// What the registry last asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scheme {
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// The `Authorization` a request is sent with.
#[derive(Clone)]
pub(crate) enum Authorization {
    None,
    Basic(String, SecretString),
    Bearer(SecretString),
}

impl Authorization {
    pub fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Self::None => request,
            Self::Basic(user, pass) => request.basic_auth(user, Some(pass.expose_secret())),
            Self::Bearer(token) => request.bearer_auth(token.expose_secret()),
        }
    }
}

struct Token {
    value: SecretString,
    until: Instant,
}

/// Bearer tokens whose lifetime the token service does not state live this long (the
/// distribution token specification's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// A token is not used in its last seconds, so it does not expire in flight.
const TOKEN_MARGIN: Duration = Duration::from_secs(5);

/// One registry's auth decision and bearer tokens, for one set of credentials.
pub(crate) struct AuthCache {
    credentials: Option<(String, SecretString)>,
    scheme: Mutex<Scheme>,
    tokens: Mutex<HashMap<(String, Access), Token>>,
}

impl AuthCache {
    /// Until a registry says otherwise, configured credentials are sent as basic auth (over TLS,
    /// or plain http on loopback only) and no credentials means anonymous.
    pub fn new(credentials: Option<(String, SecretString)>) -> Self {
        let scheme = if credentials.is_some() {
            Scheme::Basic
        } else {
            Scheme::Anonymous
        };
        Self {
            credentials,
            scheme: Mutex::new(scheme),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The authorization for a request to `repository` needing `access`; for a bearer registry
    /// without a live token for it, one is requested from the token service first.
    pub async fn authorization(
        &self,
        http: &reqwest::Client,
        repository: &str,
        access: Access,
        what: &str,
    ) -> Result<Authorization, RegistryError> {
        let scheme = self
            .scheme
            .lock()
            .map(|s| s.clone())
            .unwrap_or(Scheme::Anonymous);
        match scheme {
            Scheme::Anonymous => Ok(Authorization::None),
            Scheme::Basic => Ok(match &self.credentials {
                Some((user, pass)) => Authorization::Basic(user.clone(), pass.clone()),
                None => Authorization::None,
            }),
            Scheme::Bearer { realm, service } => {
                if let Some(token) = self.live_token(repository, access) {
                    return Ok(Authorization::Bearer(token));
                }
                let token = self
                    .request_token(http, &realm, service.as_deref(), repository, access, what)
                    .await?;
                Ok(Authorization::Bearer(token))
            }
        }
    }

    /// Learn from a 401 to a request sent with `used`: whether there is something new to try
    /// (another scheme, or a fresh token in place of a refused one).
    pub fn learn(
        &self,
        challenge: &str,
        repository: &str,
        access: Access,
        used: &Authorization,
    ) -> bool {
        let Some(asked) = parse_challenge(challenge) else {
            return false;
        };
        if asked == Scheme::Basic && self.credentials.is_none() {
            return false;
        }
        let retry = match (&asked, used) {
            // The token expired or was revoked: drop it, a fresh one is requested.
            (Scheme::Bearer { .. }, Authorization::Bearer(_)) => {
                if let Ok(mut tokens) = self.tokens.lock() {
                    tokens.remove(&(repository.to_owned(), access));
                    tokens.remove(&(repository.to_owned(), Access::Push));
                }
                true
            }
            (Scheme::Bearer { .. }, _) => true,
            (Scheme::Basic, Authorization::Basic(..)) => false,
            (Scheme::Basic, _) => true,
            (Scheme::Anonymous, _) => false,
        };
        if let Ok(mut scheme) = self.scheme.lock() {
            *scheme = asked;
        }
        retry
    }

    fn live_token(&self, repository: &str, access: Access) -> Option<SecretString> {
        let tokens = self.tokens.lock().ok()?;
        let now = Instant::now();
        let live = |a: Access| {
            tokens
                .get(&(repository.to_owned(), a))
                .filter(|t| t.until > now)
                .map(|t| t.value.clone())
        };
        // A pull-and-push token also serves pulls.
        live(access).or_else(|| live(Access::Push))
    }

    async fn request_token(
        &self,
        http: &reqwest::Client,
        realm: &str,
        service: Option<&str>,
        repository: &str,
        access: Access,
        what: &str,
    ) -> Result<SecretString, RegistryError> {
        let what = format!("{what}: token request to {realm}");
        let scope = match access {
            Access::Pull => format!("repository:{repository}:pull"),
            Access::Push => format!("repository:{repository}:pull,push"),
        };
        let mut request = http.get(realm).query(&[("scope", scope.as_str())]);
        if let Some(service) = service {
            request = request.query(&[("service", service)]);
        }
        // Credentials go to the token service only over TLS (or to a loopback one).
        let private = reqwest::Url::parse(realm).is_ok_and(|u| {
            u.scheme() == "https" || u.host_str().is_some_and(crate::config::is_loopback_host)
        });
        if let Some((user, pass)) = self.credentials.as_ref().filter(|_| private) {
            request = request.basic_auth(user, Some(pass.expose_secret()));
        }
        let asked = Instant::now();
        let answer = request
            .send()
            .await
            .map_err(|e| RegistryError::from_transport(&what, e))?;
        if !answer.status().is_success() {
            return Err(from_status(&what, answer.status().as_u16()));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let body = answer
            .bytes()
            .await
            .map_err(|e| RegistryError::from_transport(&what, e))?;
        let invalid =
            |m: &str| RegistryError::permanent(ErrorCode::InvalidContent, format!("{what}: {m}"));
        let parsed: Answer =
            serde_json::from_slice(&body).map_err(|_| invalid("the answer is not JSON"))?;
        let value = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid("no token in the answer"))?;
        let lifetime = parsed
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        let value = SecretString::from(value);
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(
                (repository.to_owned(), access),
                Token {
                    value: value.clone(),
                    until: asked + lifetime.saturating_sub(TOKEN_MARGIN),
                },
            );
        }
        Ok(value)
    }
}

/// The scheme a `WWW-Authenticate` header asks for.
fn parse_challenge(header: &str) -> Option<Scheme> {
    if let Some((realm, service)) = super::connection::bearer_challenge(header) {
        return Some(Scheme::Bearer { realm, service });
    }
    let scheme = header.trim().split(' ').next()?;
    scheme
        .eq_ignore_ascii_case("basic")
        .then_some(Scheme::Basic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic() -> AuthCache {
        AuthCache::new(Some(("u".into(), SecretString::from("p"))))
    }

    #[test]
    fn a_refused_password_is_not_retried_here_but_a_new_scheme_is() {
        let cache = basic();
        let used = Authorization::Basic("u".into(), SecretString::from("p"));
        assert!(!cache.learn(r#"Basic realm="r""#, "a/b", Access::Pull, &used));
        assert!(cache.learn(
            r#"Bearer realm="https://auth.example/token",service="reg""#,
            "a/b",
            Access::Pull,
            &used
        ));
        assert_eq!(
            *cache.scheme.lock().unwrap(),
            Scheme::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg".into())
            }
        );
    }

    #[test]
    fn a_refused_token_is_dropped_and_anonymous_learns_basic_only_with_credentials() {
        let cache = basic();
        cache.tokens.lock().unwrap().insert(
            ("a/b".into(), Access::Push),
            Token {
                value: SecretString::from("t"),
                until: Instant::now() + Duration::from_secs(60),
            },
        );
        assert!(
            cache.live_token("a/b", Access::Pull).is_some(),
            "push serves pull"
        );
        let used = Authorization::Bearer(SecretString::from("t"));
        assert!(cache.learn(r#"Bearer realm="https://a/t""#, "a/b", Access::Pull, &used));
        assert!(cache.live_token("a/b", Access::Pull).is_none());

        let anonymous = AuthCache::new(None);
        assert!(!anonymous.learn(
            r#"Basic realm="r""#,
            "a/b",
            Access::Pull,
            &Authorization::None
        ));
        assert!(basic().learn(
            r#"Basic realm="r""#,
            "a/b",
            Access::Pull,
            &Authorization::None
        ));
    }
}
