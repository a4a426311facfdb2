//! Pure types and rules of attestd: identifiers, normalized builds, provenance statements and
//! DSSE envelopes. Nothing in here performs I/O or knows about HTTP, SQL or registries.

pub mod build;
pub mod dsse;
pub mod ids;
pub mod provenance;
pub mod scope;
pub mod template;

pub use build::{Artifact, BuildCompleted, BuildStatus, ImageRef};
pub use ids::{AccountId, Digest, ExecutionId, KeyId};
