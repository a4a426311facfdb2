//! `attestd policy-eval`: the child process the server parses and evaluates policies in. It
//! reads one [`Request`] from stdin and writes one [`Event`] per line to stdout as each step
//! finishes. Whatever a policy does to this process (abort on a failed allocation, overflow the
//! stack, spin), the server watches from outside and keeps serving.

use std::io::{Read as _, Write};
use std::process::ExitCode;

use super::protocol::{Event, Request};
use super::{Policy, PolicyError};

/// Stack of the evaluating thread: fixed, so how deep a policy may recurse does not depend on
/// the `ulimit -s` the server was started with.
const STACK_BYTES: usize = 16 * 1024 * 1024;

/// The `policy-eval` program. Exit status 0 when every event was written; 2 when the request
/// could not be read or the output could not be written; a panic or signal otherwise.
pub fn run_child() -> ExitCode {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut input) {
        eprintln!("policy-eval: cannot read the request: {e}");
        return ExitCode::from(2);
    }
    let request: Request = match serde_json::from_slice(&input) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("policy-eval: the request is not valid: {e}");
            return ExitCode::from(2);
        }
    };
    drop(input);
    let worker = std::thread::Builder::new()
        .name("policy-eval".into())
        .stack_size(STACK_BYTES)
        .spawn(move || serve(request, std::io::stdout().lock()));
    match worker.map(|w| w.join()) {
        Ok(Ok(Ok(()))) => ExitCode::SUCCESS,
        Ok(Ok(Err(e))) => {
            eprintln!("policy-eval: cannot write the result: {e}");
            ExitCode::from(2)
        }
        // The panic message is already on stderr.
        Ok(Err(_)) => ExitCode::from(101),
        Err(e) => {
            eprintln!("policy-eval: cannot start the evaluating thread: {e}");
            ExitCode::from(2)
        }
    }
}

fn serve(request: Request, mut out: impl Write) -> std::io::Result<()> {
    let mut policies = Vec::with_capacity(request.policies.len());
    for (i, source) in request.policies.into_iter().enumerate() {
        match Policy::from_source(source.name, source.rego) {
            Ok(p) => {
                emit(&mut out, &Event::Parsed { policy: i })?;
                policies.push(p);
            }
            Err(PolicyError::NoDenyRule { .. }) => {
                return emit(&mut out, &Event::NoDenyRule { policy: i });
            }
            Err(PolicyError::Parse { reason, .. }) => {
                return emit(&mut out, &Event::Unparsable { policy: i, reason });
            }
            Err(other) => {
                let reason = other.to_string();
                return emit(&mut out, &Event::Unparsable { policy: i, reason });
            }
        }
    }
    for (s, statement) in request.statements.iter().enumerate() {
        for (p, policy) in policies.iter().enumerate() {
            match policy.evaluate_with(statement, &request.limits) {
                Ok(result) => emit(
                    &mut out,
                    &Event::Evaluated {
                        statement: s,
                        policy: p,
                        result,
                    },
                )?,
                Err(e) => {
                    let reason = match e {
                        PolicyError::Evaluate { reason, .. } => reason,
                        other => other.to_string(),
                    };
                    emit(
                        &mut out,
                        &Event::Failed {
                            statement: s,
                            policy: p,
                            reason,
                        },
                    )?;
                    break;
                }
            }
        }
    }
    emit(&mut out, &Event::Done)
}

fn emit(out: &mut impl Write, event: &Event) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, event)?;
    out.write_all(b"\n")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{EvalLimits, PolicySource};

    fn events(request: Request) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        serve(request, &mut out).unwrap();
        out.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    fn source(name: &str, rego: &str) -> PolicySource {
        PolicySource {
            name: name.into(),
            rego: rego.into(),
        }
    }

    #[test]
    fn a_failing_policy_skips_the_rest_of_its_statement_only() {
        let out = events(Request {
            policies: vec![
                source(
                    "fails-on-a",
                    "package a\ndeny := 3 if input.a\ndeny contains \"x\" if input.b",
                ),
                source("never", "package n\ndeny contains \"never\" if false"),
            ],
            statements: vec![
                serde_json::json!({"a": true}),
                serde_json::json!({"b": true}),
            ],
            limits: EvalLimits::default(),
        });
        let kinds: Vec<String> = out
            .iter()
            .map(|e| match e {
                serde_json::Value::String(s) => s.clone(),
                other => other.as_object().unwrap().keys().next().unwrap().clone(),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "parsed",
                "parsed",
                "failed",
                "evaluated",
                "evaluated",
                "done"
            ],
            "{out:?}"
        );
        assert_eq!(out[2]["failed"]["statement"], 0);
        assert_eq!(out[3]["evaluated"]["statement"], 1);
        assert_eq!(out[3]["evaluated"]["result"]["messages"][0], "x");
    }

    #[test]
    fn parse_failures_stop_at_the_policy_that_failed() {
        let out = events(Request {
            policies: vec![
                source("ok", "package ok\ndeny contains \"d\" if false"),
                source("broken", "package b\ndeny contains msg if {"),
                source("never-read", "package n\ndeny contains \"d\" if false"),
            ],
            statements: vec![serde_json::json!({})],
            limits: EvalLimits::default(),
        });
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[1]["unparsable"]["policy"], 1);
        assert!(
            out[1]["unparsable"]["reason"]
                .as_str()
                .unwrap()
                .contains("Rego v0")
        );
    }
}
