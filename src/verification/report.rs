//! The verification report: what was checked on each attestation, in order, and the verdict.
//! Every failure carries a stable machine code clients switch on, and a human message.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::domain::{Digest, KeyId};
use crate::policy::PolicyResult;

/// The verdict on one image.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationReport {
    pub image: Digest,
    /// At least one attestation passed every check up to and including `subject`.
    pub verified: bool,
    /// Some verified attestation passed every policy (all policies on the same attestation).
    pub allowed: bool,
    /// Why the image is not allowed (and, when it is not verified, why not); absent when allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    pub attestations: Vec<AttestationCheck>,
}

/// The checks on one candidate envelope.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttestationCheck {
    /// Where the envelope came from, as the caller described it.
    pub source: String,
    pub annotations: BTreeMap<String, String>,
    pub verified: bool,
    pub allowed: bool,
    /// The trusted key a signature verified with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<KeyId>,
    /// Every check in the order they run; those after the first failure are `skipped`.
    pub checks: Vec<Check>,
    /// Per-policy results; empty unless the attestation was verified.
    pub policies: Vec<PolicyResult>,
    /// The first failed check's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
}

/// One check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub name: CheckName,
    pub outcome: Outcome,
    /// Set when the check failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<ReasonCode>,
    pub message: String,
}

/// The checks, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CheckName {
    Envelope,
    PayloadType,
    Signature,
    Statement,
    PredicateType,
    Subject,
    Policy,
}

impl CheckName {
    pub const ALL: [CheckName; 7] = [
        Self::Envelope,
        Self::PayloadType,
        Self::Signature,
        Self::Statement,
        Self::PredicateType,
        Self::Subject,
        Self::Policy,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Passed,
    Failed,
    Skipped,
}

/// A stable machine code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub code: ReasonCode,
    pub message: String,
}

/// Stable machine codes of failures; the serialized form is the `snake_case` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// No candidate envelope was found for the image.
    NoAttestations,
    /// Not JSON, or not a DSSE envelope (missing fields, payload not base64).
    MalformedEnvelope,
    /// `payloadType` is not `application/vnd.in-toto+json`.
    WrongPayloadType,
    /// No signature verifies over PAE(payloadType, payload) with a trusted key.
    BadSignature,
    /// The payload is not an in-toto Statement (v1, or legacy v0.1).
    NotInToto,
    /// `predicateType` is not `https://slsa.dev/provenance/v1`.
    WrongPredicateType,
    /// No subject's `digest.sha256` is the image digest.
    SubjectMismatch,
    /// A policy denied the statement.
    PolicyDenied,
    /// A policy failed to evaluate, so the statement could not be judged.
    PolicyError,
}

impl ReasonCode {
    /// The code as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoAttestations => "no_attestations",
            Self::MalformedEnvelope => "malformed_envelope",
            Self::WrongPayloadType => "wrong_payload_type",
            Self::BadSignature => "bad_signature",
            Self::NotInToto => "not_in_toto",
            Self::WrongPredicateType => "wrong_predicate_type",
            Self::SubjectMismatch => "subject_mismatch",
            Self::PolicyDenied => "policy_denied",
            Self::PolicyError => "policy_error",
        }
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl VerificationReport {
    /// The report for people: the verdict first, then each attestation's checks.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let verdict = match (self.verified, self.allowed) {
            (true, true) => "VERIFIED",
            (true, false) => "VERIFIED, POLICY DENIED",
            _ => "NOT VERIFIED",
        };
        let _ = writeln!(out, "{verdict}: {}", self.image);
        if let Some(r) = &self.reason {
            let _ = writeln!(out, "reason: {} ({})", r.message, r.code);
        }
        for a in &self.attestations {
            let _ = writeln!(out, "\n{}", a.source);
            for c in &a.checks {
                let mark = match c.outcome {
                    Outcome::Passed => "ok  ",
                    Outcome::Failed => "FAIL",
                    Outcome::Skipped => "-   ",
                };
                let _ = writeln!(out, "  {mark} {:?}: {}", c.name, c.message);
            }
        }
        out
    }
}
