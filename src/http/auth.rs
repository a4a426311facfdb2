//! Read authorization: a bearer token, configured only as its SHA-256, bound to one account or
//! to every account (admin). Another account's execution looks exactly like a missing one.

use axum::extract::FromRequestParts;
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
        let bearer = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        state.tokens.reader(bearer).ok_or(ApiError::Unauthenticated)
    }
}
