//! attestd: authenticated CI build webhooks in; signed SLSA v1 provenance attestations pushed
//! next to the image, and served over a REST API and a Supply Chain web view, out.

pub mod app;
pub mod check;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod policy;
pub mod registry;
pub mod secrets;
pub mod signing;
pub mod store;
pub mod verification;
pub mod worker;

pub use app::App;
