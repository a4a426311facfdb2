//! Responses for what can no longer change, kept in this process's memory: a settled execution
//! (see [`crate::store::Execution::is_settled`]) as `GET /v1/executions/{id}` and a list page's
//! items serialize it, and a statement or envelope once stored (both are written once). Every
//! replica may keep its own copy without being told of writes elsewhere, because there are none
//! to be told of; what can still change is never kept and is read from the database every time.
//! (The links in a kept response are written from `server.public_url`, fixed for the process.)
//!
//! A kept response remembers its account. A reader of another account gets no answer from here
//! and goes to the database like any read of something it may not see, so the 404 it gets and the
//! time it takes are those of an unreadable execution, kept or not.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use metrics::{Counter, Gauge};
use quick_cache::Weighter;
use quick_cache::sync::Cache;

use super::auth::Reader;
use crate::domain::{AccountId, ExecutionId};

/// Which response of an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Body {
    /// `GET /v1/executions/{id}`, and an item of a list page in the full view.
    Execution,
    /// An item of a list page in the basic view.
    Summary,
    /// `GET /v1/executions/{id}/provenance`.
    Statement,
    /// `GET /v1/executions/{id}/attestation`.
    Envelope,
}

#[derive(Clone)]
struct Kept {
    account: AccountId,
    bytes: Bytes,
}

/// Weight in bytes: the body, the account and about what the cache spends on an entry.
#[derive(Clone)]
struct Size;

impl Weighter<(ExecutionId, Body), Kept> for Size {
    fn weight(&self, _: &(ExecutionId, Body), kept: &Kept) -> u64 {
        (kept.bytes.len() + kept.account.as_str().len() + 96) as u64
    }
}

impl Body {
    const ALL: [Body; 4] = [
        Body::Execution,
        Body::Summary,
        Body::Statement,
        Body::Envelope,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Execution => "execution",
            Self::Summary => "summary",
            Self::Statement => "statement",
            Self::Envelope => "envelope",
        }
    }
}

/// The kept responses, at most `server.read_cache_mib` of them; none when it is 0.
pub struct SettledReads {
    cache: Option<Cache<(ExecutionId, Body), Kept, Size>>,
    /// `attestd_read_cache_lookups_total` (hit, miss) per [`Body`], in [`Body::ALL`]'s order.
    lookups: [(Counter, Counter); 4],
    kept_bytes: Gauge,
}

/// An execution response is ~1–2 KB, a statement ~4 KB, an envelope ~5 KB.
const TYPICAL_ENTRY_BYTES: u64 = 2048;

impl SettledReads {
    pub fn new(capacity_mib: u64) -> Self {
        let bytes = capacity_mib.saturating_mul(1024 * 1024);
        Self {
            cache: (bytes > 0).then(|| {
                let items = usize::try_from(bytes / TYPICAL_ENTRY_BYTES).unwrap_or(usize::MAX);
                Cache::with_weighter(items, bytes, Size)
            }),
            lookups: Body::ALL.map(|body| crate::metrics::read_cache_lookups(body.as_str())),
            kept_bytes: crate::metrics::read_cache_bytes(),
        }
    }

    /// Whether responses are kept at all (`server.read_cache_mib` > 0).
    pub fn is_on(&self) -> bool {
        self.cache.is_some()
    }

    /// The kept response, if there is one and `reader` may see it.
    pub fn get(&self, id: ExecutionId, body: Body, reader: &Reader) -> Option<Bytes> {
        let cache = self.cache.as_ref()?;
        let found = cache
            .get(&(id, body))
            .filter(|kept| reader.can_read(&kept.account))
            .map(|kept| kept.bytes);
        let (hit, miss) = &self.lookups[body as usize];
        match found {
            Some(_) => hit.increment(1),
            None => miss.increment(1),
        }
        found
    }

    /// Keep a response of `account`'s execution: call only for what can no longer change.
    pub fn keep(&self, id: ExecutionId, body: Body, account: &AccountId, bytes: &Bytes) {
        if let Some(cache) = &self.cache {
            let kept = Kept {
                account: account.clone(),
                bytes: bytes.clone(),
            };
            cache.insert((id, body), kept);
            self.kept_bytes.set(cache.weight() as f64);
        }
    }
}

/// A stored document, byte for byte, named `filename` for a browser saving it.
pub fn document(bytes: Bytes, content_type: &'static str, filename: &str) -> Response {
    let disposition = HeaderValue::from_str(&format!("inline; filename=\"{filename}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("inline"));
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ExecutionId {
        ExecutionId::new()
    }

    #[test]
    fn a_kept_response_is_given_only_to_readers_of_its_account() {
        let reads = SettledReads::new(1);
        let (acme, globex): (AccountId, AccountId) =
            ("acme".parse().unwrap(), "globex".parse().unwrap());
        let execution = id();
        reads.keep(
            execution,
            Body::Execution,
            &acme,
            &Bytes::from_static(b"{}"),
        );
        let get = |reader: &Reader, body| reads.get(execution, body, reader);
        assert_eq!(
            get(&Reader::Account(acme.clone()), Body::Execution).as_deref(),
            Some(&b"{}"[..])
        );
        assert_eq!(
            get(&Reader::Admin, Body::Execution).as_deref(),
            Some(&b"{}"[..])
        );
        assert_eq!(get(&Reader::Account(globex), Body::Execution), None);
        assert_eq!(get(&Reader::Account(acme), Body::Statement), None);
    }

    #[test]
    fn each_body_counts_under_its_own_name() {
        for (i, body) in Body::ALL.into_iter().enumerate() {
            assert_eq!(body as usize, i, "{body:?}");
        }
    }

    #[test]
    fn nothing_is_kept_when_the_cache_is_off_and_the_cache_holds_its_size() {
        let acme: AccountId = "acme".parse().unwrap();
        let off = SettledReads::new(0);
        let execution = id();
        off.keep(execution, Body::Envelope, &acme, &Bytes::from_static(b"x"));
        assert_eq!(off.get(execution, Body::Envelope, &Reader::Admin), None);

        let one_mib = SettledReads::new(1);
        let body = Bytes::from(vec![b'x'; 4096]);
        for _ in 0..1024 {
            one_mib.keep(id(), Body::Statement, &acme, &body);
        }
        let cache = one_mib.cache.as_ref().unwrap();
        assert!(
            cache.weight() <= 1024 * 1024,
            "{} bytes kept in a 1 MiB cache",
            cache.weight()
        );
        assert!(cache.len() < 256, "{} 4 KiB entries in 1 MiB", cache.len());
    }
}
