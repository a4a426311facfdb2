//! Rego policies over provenance statements, evaluated with `regorus`; a policy only ever sees a
//! statement that already passed signature, type and subject checks.
//!
//! Conventions, as in OPA/conftest:
//! - A policy denies through a rule named `deny` in its own package; the statement is allowed by
//!   the policy when `deny` is empty or undefined. Each element of `deny` is one message: a string,
//!   an object with a string `msg` (conftest style), or anything else shown as JSON. A `deny`
//!   object (what Rego v1 makes of `deny[msg] if {..}`) contributes its keys. A policy without a
//!   `deny` rule is refused when loaded.
//! - Syntax: Rego v1 (`deny contains msg if {..}`) is tried first; a policy that does not parse as
//!   v1 is parsed as Rego v0 (`deny[msg] {..}`, as in Harness' examples, where `import rego.v1`
//!   or `import future.keywords` also work). Only when both fail is it refused, with both errors.
//!   Builtins: regorus core (strings, JSON, objects, sets, aggregates...) plus `regex.*`; no
//!   `http.send`, `time.*`, `glob.*` or `net.*`.
//! - Input: chosen once per policy from its text ([`InputShape::detect`]): a policy that indexes
//!   `input` like an array (`input[0]`, `input[_]`) sees the Harness SSCA shape
//!   `input[0].outcome.stepArtifacts.provenanceArtifacts[0]` = the whole statement (`_type`,
//!   `subject`, `predicateType`, `predicate`); every other policy sees the statement as `input`.
//!   [`Policy::with_input_shape`] overrides the detection. Policies are never run against both
//!   shapes: a `not input.x` test would then deny on the shape the author did not mean.
//! - Bounds: [`check_bounds`] (count, size, name) before anything is parsed; [`EvalLimits`] per
//!   evaluation (regorus' timer, deny messages capped). The server parses and evaluates only in a
//!   child process ([`isolated`]), because regorus can abort the process (allocation failure) or
//!   overflow its stack in ways nothing in-process can catch.

mod child;
pub mod isolated;
mod protocol;
mod shape;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regorus::Engine;
use serde::{Deserialize, Serialize};

pub use child::run_child;
pub use shape::InputShape;

/// Longest policy name, in bytes; names appear in every result and message.
pub const MAX_POLICY_NAME_BYTES: usize = 128;

/// What one evaluation of one policy on one statement may use and return; the defaults are
/// `config/default.toml`'s `[verify]` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvalLimits {
    /// regorus' execution timer, in milliseconds.
    pub timeout_ms: u64,
    /// Most deny messages kept, counting the one that says how many more were left out.
    pub max_messages: usize,
    /// Longest deny message kept, in bytes, counting the mark of a cut one.
    pub max_message_bytes: usize,
}

impl Default for EvalLimits {
    fn default() -> Self {
        Self {
            timeout_ms: 2000,
            max_messages: 20,
            max_message_bytes: 1024,
        }
    }
}

/// A policy as a caller gives it: not parsed yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySource {
    pub name: String,
    pub rego: String,
}

/// Why a set of policies is refused before anything is parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundsError {
    #[error("{count} policies given; at most {max} are evaluated per verification")]
    TooMany { count: usize, max: usize },
    #[error("policy {policy:?} is {bytes} bytes; at most {max} are accepted")]
    TooLarge {
        policy: String,
        bytes: u64,
        max: usize,
    },
    #[error("policy names must be 1 to {MAX_POLICY_NAME_BYTES} bytes")]
    BadName,
}

/// The cheap checks, before any policy is read whole or parsed: how many, each one's size (as
/// given: a file's length, a request's string) and its name.
pub fn check_bounds<'a>(
    policies: impl ExactSizeIterator<Item = (&'a str, u64)>,
    max_policies: usize,
    max_policy_bytes: usize,
) -> Result<(), BoundsError> {
    if policies.len() > max_policies {
        return Err(BoundsError::TooMany {
            count: policies.len(),
            max: max_policies,
        });
    }
    for (name, bytes) in policies {
        if name.is_empty() || name.len() > MAX_POLICY_NAME_BYTES {
            return Err(BoundsError::BadName);
        }
        if bytes > max_policy_bytes as u64 {
            return Err(BoundsError::TooLarge {
                policy: name.to_owned(),
                bytes,
                max: max_policy_bytes,
            });
        }
    }
    Ok(())
}

/// Why a policy could not be loaded or evaluated; always names the policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("policy {policy:?} does not parse: {reason}")]
    Parse { policy: String, reason: String },
    #[error("policy {policy:?} has no `deny` rule, so it could never deny anything")]
    NoDenyRule { policy: String },
    #[error("policy {policy:?} failed to evaluate: {reason}")]
    Evaluate { policy: String, reason: String },
}

/// The Rego syntax a policy parsed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RegoVersion {
    V1,
    V0,
}

/// A parsed Rego policy with the rule path of its `deny` set.
#[derive(Debug, Clone)]
pub struct Policy {
    name: String,
    source: String,
    input_shape: InputShape,
    rego_version: RegoVersion,
    deny_rule: String,
    engine: Engine,
}

/// The outcome of one policy on one statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyResult {
    pub policy: String,
    /// True when the policy denied nothing.
    pub allowed: bool,
    /// Every deny message, in the policy's (sorted set) order.
    pub messages: Vec<String>,
    pub input_shape: InputShape,
}

impl Policy {
    /// Parses `source`; `name` identifies the policy in results and errors.
    pub fn from_source(
        name: impl Into<String>,
        source: impl Into<String>,
    ) -> Result<Self, PolicyError> {
        let name = name.into();
        let source = source.into();
        let (engine, package, rego_version) = parse(&name, &source)?;
        let policy = Self {
            input_shape: InputShape::detect(&source),
            deny_rule: format!("{package}.deny"),
            name,
            source,
            rego_version,
            engine,
        };
        Ok(policy)
    }

    /// Reads and parses a `.rego` file; the policy is named after the file name without `.rego`.
    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        let source = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_source(name_of_file(path), source)
    }

    /// Uses `shape` for `input` instead of the detected one.
    pub fn with_input_shape(mut self, shape: InputShape) -> Self {
        self.input_shape = shape;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn input_shape(&self) -> InputShape {
        self.input_shape
    }

    pub fn rego_version(&self) -> RegoVersion {
        self.rego_version
    }

    /// This policy's verdict on `statement`, with the default [`EvalLimits`].
    pub fn evaluate(&self, statement: &serde_json::Value) -> Result<PolicyResult, PolicyError> {
        self.evaluate_with(statement, &EvalLimits::default())
    }

    /// This policy's verdict on `statement` within `limits`.
    pub fn evaluate_with(
        &self,
        statement: &serde_json::Value,
        limits: &EvalLimits,
    ) -> Result<PolicyResult, PolicyError> {
        let failed = |reason: String| PolicyError::Evaluate {
            policy: self.name.clone(),
            reason: truncate(reason, limits.max_message_bytes),
        };
        let mut engine = self.engine.clone();
        engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
            limit: Duration::from_millis(limits.timeout_ms),
            check_interval: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
        });
        engine.set_input(regorus::Value::from(self.input_shape.input_for(statement)));
        let deny = engine
            .eval_rule(self.deny_rule.clone())
            .map_err(|e| failed(format!("{e:#}")))?;
        let messages = cap_messages(deny_messages(&deny).map_err(failed)?, limits);
        Ok(PolicyResult {
            policy: self.name.clone(),
            allowed: messages.is_empty(),
            messages,
            input_shape: self.input_shape,
        })
    }
}

/// A policy file's name: the file name without `.rego`.
pub fn name_of_file(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Every policy's verdict on `statement`, in the order given, with the default [`EvalLimits`].
pub fn evaluate(
    policies: &[Policy],
    statement: &serde_json::Value,
) -> Result<Vec<PolicyResult>, PolicyError> {
    evaluate_with(policies, statement, &EvalLimits::default())
}

/// Every policy's verdict on `statement`, in the order given; stops at the first that fails to
/// evaluate.
pub fn evaluate_with(
    policies: &[Policy],
    statement: &serde_json::Value,
    limits: &EvalLimits,
) -> Result<Vec<PolicyResult>, PolicyError> {
    policies
        .iter()
        .map(|p| p.evaluate_with(statement, limits))
        .collect()
}

/// What marks a cut message.
const TRUNCATED: &str = "… [truncated]";

/// At most `max_messages` messages (when some are left out, the last one says how many) of at
/// most `max_message_bytes` each (a cut message ends in "… [truncated]"). Applying it again
/// changes nothing, so the server re-applies it to what its evaluator child returns. A denial
/// stays a denial: some message always remains.
pub fn cap_messages(mut messages: Vec<String>, limits: &EvalLimits) -> Vec<String> {
    let max = limits.max_messages.max(1);
    let left_out = if messages.len() > max {
        let left_out = messages.len() - (max - 1);
        messages.truncate(max - 1);
        Some(left_out)
    } else {
        None
    };
    let mut messages: Vec<String> = messages
        .into_iter()
        .map(|m| truncate(m, limits.max_message_bytes))
        .collect();
    if let Some(n) = left_out {
        messages.push(truncate(
            format!("… and {n} more deny messages not shown"),
            limits.max_message_bytes,
        ));
    }
    messages
}

/// `text` in at most `max` bytes: cut at a character boundary and marked, if it was longer.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let marker = if max > TRUNCATED.len() { TRUNCATED } else { "" };
    let mut end = max - marker.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(marker);
    text
}

/// Parses as Rego v1, then v0; returns the engine, the package path (`data.x.y`) and the syntax.
fn parse(name: &str, source: &str) -> Result<(Engine, String, RegoVersion), PolicyError> {
    let file = format!("{name}.rego");
    let attempt = |version: RegoVersion| {
        let mut engine = Engine::new();
        engine.set_rego_v0(version == RegoVersion::V0);
        engine
            .add_policy(file.clone(), source.to_owned())
            .map(|package| (engine, package))
    };
    let (engine, package, version) = match attempt(RegoVersion::V1) {
        Ok((engine, package)) => (engine, package, RegoVersion::V1),
        Err(v1) => match attempt(RegoVersion::V0) {
            Ok((engine, package)) => (engine, package, RegoVersion::V0),
            Err(v0) => {
                return Err(PolicyError::Parse {
                    policy: name.to_owned(),
                    reason: format!("as Rego v1: {v1:#}; as Rego v0: {v0:#}"),
                });
            }
        },
    };
    let has_deny = engine
        .has_declared_rule_rooted_at(&file, "deny")
        .map_err(|e| PolicyError::Parse {
            policy: name.to_owned(),
            reason: format!("{e:#}"),
        })?;
    if !has_deny {
        return Err(PolicyError::NoDenyRule {
            policy: name.to_owned(),
        });
    }
    Ok((engine, package, version))
}

/// The messages in a `deny` value; undefined and empty mean "allowed".
fn deny_messages(deny: &regorus::Value) -> Result<Vec<String>, String> {
    if *deny == regorus::Value::Undefined {
        return Ok(Vec::new());
    }
    let json = deny
        .to_json_str()
        .map_err(|e| format!("`deny` is not representable as JSON: {e:#}"))?;
    let value: serde_json::Value =
        serde_json::from_str(&json).map_err(|e| format!("`deny` is not JSON: {e}"))?;
    match value {
        // Sets arrive as arrays.
        serde_json::Value::Array(items) => Ok(items.iter().map(message).collect()),
        serde_json::Value::Object(map) => Ok(map
            .into_iter()
            .filter(|(_, v)| *v != serde_json::Value::Bool(false))
            .map(|(k, _)| k)
            .collect()),
        serde_json::Value::Bool(false) | serde_json::Value::Null => Ok(Vec::new()),
        serde_json::Value::Bool(true) => Ok(vec!["denied".to_owned()]),
        serde_json::Value::String(s) => Ok(vec![s]),
        other => Err(format!("`deny` must be a set of messages, got {other}")),
    }
}

fn message(item: &serde_json::Value) -> String {
    match item {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => match o.get("msg") {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => item.to_string(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests;
