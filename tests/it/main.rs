//! Integration tests: the real app against real PostgreSQL, SQLite, registries and OpenBao.

mod api;
mod registry;
mod query;
mod store;
mod support;
