//! Verifying an image's SLSA provenance attestations: each candidate DSSE envelope goes through
//! the checks of [`CheckName`] in order (envelope, payload type, signature, in-toto statement,
//! predicate type, subject, policy), stopping at the first failure. Pure: the caller fetches the
//! envelopes; nothing here does I/O.
//!
//! - The signature check passes when any signature verifies over PAE(payloadType, payload) with
//!   any trusted key. Pairs whose `keyid` names a trusted key are tried first; every other pair is
//!   tried after, because cosign and other tools leave `keyid` empty.
//! - The statement must be an in-toto Statement v1, or the legacy v0.1 that cosign still writes;
//!   both have the same `subject`/`predicateType`/`predicate` layout.
//! - The image is `verified` when at least one attestation passes every check up to and including
//!   `subject`. It is `allowed` when at least one verified attestation passes every policy by
//!   itself: policies are never satisfied by combining different attestations. Policies run only
//!   on verified statements, in this process ([`verify`]) or wherever the caller evaluates them
//!   ([`check`], then [`Checked::finish`]); a policy that fails to evaluate fails the check
//!   (`policy_error`).

mod image;
mod key;
mod report;

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_PAD_INDIFFERENT, URL_SAFE_PAD_INDIFFERENT};

use crate::domain::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE, pae};
use crate::domain::provenance::{SLSA_PROVENANCE_V1, STATEMENT_TYPE};
use crate::domain::{Digest, KeyId};
use crate::policy::{self, Policy, PolicyResult};

pub use image::{ImageToVerify, fetch_candidates, resolve, verify_image};
pub use key::{KeyError, TrustedKey, trusted_key_from_pem, trusted_keys_from_pem_bundle};
pub use report::{
    AttestationCheck, Check, CheckName, Outcome, Reason, ReasonCode, VerificationReport,
};

/// The statement type of in-toto v0.1, which cosign and in-toto-golang still emit.
pub const LEGACY_STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v0.1";

/// One envelope found for the image, with where it was found.
#[derive(Debug, Clone, Default)]
pub struct CandidateEnvelope {
    /// Where the envelope came from, e.g. `registry.example.com/app:sha256-<hex>.att layer 0`.
    pub source: String,
    /// The OCI layer's annotations, reported back unchanged.
    pub annotations: BTreeMap<String, String>,
    /// The envelope exactly as stored.
    pub bytes: Vec<u8>,
}

/// Checks every candidate envelope for `image` and gives the verdict, running `policies` here
/// with the default [`EvalLimits`](crate::policy::EvalLimits).
pub fn verify(
    image: &Digest,
    candidates: &[CandidateEnvelope],
    keys: &[TrustedKey],
    policies: &[Policy],
) -> VerificationReport {
    verify_with(
        image,
        candidates,
        keys,
        policies,
        &crate::policy::EvalLimits::default(),
    )
}

/// [`verify`], with policies evaluated here within `limits`.
pub fn verify_with(
    image: &Digest,
    candidates: &[CandidateEnvelope],
    keys: &[TrustedKey],
    policies: &[Policy],
    limits: &crate::policy::EvalLimits,
) -> VerificationReport {
    let mut checked = check(image, candidates, keys);
    let verdicts = checked
        .take_statements()
        .iter()
        .map(|s| policy::evaluate_with(policies, s, limits))
        .collect();
    checked.finish(policies.len(), verdicts)
}

/// Every check up to and including `subject` on every candidate; policies come next, run by
/// whoever holds them (here, or in an isolated evaluator).
pub fn check(image: &Digest, candidates: &[CandidateEnvelope], keys: &[TrustedKey]) -> Checked {
    let attestations = candidates
        .iter()
        .map(|c| {
            let mut progress = Progress::default();
            let outcome = run_checks(&mut progress, image, &c.bytes, keys);
            let (statement, failure) = match outcome {
                Ok(statement) => (Some(statement), None),
                Err(reason) => (None, Some(reason)),
            };
            Pending {
                source: c.source.clone(),
                annotations: c.annotations.clone(),
                progress,
                verified: failure.is_none(),
                statement,
                failure,
            }
        })
        .collect();
    Checked {
        image: image.clone(),
        attestations,
    }
}

/// Candidates checked up to `subject`; [`Checked::finish`] adds the policy verdicts.
pub struct Checked {
    image: Digest,
    attestations: Vec<Pending>,
}

struct Pending {
    source: String,
    annotations: BTreeMap<String, String>,
    progress: Progress,
    verified: bool,
    /// The verified statement, until it is handed to the policies.
    statement: Option<serde_json::Value>,
    failure: Option<Reason>,
}

impl Checked {
    /// The verified statements, in candidate order: one policy verdict is expected for each.
    pub fn take_statements(&mut self) -> Vec<serde_json::Value> {
        self.attestations
            .iter_mut()
            .filter_map(|a| a.statement.take())
            .collect()
    }

    /// The report, given each verified statement's policy verdict in the order of
    /// [`Checked::take_statements`].
    pub fn finish(
        self,
        policy_count: usize,
        verdicts: Vec<Result<Vec<PolicyResult>, policy::PolicyError>>,
    ) -> VerificationReport {
        let mut verdicts = verdicts.into_iter();
        let attestations: Vec<AttestationCheck> = self
            .attestations
            .into_iter()
            .map(|a| {
                let mut progress = a.progress;
                let result = match a.failure {
                    Some(reason) => Err(reason),
                    None => judge(&mut progress, policy_count, verdicts.next()),
                };
                conclude(a.source, a.annotations, a.verified, progress, result)
            })
            .collect();
        let verified = attestations.iter().any(|a| a.verified);
        let allowed = attestations.iter().any(|a| a.allowed);
        let reason = if allowed {
            None
        } else {
            Some(overall_reason(&attestations))
        };
        VerificationReport {
            image: self.image,
            verified,
            allowed,
            reason,
            attestations,
        }
    }
}

/// The reason of the attestation that came closest to being allowed (the first, on a tie).
fn overall_reason(attestations: &[AttestationCheck]) -> Reason {
    let closest = attestations.iter().rev().max_by_key(|a| {
        a.checks
            .iter()
            .filter(|c| c.outcome == Outcome::Passed)
            .count()
    });
    match closest.and_then(|a| a.reason.as_ref().map(|r| (a, r))) {
        None => Reason {
            code: ReasonCode::NoAttestations,
            message: "no attestation was found for the image".into(),
        },
        Some((a, r)) => {
            let prefix = match attestations.len() {
                1 => String::new(),
                n => format!("none of {n} attestations is allowed; closest is "),
            };
            Reason {
                code: r.code,
                message: format!("{prefix}{}: {}", a.source, r.message),
            }
        }
    }
}

/// The checks run so far on one envelope.
#[derive(Default)]
struct Progress {
    checks: Vec<Check>,
    key_id: Option<KeyId>,
    policies: Vec<PolicyResult>,
}

impl Progress {
    fn pass(&mut self, name: CheckName, message: String) {
        self.checks.push(Check {
            name,
            outcome: Outcome::Passed,
            code: None,
            message,
        });
    }

    fn fail(&mut self, name: CheckName, code: ReasonCode, message: String) -> Reason {
        self.checks.push(Check {
            name,
            outcome: Outcome::Failed,
            code: Some(code),
            message: message.clone(),
        });
        Reason { code, message }
    }
}

fn conclude(
    source: String,
    annotations: BTreeMap<String, String>,
    verified: bool,
    mut progress: Progress,
    result: Result<(), Reason>,
) -> AttestationCheck {
    let allowed = result.is_ok();
    let done = progress.checks.len();
    for name in CheckName::ALL.into_iter().skip(done) {
        progress.checks.push(Check {
            name,
            outcome: Outcome::Skipped,
            code: None,
            message: "not checked: an earlier check failed".into(),
        });
    }
    AttestationCheck {
        source,
        annotations,
        verified,
        allowed,
        key_id: progress.key_id,
        checks: progress.checks,
        policies: progress.policies,
        reason: result.err(),
    }
}

/// The policy check of a verified statement, from its verdict.
fn judge(
    p: &mut Progress,
    policy_count: usize,
    verdict: Option<Result<Vec<PolicyResult>, policy::PolicyError>>,
) -> Result<(), Reason> {
    use CheckName as N;
    use ReasonCode as C;
    if policy_count == 0 {
        p.pass(N::Policy, "no policies configured".into());
        return Ok(());
    }
    let results = match verdict {
        Some(Ok(results)) => results,
        Some(Err(e)) => return Err(p.fail(N::Policy, C::PolicyError, e.to_string())),
        None => {
            return Err(p.fail(
                N::Policy,
                C::PolicyError,
                "the policies were not evaluated".into(),
            ));
        }
    };
    let denials: Vec<String> = results
        .iter()
        .filter(|r| !r.allowed)
        .map(|r| format!("policy {:?} denied: {}", r.policy, r.messages.join("; ")))
        .collect();
    p.policies = results;
    if !denials.is_empty() {
        return Err(p.fail(N::Policy, C::PolicyDenied, denials.join("; ")));
    }
    p.pass(N::Policy, format!("{policy_count} policies allow it"));
    Ok(())
}

/// Every check through `subject`; the verified statement.
fn run_checks(
    p: &mut Progress,
    image: &Digest,
    bytes: &[u8],
    keys: &[TrustedKey],
) -> Result<serde_json::Value, Reason> {
    use CheckName as N;
    use ReasonCode as C;

    let envelope: Envelope = serde_json::from_slice(bytes).map_err(|e| {
        p.fail(
            N::Envelope,
            C::MalformedEnvelope,
            format!("not a DSSE envelope: {e}"),
        )
    })?;
    let payload = decode_base64(&envelope.payload).ok_or_else(|| {
        p.fail(
            N::Envelope,
            C::MalformedEnvelope,
            "the envelope's payload is not base64".into(),
        )
    })?;
    p.pass(
        N::Envelope,
        format!(
            "DSSE envelope with {} signature(s)",
            envelope.signatures.len()
        ),
    );

    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(p.fail(
            N::PayloadType,
            C::WrongPayloadType,
            format!(
                "payloadType is {:?}, not {IN_TOTO_PAYLOAD_TYPE:?}",
                envelope.payload_type
            ),
        ));
    }
    p.pass(N::PayloadType, IN_TOTO_PAYLOAD_TYPE.into());

    let signed = pae(&envelope.payload_type, &payload);
    match verifying_key(&envelope, &signed, keys) {
        Ok((key_id, index)) => {
            p.pass(
                N::Signature,
                format!(
                    "signature {} of {} verifies with trusted key {key_id}",
                    index + 1,
                    envelope.signatures.len()
                ),
            );
            p.key_id = Some(key_id);
        }
        Err(message) => return Err(p.fail(N::Signature, C::BadSignature, message)),
    }

    let statement: serde_json::Value = serde_json::from_slice(&payload).map_err(|e| {
        p.fail(
            N::Statement,
            C::NotInToto,
            format!("the payload is not JSON: {e}"),
        )
    })?;
    let statement_version = statement_version(&statement)
        .map_err(|message| p.fail(N::Statement, C::NotInToto, message))?;
    p.pass(N::Statement, statement_version.into());

    let predicate_type = statement["predicateType"].as_str().unwrap_or_default();
    if predicate_type != SLSA_PROVENANCE_V1 {
        return Err(p.fail(
            N::PredicateType,
            C::WrongPredicateType,
            format!("predicateType is {predicate_type:?}, not {SLSA_PROVENANCE_V1:?}"),
        ));
    }
    p.pass(N::PredicateType, SLSA_PROVENANCE_V1.into());

    let message = subject_for(&statement, image)
        .map_err(|message| p.fail(N::Subject, C::SubjectMismatch, message))?;
    p.pass(N::Subject, message);
    Ok(statement)
}

/// DSSE allows standard or URL-safe base64; padding is not required.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    STANDARD_PAD_INDIFFERENT
        .decode(text)
        .or_else(|_| URL_SAFE_PAD_INDIFFERENT.decode(text))
        .ok()
}

/// The trusted key and index of the first signature that verifies over `signed`.
fn verifying_key(
    envelope: &Envelope,
    signed: &[u8],
    keys: &[TrustedKey],
) -> Result<(KeyId, usize), String> {
    if envelope.signatures.is_empty() {
        return Err("the envelope carries no signatures".into());
    }
    if keys.is_empty() {
        return Err("no trusted keys are configured".into());
    }
    let signatures: Vec<(usize, &str, Option<Vec<u8>>)> = envelope
        .signatures
        .iter()
        .enumerate()
        .map(|(i, s)| (i, s.keyid.as_str(), decode_base64(&s.sig)))
        .collect();
    // Pairs whose keyid names the key first, then every other pair.
    for named in [true, false] {
        for (index, keyid, sig) in &signatures {
            let Some(sig) = sig else { continue };
            for key in keys {
                if (key.key_id().as_str() == *keyid) == named && key.verifies(signed, sig) {
                    return Ok((key.key_id().clone(), *index));
                }
            }
        }
    }
    Err(format!(
        "none of the {} signature(s) verifies with any of the {} trusted key(s)",
        signatures.len(),
        keys.len()
    ))
}

/// Which in-toto Statement version `statement` is, if it is one.
fn statement_version(statement: &serde_json::Value) -> Result<&'static str, String> {
    let Some(object) = statement.as_object() else {
        return Err("the payload is not a JSON object".into());
    };
    let version = match object.get("_type").and_then(|t| t.as_str()) {
        Some(STATEMENT_TYPE) => "in-toto Statement v1",
        Some(LEGACY_STATEMENT_TYPE) => "in-toto Statement v0.1 (legacy)",
        Some(other) => return Err(format!("_type is {other:?}, not an in-toto Statement")),
        None => return Err("the payload has no string `_type`".into()),
    };
    if !object.get("subject").is_some_and(|s| s.is_array()) {
        return Err("the statement has no `subject` list".into());
    }
    if !object.get("predicateType").is_some_and(|s| s.is_string()) {
        return Err("the statement has no string `predicateType`".into());
    }
    Ok(version)
}

/// A message naming the subject whose sha256 digest is `image`'s.
fn subject_for(statement: &serde_json::Value, image: &Digest) -> Result<String, String> {
    let subjects = statement["subject"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let sha256 = |s: &serde_json::Value| s["digest"]["sha256"].as_str().map(str::to_owned);
    if let Some(subject) = subjects
        .iter()
        .find(|s| sha256(s).is_some_and(|d| d.eq_ignore_ascii_case(image.hex())))
    {
        let name = subject["name"].as_str().unwrap_or("(unnamed)");
        return Ok(format!("subject {name} has digest {image}"));
    }
    let listed: Vec<String> = subjects
        .iter()
        .take(5)
        .map(|s| {
            format!(
                "{}@sha256:{}",
                s["name"].as_str().unwrap_or("(unnamed)"),
                sha256(s).unwrap_or_else(|| "(none)".into())
            )
        })
        .collect();
    Err(format!(
        "no subject has digest {image} (subjects: {})",
        if listed.is_empty() {
            "none".into()
        } else {
            listed.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests;
