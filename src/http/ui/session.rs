//! Signing in to the web view: the read token goes into an HttpOnly, SameSite=Strict cookie
//! scoped to `/ui`, and every state-changing form must come from the public URL's own origin.

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::Deserialize;

use super::{HtmlError, page};
use crate::app::AppState;
use crate::error::ApiError;
use crate::http::auth::TOKEN_COOKIE;

/// Proof that a form post came from our own pages: its `Origin` (when the browser sent one)
/// is the public URL's origin. Together with SameSite=Strict this is the CSRF defence.
pub struct SameOrigin;

impl FromRequestParts<AppState> for SameOrigin {
    type Rejection = HtmlError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, HtmlError> {
        match parts.headers.get(header::ORIGIN) {
            None => Ok(Self),
            Some(origin) => {
                let origin = origin.to_str().unwrap_or("");
                if same_origin(origin, &state.public_url) {
                    Ok(Self)
                } else {
                    tracing::warn!(origin, public_url = %state.public_url, "cross-origin form post refused");
                    Err(ApiError::Forbidden(
                        "cross_origin_request",
                        "this form was posted from another site; if you opened attestd through \
                         a different address, use the one in server.public_url"
                            .into(),
                    )
                    .into())
                }
            }
        }
    }
}

/// `scheme://host[:port]` of a URL, lowercased, default ports dropped; `None` if not absolute
/// (e.g. the `null` origin of sandboxed documents).
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_ascii_lowercase();
    let authority = match (scheme.as_str(), authority.rsplit_once(':')) {
        ("http", Some((host, "80"))) | ("https", Some((host, "443"))) => host.to_owned(),
        _ => authority,
    };
    (!authority.is_empty()).then(|| format!("{scheme}://{authority}"))
}

/// Whether an `Origin` header value names the same origin as `public_url`.
pub fn same_origin(origin: &str, public_url: &str) -> bool {
    match (origin_of(origin), origin_of(public_url)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Whether a token can be stored in a cookie unquoted and unencoded (RFC 6265 cookie-octets).
fn cookie_safe(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E))
}

fn token_cookie(state: &AppState, value: &str, max_age: Option<u32>) -> Option<HeaderValue> {
    let mut cookie = format!("{TOKEN_COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Strict");
    if state.public_url.starts_with("https://") {
        cookie.push_str("; Secure");
    }
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&cookie).ok()
}

fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    page(status, "login.html", context! { error => error })
}

pub async fn show_login_page() -> Response {
    login_page(StatusCode::OK, None)
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn log_in(
    State(state): State<AppState>,
    _: SameOrigin,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return login_page(StatusCode::BAD_REQUEST, Some("Enter a read token."));
    };
    let token = form.token.trim();
    if token.is_empty() || state.tokens.reader(Some(token), None).is_none() {
        return login_page(
            StatusCode::UNAUTHORIZED,
            Some("That token is not valid. Check it and try again."),
        );
    }
    let cookie = cookie_safe(token)
        .then(|| token_cookie(&state, token, None))
        .flatten();
    let Some(cookie) = cookie else {
        return login_page(
            StatusCode::BAD_REQUEST,
            Some(
                "This token contains characters a browser cookie cannot hold; use it with the API's Authorization header instead.",
            ),
        );
    };
    let mut response = Redirect::to("/ui/executions").into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
}

pub async fn log_out(State(state): State<AppState>, _: SameOrigin) -> Response {
    let mut response = Redirect::to("/ui/login").into_response();
    if let Some(cookie) = token_cookie(&state, "", Some(0)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::{cookie_safe, origin_of, same_origin};

    #[test]
    fn origins_compare_scheme_host_and_port_only() {
        let public = "https://attestd.example.com/base/";
        assert!(same_origin("https://attestd.example.com", public));
        assert!(same_origin("HTTPS://Attestd.Example.com:443", public));
        assert!(!same_origin("http://attestd.example.com", public), "scheme");
        assert!(
            !same_origin("https://attestd.example.com:8443", public),
            "port"
        );
        assert!(!same_origin("https://evil.example", public));
        assert!(!same_origin(
            "https://attestd.example.com.evil.example",
            public
        ));
        assert!(!same_origin("null", public), "opaque origins never match");
        assert!(!same_origin("", public));
        assert!(same_origin(
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080"
        ));
        assert!(same_origin("http://localhost", "http://localhost:80"));
        assert!(same_origin("http://[::1]:9000", "http://[::1]:9000/"));
    }

    #[test]
    fn origin_of_drops_userinfo_path_and_default_port() {
        assert_eq!(
            origin_of("https://user:pw@Host.example:443/x?y#z").as_deref(),
            Some("https://host.example")
        );
        assert_eq!(origin_of("ftp://host"), None);
        assert_eq!(origin_of("/ui/executions"), None);
    }

    #[test]
    fn only_cookie_octets_go_into_a_cookie() {
        assert!(cookie_safe("acme-read-token_0123.ABC~+/="));
        for bad in ["", "a b", "a;b", "a,b", "a\"b", "a\\b", "é"] {
            assert!(!cookie_safe(bad), "{bad:?}");
        }
    }
}
