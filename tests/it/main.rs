//! Integration tests: the real app against real PostgreSQL, SQLite, registries and OpenBao.

mod api;
mod attestation;
mod cli;
mod keys;
mod query;
mod registry;
mod signing;
mod store;
mod support;
mod ui;
