//! Integration tests: the real app against real PostgreSQL, SQLite, registries and OpenBao.

mod api;
mod attestation;
mod check;
mod ci_webhooks;
mod cli;
mod fencing;
mod group_commit;
mod hardening;
mod image_templates;
mod keys;
mod push_requests;
mod query;
mod registry;
mod registry_auth;
mod roles;
mod scale_out;
mod signing;
mod standard_webhooks;
mod store;
mod support;
mod tenancy;
mod ui;
mod verify_bounds;
