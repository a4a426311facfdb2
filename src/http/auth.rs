//! Read authorization: a bearer token (or, for the web view, the same token in a cookie),
//! configured only as its SHA-256, bound to one account or to every account (admin). Another account's execution looks exactly like a missing one.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use sha2::Digest as _;
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::config::TokenSettings;
use crate::domain::AccountId;
use crate::error::ApiError;

/// Who is reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reader {
    /// May read every account, re-drive and verify.
    Admin,
    /// May read, re-drive and verify this account only.
    Account(AccountId),
    /// No token, on a loopback listener with no tokens configured: may read every account and
    /// do nothing else (no retry, no verify).
    Anonymous,
}

impl Reader {
    /// Whether this reader may see `account`'s data.
    pub fn can_read(&self, account: &AccountId) -> bool {
        match self {
            Self::Admin | Self::Anonymous => true,
            Self::Account(own) => own == account,
        }
    }

    /// The account lists must be restricted to (`None` for admins and anonymous readers).
    pub fn scope(&self) -> Option<&AccountId> {
        match self {
            Self::Admin | Self::Anonymous => None,
            Self::Account(a) => Some(a),
        }
    }

    /// Whether this reader sees every account (admin, or anonymous read-only).
    pub fn sees_all_accounts(&self) -> bool {
        self.scope().is_none()
    }

    /// Whether this reader may make attestd act (re-drive deliveries, verify in a registry).
    pub fn may_act(&self) -> bool {
        !matches!(self, Self::Anonymous)
    }

    /// `401` for anonymous readers: acting on executions needs a token.
    pub fn require_token(&self) -> Result<(), ApiError> {
        if self.may_act() {
            Ok(())
        } else {
            Err(ApiError::Unauthenticated)
        }
    }
}

/// Configured tokens, by hash, and whether (and for which `Host` values) anonymous reads are on.
pub struct Tokens {
    tokens: Vec<([u8; 32], Reader)>,
    /// `Some`: anonymous reads are allowed for requests whose `Host` is one of these (lowercase
    /// `host[:port]`): the listen address and `server.public_url`, so a page on another name
    /// that resolves to loopback (DNS rebinding) is not served.
    anonymous_hosts: Option<Vec<String>>,
}

impl Tokens {
    pub fn new(tokens: &[TokenSettings], anonymous_hosts: Option<Vec<String>>) -> Self {
        let tokens = tokens
            .iter()
            .filter_map(|t| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(t.sha256.to_ascii_lowercase(), &mut hash).ok()?;
                let reader = match (&t.account, t.admin) {
                    (_, true) => Reader::Admin,
                    (Some(a), false) => Reader::Account(a.clone()),
                    (None, false) => return None,
                };
                Some((hash, reader))
            })
            .collect();
        Self {
            tokens,
            anonymous_hosts,
        }
    }

    /// The reader for a presented token, or for no token when anonymous reads are allowed and
    /// `host` (the request's `Host`) names this server.
    pub fn reader(&self, bearer: Option<&str>, host: Option<&str>) -> Option<Reader> {
        let Some(token) = bearer else {
            let hosts = self.anonymous_hosts.as_ref()?;
            let host = host?.to_ascii_lowercase();
            return hosts.contains(&host).then_some(Reader::Anonymous);
        };
        let hash: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (h, reader) in &self.tokens {
            if bool::from(h.ct_eq(&hash)) && found.is_none() {
                found = Some(reader.clone());
            }
        }
        found
    }
}

/// Hex SHA-256 of a token: what goes into `auth.tokens[].sha256`.
pub fn hash_token(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Browsers cannot send bearer tokens from links and forms: the web view's login stores
        // the token in a cookie, used only when no Authorization header was sent.
        let token = match parts.headers.get(axum::http::header::AUTHORIZATION) {
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim),
            None => cookie(&parts.headers, TOKEN_COOKIE).filter(|v| !v.is_empty()),
        };
        let host = parts
            .headers
            .get(axum::http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()));
        state
            .tokens
            .reader(token, host)
            .ok_or(ApiError::Unauthenticated)
    }
}

/// The `Host` values anonymous reads answer to: the listen address (and `localhost` for a
/// loopback IP) and the authority of `public_url`; the port may be left out where it is the
/// scheme's default.
pub fn anonymous_hosts(listen: std::net::SocketAddr, public_url: &str) -> Vec<String> {
    let port = listen.port();
    let mut hosts = vec![listen.to_string()];
    if listen.ip().is_loopback() {
        hosts.push(format!("localhost:{port}"));
    }
    if port == 80 {
        hosts.push(match listen {
            std::net::SocketAddr::V4(a) => a.ip().to_string(),
            std::net::SocketAddr::V6(a) => format!("[{}]", a.ip()),
        });
        if listen.ip().is_loopback() {
            hosts.push("localhost".into());
        }
    }
    if let Some((scheme, rest)) = public_url.split_once("://") {
        let authority = rest.split('/').next().unwrap_or("").to_ascii_lowercase();
        if !authority.is_empty() {
            hosts.push(authority.clone());
            let default_port = if scheme == "https" { ":443" } else { ":80" };
            match authority.strip_suffix(default_port) {
                Some(bare) => hosts.push(bare.to_owned()),
                None if !authority.contains(':') || authority.ends_with(']') => {
                    hosts.push(format!("{authority}{default_port}"))
                }
                None => {}
            }
        }
    }
    hosts.sort();
    hosts.dedup();
    hosts
}

/// The cookie the web view's login sets to the presented read token.
pub const TOKEN_COOKIE: &str = "attestd_token";

/// The value of the first cookie named `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};

    use super::{Tokens, anonymous_hosts, cookie};
    use crate::http::auth::Reader;

    #[test]
    fn cookie_is_found_among_others_and_across_headers() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; theme=dark"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("attestd_token=tok-123;x=y"),
        );
        assert_eq!(cookie(&h, "attestd_token"), Some("tok-123"));
        assert_eq!(cookie(&h, "theme"), Some("dark"));
        assert_eq!(cookie(&h, "attestd"), None, "names match exactly");
        assert_eq!(cookie(&HeaderMap::new(), "attestd_token"), None);
    }

    #[test]
    fn quoted_cookie_values_are_unquoted() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("attestd_token=\"abc\""),
        );
        assert_eq!(cookie(&h, "attestd_token"), Some("abc"));
    }

    #[test]
    fn anonymous_reads_answer_only_to_this_servers_host_names() {
        let hosts = anonymous_hosts("127.0.0.1:8080".parse().unwrap(), "http://127.0.0.1:8080");
        let tokens = Tokens::new(&[], Some(hosts));
        assert_eq!(
            tokens.reader(None, Some("127.0.0.1:8080")),
            Some(Reader::Anonymous)
        );
        assert_eq!(
            tokens.reader(None, Some("LOCALHOST:8080")),
            Some(Reader::Anonymous)
        );
        for rebound in ["attacker.example:8080", "127.0.0.1:9090", "localhost"] {
            assert_eq!(tokens.reader(None, Some(rebound)), None, "{rebound}");
        }
        assert_eq!(tokens.reader(None, None), None);
        assert_eq!(
            Tokens::new(&[], None).reader(None, Some("127.0.0.1:8080")),
            None
        );
    }

    #[test]
    fn public_url_names_are_accepted_with_and_without_the_default_port() {
        let hosts = anonymous_hosts(
            "127.0.0.1:8080".parse().unwrap(),
            "https://attestd.internal/",
        );
        assert!(hosts.contains(&"attestd.internal".to_owned()), "{hosts:?}");
        assert!(
            hosts.contains(&"attestd.internal:443".to_owned()),
            "{hosts:?}"
        );
        assert!(!Reader::Anonymous.may_act() && Reader::Admin.may_act());
    }
}
