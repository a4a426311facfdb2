//! Pushing signed attestations to OCI registries where cosign looks for them (`sha256-<hex>.att`)
//! and, optionally, as OCI 1.1 referrers; and reading them back for verification.
//! Only registries listed in configuration are ever contacted.
