//! Shared helpers: real services started as plain processes, torn down on drop.

pub mod registry;
