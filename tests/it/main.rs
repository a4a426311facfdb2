//! Integration tests against real services, one module per concern.

mod registry;
mod support;
