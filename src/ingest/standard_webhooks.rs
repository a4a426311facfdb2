//! [Standard Webhooks](https://www.standardwebhooks.com/) signatures, accepted from a source of
//! any kind: `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`, a
//! space-separated list of `v1,<base64 HMAC-SHA256>` over `"{id}.{timestamp}.{body}"`, keyed
//! with the secret's bytes (a `whsec_` secret is the base64 of those bytes). A timestamp outside
//! the tolerance is refused, so a captured delivery cannot be replayed later; the `webhook-id`
//! becomes the delivery id.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// The three Standard Webhooks headers of a request, as sent.
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a> {
    pub id: &'a str,
    pub timestamp: &'a str,
    pub signature: &'a str,
}

impl<'a> Headers<'a> {
    /// The headers from a request, if all three are present and text.
    pub fn from_request(headers: &'a axum::http::HeaderMap) -> Option<Self> {
        let get = |name| headers.get(name).and_then(|v| v.to_str().ok());
        Some(Self {
            id: get(ID_HEADER)?,
            timestamp: get(TIMESTAMP_HEADER)?,
            signature: get(SIGNATURE_HEADER)?,
        })
    }
}

/// Why a Standard Webhooks delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No signature in the header verifies with any secret.
    BadSignature,
    /// The timestamp is not a number, or further than the tolerance from now.
    Stale,
}

/// The key bytes of a secret: a `whsec_` secret is base64; any other is used as it is.
fn key_bytes(secret: &SecretString) -> Vec<u8> {
    let secret = secret.expose_secret();
    match secret.strip_prefix("whsec_") {
        Some(encoded) => STANDARD
            .decode(encoded)
            .unwrap_or_else(|_| secret.as_bytes().to_vec()),
        None => secret.as_bytes().to_vec(),
    }
}

/// Verify a delivery against `secrets` at time `now` (Unix seconds). Every secret and every
/// listed signature is compared in constant time; none is skipped on an early match.
pub fn verify(
    headers: Headers<'_>,
    body: &[u8],
    secrets: &[SecretString],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), Refused> {
    let timestamp: i64 = headers
        .timestamp
        .trim()
        .parse()
        .map_err(|_| Refused::Stale)?;
    if (now - timestamp).abs() > tolerance_secs {
        return Err(Refused::Stale);
    }
    let provided: Vec<Vec<u8>> = headers
        .signature
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .collect();
    let mut ok = false;
    for secret in secrets {
        let expected = sign_bytes(&key_bytes(secret), headers.id, timestamp, body);
        for candidate in &provided {
            ok |= bool::from(candidate.as_slice().ct_eq(&expected));
        }
    }
    if ok {
        Ok(())
    } else {
        Err(Refused::BadSignature)
    }
}

fn sign_bytes(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// `v1,<base64>` for a delivery: what a sender puts in `webhook-signature`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = key_bytes(&SecretString::from(secret.to_owned()));
    format!(
        "v1,{}",
        STANDARD.encode(sign_bytes(&key, id, timestamp, body))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn headers<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> Headers<'a> {
        Headers {
            id,
            timestamp: ts,
            signature: sig,
        }
    }

    /// The example delivery of the Standard Webhooks specification (standard-webhooks/
    /// standard-webhooks, spec/standard-webhooks.md, "Signature scheme").
    #[test]
    fn the_specifications_example_signature_is_reproduced() {
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_signature_verifies_with_its_secret_within_the_tolerance() {
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body);
        let secrets = [SecretString::from(SECRET.to_owned())];
        let h = headers("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", &sig);
        assert_eq!(verify(h, body, &secrets, 1_614_265_330, 300), Ok(()));
        assert_eq!(verify(h, body, &secrets, 1_614_265_330 + 299, 300), Ok(()));
        assert_eq!(
            verify(h, body, &secrets, 1_614_265_330 + 301, 300),
            Err(Refused::Stale)
        );
        assert_eq!(
            verify(h, b"{}", &secrets, 1_614_265_330, 300),
            Err(Refused::BadSignature)
        );
        let other = [SecretString::from("whsec_b3RoZXI=".to_owned())];
        assert_eq!(
            verify(h, body, &other, 1_614_265_330, 300),
            Err(Refused::BadSignature)
        );
    }

    #[test]
    fn any_listed_signature_and_either_rotation_secret_is_enough() {
        let body = b"{}";
        let sig = sign("whsec_bmV3", "id-1", 100, body);
        let list = format!("v1,AAAA v1a,zzz {sig}");
        let secrets = [
            SecretString::from("whsec_b2xk".to_owned()),
            SecretString::from("whsec_bmV3".to_owned()),
        ];
        assert_eq!(
            verify(headers("id-1", "100", &list), body, &secrets, 100, 300),
            Ok(())
        );
        // The id is signed: another id does not verify.
        assert_eq!(
            verify(headers("id-2", "100", &list), body, &secrets, 100, 300),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            verify(headers("id-1", "soon", &list), body, &secrets, 100, 300),
            Err(Refused::Stale)
        );
    }
}
