//! Integration tests: the real app against real PostgreSQL, SQLite, registries and OpenBao.

mod api;
mod attestation;
mod cli;
mod fencing;
mod keys;
mod query;
mod registry;
mod registry_auth;
mod signing;
mod store;
mod support;
mod tenancy;
mod ui;
