//! HMAC-SHA256 webhook authentication (`X-Attestd-Signature-256: sha256=<hex>`, the scheme of
//! GitHub's `X-Hub-Signature-256`). Each source is bound to one account and may carry two
//! secrets at once so they can be rotated without downtime. Comparison is constant time.

use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use super::adapters::SourceKind;
use crate::domain::AccountId;
use crate::domain::scope::RepositoryScope;
use crate::domain::template::ImageTemplate;

pub const SIGNATURE_HEADER: &str = "x-attestd-signature-256";

type HmacSha256 = hmac::Hmac<Sha256>;

/// A webhook sender: its name, the account it speaks for, its current secret(s), and what the
/// operator lets it attest (see [`WebhookSource::admit`](crate::ingest::admission)).
pub struct WebhookSource {
    pub name: String,
    /// The webhook dialect it speaks.
    pub kind: SourceKind,
    pub account: AccountId,
    pub secrets: Vec<SecretString>,
    /// Repositories whose images this source may attest.
    pub repositories: RepositoryScope,
    /// Builder identities this source may claim; never empty, the first is the default.
    pub builder_ids: Vec<String>,
    /// The images of its successful builds whose webhook names none.
    pub images: Vec<ImageTemplate>,
}

/// All configured sources.
pub struct WebhookSources(Vec<WebhookSource>);

impl WebhookSources {
    pub fn new(sources: Vec<WebhookSource>) -> Self {
        Self(sources)
    }

    /// Every configured source.
    pub fn iter(&self) -> impl Iterator<Item = &WebhookSource> {
        self.0.iter()
    }

    /// The source of kind attestd whose secret produced `header` over `body`, if any. Every
    /// secret is checked (no early exit on the first match) so timing does not reveal which
    /// source matched.
    pub fn authenticate(&self, header: Option<&str>, body: &[u8]) -> Option<&WebhookSource> {
        let mut found = None;
        for source in self.0.iter().filter(|s| s.kind == SourceKind::Attestd) {
            if verify_hex_hmac(header, body, &source.secrets) && found.is_none() {
                found = Some(source);
            }
        }
        found
    }

    /// The source configured under `name`.
    pub fn named(&self, name: &str) -> Option<&WebhookSource> {
        self.0.iter().find(|s| s.name == name)
    }
}

impl WebhookSources {
    /// The source whose secret signed a [Standard Webhooks](super::standard_webhooks) delivery.
    /// Every source is checked (no early exit); a stale timestamp is refused before any.
    pub fn authenticate_standard(
        &self,
        headers: super::standard_webhooks::Headers<'_>,
        body: &[u8],
        now: i64,
        tolerance_secs: i64,
    ) -> Result<&WebhookSource, super::standard_webhooks::Refused> {
        use super::standard_webhooks::{Refused, verify};
        let mut found = None;
        for source in &self.0 {
            match verify(headers, body, &source.secrets, now, tolerance_secs) {
                Ok(()) if found.is_none() => found = Some(source),
                Ok(()) => {}
                Err(Refused::Stale) => return Err(Refused::Stale),
                Err(Refused::BadSignature) => {}
            }
        }
        found.ok_or(Refused::BadSignature)
    }
}

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under one of `secrets`; every
/// secret is tried, each comparison constant time.
pub fn verify_hex_hmac(header: Option<&str>, body: &[u8], secrets: &[SecretString]) -> bool {
    let Some(provided) = header
        .and_then(|h| h.trim().strip_prefix("sha256="))
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let mut ok = false;
    for secret in secrets {
        let Ok(mut mac) = HmacSha256::new_from_slice(secret.expose_secret().as_bytes()) else {
            continue;
        };
        mac.update(body);
        ok |= mac.verify_slice(&provided).is_ok();
    }
    ok
}

/// `sha256=<hex>` for `body` under `secret`; what a sender puts in the header.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> WebhookSources {
        WebhookSources::new(vec![
            WebhookSource {
                name: "a".into(),
                kind: SourceKind::Attestd,
                account: "acme".parse().unwrap(),
                secrets: vec!["old".into(), "new".into()],
                repositories: Default::default(),
                builder_ids: vec!["https://ci.example.com/a".into()],
                images: Vec::new(),
            },
            WebhookSource {
                name: "b".into(),
                kind: SourceKind::Attestd,
                account: "other".parse().unwrap(),
                secrets: vec!["bsecret".into()],
                repositories: Default::default(),
                builder_ids: vec!["https://ci.example.com/b".into()],
                images: Vec::new(),
            },
        ])
    }

    #[test]
    fn both_rotation_secrets_authenticate_their_source() {
        let s = sources();
        for secret in ["old", "new"] {
            let header = sign(secret.as_bytes(), b"{}");
            assert_eq!(
                s.authenticate(Some(&header), b"{}")
                    .unwrap()
                    .account
                    .as_str(),
                "acme"
            );
        }
        let header = sign(b"bsecret", b"{}");
        assert_eq!(s.authenticate(Some(&header), b"{}").unwrap().name, "b");
    }

    #[test]
    fn wrong_missing_or_malformed_signatures_are_refused() {
        let s = sources();
        let header = sign(b"new", b"{}");
        assert!(
            s.authenticate(Some(&header), b"{ }").is_none(),
            "body changed"
        );
        assert!(s.authenticate(None, b"{}").is_none());
        assert!(s.authenticate(Some("sha256=zz"), b"{}").is_none());
        assert!(
            s.authenticate(Some(&header.replace("sha256=", "sha1=")), b"{}")
                .is_none()
        );
        assert!(
            s.authenticate(Some(&sign(b"guess", b"{}")), b"{}")
                .is_none()
        );
    }
}
