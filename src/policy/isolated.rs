//! Parsing and evaluating policies for the server in `attestd policy-eval` child processes.
//!
//! A policy can end the process that runs it: regorus' `numbers.range` (and similar builtins)
//! call `Vec::with_capacity` with a size the policy chooses, and a failed allocation aborts; a
//! deep recursion overflows the stack. Neither can be caught in-process, so the server never
//! parses or evaluates a policy itself. Each child runs under `setrlimit` (address space, CPU
//! time, a few file descriptors, no core file), is killed at a wall-clock deadline (or when the
//! request is dropped), and at most `verify.evaluator_concurrency` run at once. Whatever ends a
//! child is reported as that policy's `policy_error` reason, and the request is answered.
//!
//! regorus' `allocator-memory-limits` feature is not used: it swaps the whole binary's allocator
//! for its bundled mimalloc and checks the budget between interpreter steps, so the one-shot
//! `Vec::with_capacity(huge)` above still aborts before any check runs. RLIMIT_AS stops both that
//! and gradual growth, in a process whose death costs nothing.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::Semaphore;

use super::protocol::{Event, Request};
use super::{EvalLimits, PolicyError, PolicyResult, PolicySource, cap_messages, truncate};
use crate::config::VerifySettings;

/// Open file descriptors the child may hold: stdin, stdout, stderr and a few spare.
const CHILD_NOFILE: u64 = 16;
/// Child stderr kept for classifying its end (panic and abort messages are short).
const STDERR_BYTES: u64 = 64 * 1024;

/// Every evaluator slot stayed taken for the whole deadline.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "every policy evaluator is busy (verify.evaluator_concurrency); try again in a few seconds"
)]
pub struct Busy;

/// Per statement: every policy's result, or the first policy that failed to evaluate.
pub type Verdicts = Vec<Result<Vec<PolicyResult>, PolicyError>>;

/// Runs `attestd policy-eval` children within the configured limits.
#[derive(Debug)]
pub struct Evaluator {
    program: PathBuf,
    limits: EvalLimits,
    deadline: Duration,
    memory_bytes: u64,
    slots: Semaphore,
}

impl Evaluator {
    /// An evaluator running `verify.evaluator_program`, or this executable when that is empty.
    pub fn new(settings: &VerifySettings) -> std::io::Result<Self> {
        let program = if settings.evaluator_program.as_os_str().is_empty() {
            std::env::current_exe()?
        } else {
            settings.evaluator_program.clone()
        };
        Ok(Self {
            program,
            limits: settings.eval_limits(),
            deadline: Duration::from_millis(settings.evaluator_deadline_ms),
            memory_bytes: settings.evaluator_memory_bytes,
            slots: Semaphore::new(settings.evaluator_concurrency),
        })
    }

    /// Parse every policy (syntax, a `deny` rule) in a child.
    pub async fn check(&self, policies: &[PolicySource]) -> Result<(), CheckError> {
        if policies.is_empty() {
            return Ok(());
        }
        let run = self.run(policies, Vec::new()).await?;
        let name = |i: usize| policy_name(policies, i);
        let mut parsed = 0;
        for event in &run.events {
            match event {
                Event::Parsed { .. } => parsed += 1,
                Event::Unparsable { policy, reason } => {
                    return Err(CheckError::Policy(PolicyError::Parse {
                        policy: name(*policy),
                        reason: reason.clone(),
                    }));
                }
                Event::NoDenyRule { policy } => {
                    return Err(CheckError::Policy(PolicyError::NoDenyRule {
                        policy: name(*policy),
                    }));
                }
                Event::Done if parsed == policies.len() => return Ok(()),
                _ => break,
            }
        }
        let reason = run.fate.unwrap_or_else(|| BAD_OUTPUT.to_owned());
        Err(CheckError::Policy(PolicyError::Parse {
            policy: name(parsed),
            reason: format!("while parsing it, {reason}"),
        }))
    }

    /// Every policy on every statement, in a child; one entry per statement, in order.
    pub async fn evaluate(
        &self,
        policies: &[PolicySource],
        statements: Vec<serde_json::Value>,
    ) -> Result<Verdicts, Busy> {
        let count = statements.len();
        if policies.is_empty() || count == 0 {
            return Ok((0..count).map(|_| Ok(Vec::new())).collect());
        }
        let run = self.run(policies, statements).await?;
        Ok(self.verdicts(policies, count, run))
    }

    /// Read the child's events in the order it must have written them; the first event out of
    /// order, or the end of the events before `done`, leaves the rest to the child's fate.
    fn verdicts(&self, policies: &[PolicySource], count: usize, run: Run) -> Verdicts {
        let name = |i: usize| policy_name(policies, i);
        let mut verdicts: Verdicts = Vec::with_capacity(count);
        let mut current: Vec<PolicyResult> = Vec::new();
        let mut parsed = 0;
        let mut finished = false;
        for event in run.events {
            let (s, p) = (verdicts.len(), current.len());
            match event {
                Event::Parsed { policy } if policy == parsed && s == 0 && p == 0 => parsed += 1,
                Event::Evaluated {
                    statement,
                    policy,
                    mut result,
                } if parsed == policies.len() && (statement, policy) == (s, p) && s < count => {
                    result.policy = name(p);
                    result.messages = cap_messages(result.messages, &self.limits);
                    result.allowed = result.messages.is_empty();
                    current.push(result);
                    if current.len() == policies.len() {
                        verdicts.push(Ok(std::mem::take(&mut current)));
                    }
                }
                Event::Failed {
                    statement,
                    policy,
                    reason,
                } if parsed == policies.len() && (statement, policy) == (s, p) && s < count => {
                    current.clear();
                    verdicts.push(Err(PolicyError::Evaluate {
                        policy: name(p),
                        reason: truncate(reason, self.limits.max_message_bytes),
                    }));
                }
                Event::Done if s == count => {
                    finished = true;
                    break;
                }
                _ => break,
            }
        }
        if finished {
            return verdicts;
        }
        let reason = run.fate.unwrap_or_else(|| BAD_OUTPUT.to_owned());
        let (running, reason) = if parsed < policies.len() {
            (parsed, format!("while parsing it, {reason}"))
        } else {
            (current.len(), reason)
        };
        let culprit = name(running);
        verdicts.push(Err(PolicyError::Evaluate {
            policy: culprit.clone(),
            reason: reason.clone(),
        }));
        while verdicts.len() < count {
            verdicts.push(Err(PolicyError::Evaluate {
                policy: culprit.clone(),
                reason: format!("not evaluated: on an earlier attestation, {reason}"),
            }));
        }
        verdicts.truncate(count);
        verdicts
    }

    /// Start a child for `policies` × `statements` and collect what it says and how it ended.
    async fn run(
        &self,
        policies: &[PolicySource],
        statements: Vec<serde_json::Value>,
    ) -> Result<Run, Busy> {
        let _slot = tokio::time::timeout(self.deadline, self.slots.acquire())
            .await
            .map_err(|_| Busy)?
            .map_err(|_| Busy)?;
        let pairs = policies.len() as u64 * (statements.len() as u64 + 1);
        let request = Request {
            policies: policies.to_vec(),
            statements,
            limits: self.limits,
        };
        let input = match serde_json::to_vec(&request) {
            Ok(bytes) => bytes,
            Err(e) => return Ok(Run::ended(format!("the request could not be encoded: {e}"))),
        };
        drop(request);
        // A result line: every kept message escaped at worst 6 bytes per byte, plus framing.
        let max_line = (self.limits.max_messages as u64 + 1)
            .saturating_mul(self.limits.max_message_bytes as u64 * 6 + 64)
            .saturating_add(64 * 1024);
        let max_total = max_line.saturating_mul(pairs + 2);

        let mut command = tokio::process::Command::new(&self.program);
        command
            .arg("policy-eval")
            .env_clear()
            // The child keeps the C library's allocator (see attestd's `allocator` module).
            .env("ATTESTD_ALLOCATOR", "system")
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let limits = ChildLimits {
            address_space: self.memory_bytes,
            cpu_secs: self.deadline.as_millis().div_ceil(1000) as u64 + 1,
        };
        // SAFETY: the closure runs between fork and exec and only calls getrlimit/setrlimit,
        // which are async-signal-safe, on values copied into it.
        unsafe {
            command.pre_exec(move || limits.apply());
        }
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(program = %self.program.display(), error = %e, "cannot start the policy evaluator");
                return Ok(Run::ended(format!(
                    "the policy evaluator could not be started: {e}"
                )));
            }
        };
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let mut events = Vec::new();
        let mut stderr_text = Vec::new();
        let mut bad_output = None;
        let finished = tokio::time::timeout(self.deadline, async {
            let write = async {
                if let Some(mut stdin) = stdin {
                    // A child that died early closes the pipe; its fate explains why.
                    let _ = stdin.write_all(&input).await;
                }
            };
            let read = async {
                if let Some(stdout) = stdout
                    && let Err(e) = read_events(stdout, max_line, max_total, &mut events).await
                {
                    bad_output = Some(e);
                    let _ = child.start_kill();
                }
            };
            let errors = async {
                if let Some(stderr) = stderr {
                    let mut stderr = stderr;
                    let _ = (&mut stderr)
                        .take(STDERR_BYTES)
                        .read_to_end(&mut stderr_text)
                        .await;
                    let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
                }
            };
            tokio::join!(write, read, errors);
            child.wait().await
        })
        .await;
        let fate = match finished {
            Err(_elapsed) => {
                let _ = child.kill().await;
                Some(format!(
                    "time limit: the policy evaluator ran longer than {} ms and was stopped",
                    self.deadline.as_millis()
                ))
            }
            Ok(status) => {
                let stderr_text = String::from_utf8_lossy(&stderr_text);
                let done = matches!(events.last(), Some(Event::Done));
                match (bad_output, status) {
                    (Some(e), _) => Some(e),
                    (None, Ok(status)) if done && status.success() => None,
                    (None, Ok(status)) => Some(self.fate(status, &stderr_text)),
                    (None, Err(e)) => Some(format!("the policy evaluator was lost: {e}")),
                }
            }
        };
        if let Some(reason) = &fate {
            tracing::warn!(reason = %reason, "policy evaluator did not finish");
        }
        Ok(Run { events, fate })
    }

    /// What ended a child that did not finish, from its exit status and stderr.
    fn fate(&self, status: ExitStatus, stderr: &str) -> String {
        use std::os::unix::process::ExitStatusExt as _;
        if stderr.contains("memory allocation of") {
            return format!(
                "memory limit: the policy needed more than the evaluator's {} MiB",
                self.memory_bytes / (1024 * 1024)
            );
        }
        if stderr.contains("has overflowed its stack") {
            return "stack overflow: the policy recursed or nested too deeply".to_owned();
        }
        match status.signal() {
            Some(libc::SIGXCPU) | Some(libc::SIGKILL) => format!(
                "CPU time limit: the policy evaluator used more than {} s of CPU",
                self.deadline.as_millis().div_ceil(1000) + 1
            ),
            Some(signal) => format!("the policy evaluator crashed (signal {signal})"),
            None if stderr.contains("panicked") => {
                "the policy evaluator crashed (a panic in the Rego engine)".to_owned()
            }
            None => format!("the policy evaluator failed ({status})"),
        }
    }
}

/// Why policies could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error(transparent)]
    Policy(PolicyError),
}

const BAD_OUTPUT: &str = "the policy evaluator's output was incomplete or out of order";

/// What a child said, and why it ended early (`None`: it finished).
struct Run {
    events: Vec<Event>,
    fate: Option<String>,
}

impl Run {
    fn ended(reason: String) -> Self {
        Self {
            events: Vec::new(),
            fate: Some(reason),
        }
    }
}

fn policy_name(policies: &[PolicySource], i: usize) -> String {
    policies
        .get(i)
        .map(|p| p.name.clone())
        .unwrap_or_else(|| "(unknown)".to_owned())
}

/// One event per line until the child closes stdout; a line longer than `max_line`, more than
/// `max_total` bytes, or a line that is not an event is bad output.
async fn read_events(
    stdout: tokio::process::ChildStdout,
    max_line: u64,
    max_total: u64,
    events: &mut Vec<Event>,
) -> Result<(), String> {
    let mut reader = BufReader::new(stdout);
    let mut total = 0u64;
    loop {
        let mut line = Vec::new();
        let n = (&mut reader)
            .take(max_line + 1)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| format!("the policy evaluator's output could not be read: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        total += n as u64;
        if n as u64 > max_line || total > max_total {
            return Err("the policy evaluator wrote more output than its limits allow".into());
        }
        let event = serde_json::from_slice(&line)
            .map_err(|_| "the policy evaluator wrote output that is not an event".to_owned())?;
        events.push(event);
    }
}

/// The resource limits a child starts with.
#[derive(Debug, Clone, Copy)]
struct ChildLimits {
    address_space: u64,
    cpu_secs: u64,
}

impl ChildLimits {
    /// Lower each limit (never raise it past the inherited hard limit); runs in the child
    /// between fork and exec.
    fn apply(self) -> std::io::Result<()> {
        lower(libc::RLIMIT_AS, self.address_space, self.address_space)?;
        lower(libc::RLIMIT_CPU, self.cpu_secs, self.cpu_secs + 1)?;
        lower(libc::RLIMIT_NOFILE, CHILD_NOFILE, CHILD_NOFILE)?;
        lower(libc::RLIMIT_CORE, 0, 0)
    }
}

#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

fn lower(resource: Resource, soft: u64, hard: u64) -> std::io::Result<()> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; setrlimit reads it.
    if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let hard = hard.min(current.rlim_max);
    let wanted = libc::rlimit {
        rlim_cur: soft.min(hard),
        rlim_max: hard,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(resource, &wanted) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;

    use super::*;

    fn evaluator(program: &str) -> Evaluator {
        Evaluator {
            program: program.into(),
            limits: EvalLimits::default(),
            deadline: Duration::from_millis(3000),
            memory_bytes: 512 * 1024 * 1024,
            slots: Semaphore::new(1),
        }
    }

    fn sources(names: &[&str]) -> Vec<PolicySource> {
        names
            .iter()
            .map(|n| PolicySource {
                name: (*n).into(),
                rego: String::new(),
            })
            .collect()
    }

    fn result(policy: &str, messages: &[&str]) -> PolicyResult {
        PolicyResult {
            policy: policy.into(),
            allowed: messages.is_empty(),
            messages: messages.iter().map(|m| (*m).to_owned()).collect(),
            input_shape: crate::policy::InputShape::Statement,
        }
    }

    fn failed_policy(verdict: &Result<Vec<PolicyResult>, PolicyError>) -> (String, String) {
        match verdict {
            Err(PolicyError::Evaluate { policy, reason }) => (policy.clone(), reason.clone()),
            other => panic!("expected an evaluation error, got {other:?}"),
        }
    }

    #[test]
    fn a_child_that_dies_fails_the_running_policy_and_every_statement_after_it() {
        let policies = sources(&["first", "bomb"]);
        let run = Run {
            events: vec![
                Event::Parsed { policy: 0 },
                Event::Parsed { policy: 1 },
                Event::Evaluated {
                    statement: 0,
                    policy: 0,
                    result: result("first", &[]),
                },
            ],
            fate: Some("memory limit: the policy needed more".into()),
        };
        let verdicts = evaluator("x").verdicts(&policies, 2, run);
        assert_eq!(verdicts.len(), 2);
        let (policy, reason) = failed_policy(&verdicts[0]);
        assert_eq!(policy, "bomb");
        assert!(reason.starts_with("memory limit"), "{reason}");
        let (policy, reason) = failed_policy(&verdicts[1]);
        assert_eq!(policy, "bomb");
        assert!(
            reason.starts_with("not evaluated: on an earlier attestation, memory limit"),
            "{reason}"
        );
    }

    #[test]
    fn a_finished_child_gives_every_verdict_with_messages_capped_again() {
        let policies = sources(&["a", "b"]);
        let chatty: Vec<String> = (0..50).map(|i| format!("m{i:02}")).collect();
        let chatty: Vec<&str> = chatty.iter().map(String::as_str).collect();
        let run = Run {
            events: vec![
                Event::Parsed { policy: 0 },
                Event::Parsed { policy: 1 },
                Event::Evaluated {
                    statement: 0,
                    policy: 0,
                    result: result("renamed-by-the-child", &chatty),
                },
                Event::Evaluated {
                    statement: 0,
                    policy: 1,
                    result: result("b", &[]),
                },
                Event::Failed {
                    statement: 1,
                    policy: 0,
                    reason: "conflict".into(),
                },
                Event::Done,
            ],
            fate: None,
        };
        let verdicts = evaluator("x").verdicts(&policies, 2, run);
        let first = verdicts[0].as_ref().unwrap();
        assert_eq!(first[0].policy, "a", "names come from the request");
        assert_eq!(first[0].messages.len(), 20);
        assert!(!first[0].allowed && first[1].allowed);
        assert_eq!(failed_policy(&verdicts[1]), ("a".into(), "conflict".into()));
    }

    #[test]
    fn events_out_of_order_are_bad_output() {
        let policies = sources(&["a"]);
        let run = Run {
            events: vec![
                Event::Parsed { policy: 0 },
                Event::Evaluated {
                    statement: 1,
                    policy: 0,
                    result: result("a", &[]),
                },
                Event::Done,
            ],
            fate: None,
        };
        let verdicts = evaluator("x").verdicts(&policies, 2, run);
        let (_, reason) = failed_policy(&verdicts[0]);
        assert_eq!(reason, BAD_OUTPUT);
    }

    #[test]
    fn child_endings_are_told_apart() {
        let e = evaluator("x");
        let signal = |s: i32| ExitStatus::from_raw(s);
        let exit = |c: i32| ExitStatus::from_raw(c << 8);
        let cases = [
            (
                signal(libc::SIGABRT),
                "memory allocation of 24000000000024 bytes failed\n",
                "memory limit: the policy needed more than the evaluator's 512 MiB",
            ),
            (
                signal(libc::SIGABRT),
                "\nthread 'policy-eval' (7) has overflowed its stack\nfatal runtime error: stack overflow",
                "stack overflow: the policy recursed or nested too deeply",
            ),
            (
                signal(libc::SIGXCPU),
                "",
                "CPU time limit: the policy evaluator used more than 4 s of CPU",
            ),
            (
                signal(libc::SIGSEGV),
                "",
                "the policy evaluator crashed (signal 11)",
            ),
            (
                exit(101),
                "thread 'policy-eval' panicked at src/x.rs",
                "the policy evaluator crashed (a panic in the Rego engine)",
            ),
            (
                exit(2),
                "policy-eval: the request is not valid",
                "the policy evaluator failed (exit status: 2)",
            ),
        ];
        for (status, stderr, expected) in cases {
            assert_eq!(e.fate(status, stderr), expected, "{stderr}");
        }
    }

    #[tokio::test]
    async fn an_evaluator_that_cannot_start_fails_the_policy_and_does_not_panic() {
        let e = evaluator("/nonexistent/attestd");
        let verdicts = e
            .evaluate(&sources(&["p"]), vec![serde_json::json!({})])
            .await
            .unwrap();
        let (policy, reason) = failed_policy(&verdicts[0]);
        assert_eq!(policy, "p");
        assert!(reason.contains("could not be started"), "{reason}");
        let checked = e.check(&sources(&["p"])).await;
        assert!(
            matches!(checked, Err(CheckError::Policy(PolicyError::Parse { .. }))),
            "{checked:?}"
        );
    }
}
