//! Webhook ingest: authenticate the raw body against the configured sources, then parse and
//! validate it into a [`BuildCompleted`](crate::domain::BuildCompleted).

pub mod adapters;
pub mod admission;
pub mod build_webhook;
pub mod group_commit;
pub mod signature;
pub mod standard_webhooks;

pub use admission::Refusal;
pub use build_webhook::{FieldError, fingerprint, parse_build_webhook};
pub use signature::{SIGNATURE_HEADER, WebhookSource, WebhookSources};
