//! What the server and its `attestd policy-eval` child say to each other: one JSON request on
//! the child's stdin, then one JSON event per line on its stdout, written as each step finishes,
//! so that when the child dies the server knows which policy was running.

use serde::{Deserialize, Serialize};

use super::{EvalLimits, PolicyResult, PolicySource};

/// Parse `policies`, then evaluate each on every statement (statement by statement, policies in
/// order, the rest of a statement's policies skipped after one fails to evaluate, as in-process).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Request {
    pub policies: Vec<PolicySource>,
    /// Empty: only parse.
    pub statements: Vec<serde_json::Value>,
    pub limits: EvalLimits,
}

/// One line of the child's stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Event {
    /// Policy `policy` parsed and has a `deny` rule.
    Parsed { policy: usize },
    /// Policy `policy` does not parse; nothing else follows.
    Unparsable { policy: usize, reason: String },
    /// Policy `policy` has no `deny` rule; nothing else follows.
    NoDenyRule { policy: usize },
    /// Policy `policy`'s verdict on statement `statement`.
    Evaluated {
        statement: usize,
        policy: usize,
        result: PolicyResult,
    },
    /// Policy `policy` failed to evaluate on statement `statement`; the statement's remaining
    /// policies are skipped.
    Failed {
        statement: usize,
        policy: usize,
        reason: String,
    },
    /// Everything was done.
    Done,
}
