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
    /// May read every account.
    Admin,
    /// May read this account only.
    Account(AccountId),
}

impl Reader {
    /// Whether this reader may see `account`'s data.
    pub fn can_read(&self, account: &AccountId) -> bool {
        match self {
            Self::Admin => true,
            Self::Account(own) => own == account,
        }
    }

    /// The account lists must be restricted to (`None` for admins).
    pub fn scope(&self) -> Option<&AccountId> {
        match self {
            Self::Admin => None,
            Self::Account(a) => Some(a),
        }
    }
}

/// Configured tokens, by hash.
pub struct Tokens {
    tokens: Vec<([u8; 32], Reader)>,
    anonymous: bool,
}

impl Tokens {
    pub fn new(tokens: &[TokenSettings], anonymous: bool) -> Self {
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
        Self { tokens, anonymous }
    }

    /// The reader for a presented token (or for no token, when anonymous reads are allowed).
    pub fn reader(&self, bearer: Option<&str>) -> Option<Reader> {
        let Some(token) = bearer else {
            return self.anonymous.then_some(Reader::Admin);
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
        state.tokens.reader(token).ok_or(ApiError::Unauthenticated)
    }
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

    use super::cookie;

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
}
