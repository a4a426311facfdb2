//! Integration tests: the real app against real PostgreSQL, SQLite, registries and OpenBao.

mod api;
mod signing;
mod store;
mod support;
