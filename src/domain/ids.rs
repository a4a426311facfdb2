//! Identifier newtypes. Each is parsed once at the edge, so holding one proves it is well formed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why an identifier failed to parse; the message is safe to show to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdError(pub String);

/// An account (tenant). 1–128 characters of `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AccountId(String);

impl AccountId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AccountId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError(
                "must be 1-128 characters of letters, digits, '.', '_' or '-'".into(),
            ))
        }
    }
}

impl<'de> Deserialize<'de> for AccountId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// attestd's own id for a recorded execution (UUIDv7, so ids sort by creation time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExecutionId(pub Uuid);

impl ExecutionId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// When the id was minted: the UUIDv7 millisecond timestamp. attestd stores this as the
    /// execution's receipt time, so ranges of ids are ranges of receipt time.
    pub fn created_at(&self) -> time::OffsetDateTime {
        let b = self.0.as_bytes();
        let ms = b[..6]
            .iter()
            .fold(0i128, |acc, &x| (acc << 8) | i128::from(x));
        time::OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }

    /// The smallest id minted at or after `t`: `id >= lower_bound(a) AND id < lower_bound(b)`
    /// selects the executions received in `[a, b)`.
    pub fn lower_bound(t: time::OffsetDateTime) -> Uuid {
        let ms = (t.unix_timestamp_nanos() / 1_000_000).clamp(0, (1 << 48) - 1) as u64;
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        Uuid::from_bytes(bytes)
    }
}

impl Default for ExecutionId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for ExecutionId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| IdError("not a valid execution id (UUID)".into()))
    }
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A content digest, `sha256:` followed by 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Digest(String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(bytes))
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex characters without the `sha256:` prefix.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl FromStr for Digest {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s.strip_prefix("sha256:").is_some_and(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError(
                "must be 'sha256:' followed by 64 lowercase hex characters".into(),
            ))
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A signing key's id: lowercase hex SHA-256 of the public key's SubjectPublicKeyInfo DER.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    pub fn from_spki_der(der: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(hex::encode(sha2::Sha256::digest(der)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_accepts_only_lowercase_sha256_hex() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(good.parse::<Digest>().unwrap().hex(), "a".repeat(64));
        for bad in [
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha512:{}", "a".repeat(64)),
            "a".repeat(64),
            format!("sha256:{}g", "a".repeat(63)),
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn execution_ids_order_like_their_receipt_times() {
        let id = ExecutionId::new();
        let at = id.created_at();
        let now = time::OffsetDateTime::now_utc();
        assert!((now - at).whole_seconds().abs() < 5);
        assert!(ExecutionId::lower_bound(at) <= id.0);
        assert!(ExecutionId::lower_bound(at + time::Duration::milliseconds(1)) > id.0);
        assert_eq!(ExecutionId(ExecutionId::lower_bound(at)).created_at(), at);
    }

    #[test]
    fn account_id_refuses_separators_and_empty() {
        assert!("acme-prod_1.x".parse::<AccountId>().is_ok());
        for bad in ["", "a/b", "a b", "ä", &"x".repeat(129)] {
            assert!(bad.parse::<AccountId>().is_err(), "{bad:?} must be refused");
        }
    }
}
