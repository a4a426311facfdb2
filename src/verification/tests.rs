//! Envelopes here are signed by implementations other than the verifier's where it matters:
//! sigstore's `rustls-tls` backend verifies with aws-lc-rs, so besides aws-lc-rs signatures the
//! tests use RustCrypto `p256` and a fixture signed by Python `cryptography` (OpenSSL).

use std::collections::BTreeMap;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::*;

const BRANCH_MAIN: &str = include_str!("../../policies/examples/branch-main.rego");
const HARNESS_REPOSITORY: &str = include_str!("../../policies/examples/harness-repository.rego");
const FIXTURE_ENVELOPE: &str = include_str!("../../tests/fixtures/keys/dsse-cosign-p256-n15.json");
const FIXTURE_TAMPERED: &str =
    include_str!("../../tests/fixtures/keys/dsse-cosign-p256-n15-tampered.json");
const FIXTURE_PUB: &str = include_str!("../../tests/fixtures/keys/cosign-p256-n15.pub");
const FIXTURE_P384_PUB: &str = include_str!("../../tests/fixtures/keys/cosign-p384-n15.pub");
const FIXTURE_ED25519_PUB: &str = include_str!("../../tests/fixtures/keys/cosign-ed25519-n15.pub");
const FIXTURE_PRIVATE: &str = include_str!("../../tests/fixtures/keys/plain-p256.key");
/// The subject digest of the fixture envelope's statement.
const FIXTURE_DIGEST: &str =
    "sha256:5555555555555555555555555555555555555555555555555555555555555555";

/// A fresh P-256 key from aws-lc-rs.
struct AwsKey(EcdsaKeyPair);

impl AwsKey {
    fn new() -> Self {
        Self(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap())
    }

    fn spki_der(&self) -> Vec<u8> {
        self.0.public_key().as_der().unwrap().as_ref().to_vec()
    }

    fn pem(&self) -> String {
        pem("PUBLIC KEY", &self.spki_der())
    }

    fn key_id(&self) -> String {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(self.spki_der()))
    }

    fn trusted(&self) -> TrustedKey {
        trusted_key_from_pem(&self.pem()).unwrap()
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.0
            .sign(&SystemRandom::new(), message)
            .unwrap()
            .as_ref()
            .to_vec()
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn digest(byte: &str) -> Digest {
    format!("sha256:{}", byte.repeat(32)).parse().unwrap()
}

fn statement(image: &Digest, branch: &str, repository: &str) -> serde_json::Value {
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [
            {"name": "registry.example.com/acme/sidecar", "digest": {"sha256": "cd".repeat(32)}},
            {"name": "registry.example.com/acme/app", "digest": {"sha256": image.hex()}}
        ],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "https://attestd.dev/buildtypes/ci-webhook/v1",
                "externalParameters": {
                    "codeMetadata": {"repositoryURL": repository, "branch": branch, "commitSha": "0123"}
                },
                "internalParameters": {},
                "resolvedDependencies": []
            },
            "runDetails": {"builder": {"id": "https://ci.example.com"}, "metadata": {"invocationId": "exec-1"}}
        }
    })
}

/// An envelope over `payload` with the given `(keyid, raw signature)` pairs.
fn envelope(payload_type: &str, payload: &[u8], signatures: &[(&str, &[u8])]) -> Vec<u8> {
    let signatures: Vec<serde_json::Value> = signatures
        .iter()
        .map(|(keyid, sig)| json!({"keyid": keyid, "sig": STANDARD.encode(sig)}))
        .collect();
    serde_json::to_vec(&json!({
        "payloadType": payload_type,
        "payload": STANDARD.encode(payload),
        "signatures": signatures,
    }))
    .unwrap()
}

/// An in-toto envelope over `statement` signed by `key` with its key id.
fn signed(key: &AwsKey, statement: &serde_json::Value) -> Vec<u8> {
    let payload = serde_json::to_vec(statement).unwrap();
    let sig = key.sign(&pae(IN_TOTO_PAYLOAD_TYPE, &payload));
    envelope(IN_TOTO_PAYLOAD_TYPE, &payload, &[(&key.key_id(), &sig)])
}

fn candidate(bytes: Vec<u8>) -> CandidateEnvelope {
    CandidateEnvelope {
        source: "registry.example.com/acme/app:sha256-abab.att layer 0".into(),
        annotations: BTreeMap::from([("dev.sigstore.cosign/signature".to_owned(), String::new())]),
        bytes,
    }
}

fn verify_one(
    image: &Digest,
    bytes: Vec<u8>,
    keys: &[TrustedKey],
    policies: &[Policy],
) -> VerificationReport {
    verify(image, &[candidate(bytes)], keys, policies)
}

fn outcomes(check: &AttestationCheck) -> Vec<(CheckName, Outcome)> {
    check.checks.iter().map(|c| (c.name, c.outcome)).collect()
}

fn code(report: &VerificationReport) -> Option<ReasonCode> {
    report.reason.as_ref().map(|r| r.code)
}

#[test]
fn valid_attestation_from_a_trusted_key_is_verified_and_allowed() {
    let key = AwsKey::new();
    let image = digest("ab");
    let report = verify_one(
        &image,
        signed(
            &key,
            &statement(&image, "main", "https://github.com/acme/app"),
        ),
        &[key.trusted()],
        &[],
    );
    assert!(report.verified);
    assert!(report.allowed);
    assert!(report.reason.is_none());
    let attestation = &report.attestations[0];
    assert_eq!(attestation.key_id.as_ref().unwrap().as_str(), key.key_id());
    assert!(
        attestation
            .checks
            .iter()
            .all(|c| c.outcome == Outcome::Passed)
    );
    assert_eq!(
        attestation
            .checks
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>(),
        CheckName::ALL
    );
}

#[test]
fn attestation_signed_by_an_untrusted_key_fails_with_bad_signature() {
    let signer = AwsKey::new();
    let trusted = AwsKey::new();
    let image = digest("ab");
    let report = verify_one(
        &image,
        signed(&signer, &statement(&image, "main", "r")),
        &[trusted.trusted()],
        &[],
    );
    assert!(!report.verified);
    assert!(!report.allowed);
    assert_eq!(code(&report), Some(ReasonCode::BadSignature));
    assert_eq!(
        outcomes(&report.attestations[0]),
        [
            (CheckName::Envelope, Outcome::Passed),
            (CheckName::PayloadType, Outcome::Passed),
            (CheckName::Signature, Outcome::Failed),
            (CheckName::Statement, Outcome::Skipped),
            (CheckName::PredicateType, Outcome::Skipped),
            (CheckName::Subject, Outcome::Skipped),
            (CheckName::Policy, Outcome::Skipped),
        ]
    );
    assert!(report.attestations[0].key_id.is_none());
}

#[test]
fn one_changed_payload_byte_fails_with_bad_signature() {
    let key = AwsKey::new();
    let image = digest("ab");
    let payload = serde_json::to_vec(&statement(&image, "main", "r")).unwrap();
    let sig = key.sign(&pae(IN_TOTO_PAYLOAD_TYPE, &payload));
    let mut tampered = payload.clone();
    let at = tampered.windows(4).position(|w| w == b"main").unwrap();
    tampered[at] = b'n'; // "main" -> "nain"
    let keys = [key.trusted()];

    let good = verify_one(
        &image,
        envelope(IN_TOTO_PAYLOAD_TYPE, &payload, &[(&key.key_id(), &sig)]),
        &keys,
        &[],
    );
    assert!(good.verified, "the untampered envelope must verify");
    let bad = verify_one(
        &image,
        envelope(IN_TOTO_PAYLOAD_TYPE, &tampered, &[(&key.key_id(), &sig)]),
        &keys,
        &[],
    );
    assert!(!bad.verified);
    assert_eq!(code(&bad), Some(ReasonCode::BadSignature));
}

#[test]
fn statement_for_another_digest_fails_with_subject_mismatch() {
    let key = AwsKey::new();
    let report = verify_one(
        &digest("ef"),
        signed(&key, &statement(&digest("ab"), "main", "r")),
        &[key.trusted()],
        &[],
    );
    assert!(!report.verified);
    assert_eq!(code(&report), Some(ReasonCode::SubjectMismatch));
    let message = &report.reason.as_ref().unwrap().message;
    assert!(message.contains(&"ef".repeat(32)), "{message}");
    assert!(message.contains(&"ab".repeat(32)), "{message}");
}

#[test]
fn other_predicate_type_fails_with_wrong_predicate_type() {
    let key = AwsKey::new();
    let image = digest("ab");
    let mut s = statement(&image, "main", "r");
    s["predicateType"] = json!("https://slsa.dev/provenance/v0.2");
    let report = verify_one(&image, signed(&key, &s), &[key.trusted()], &[]);
    assert!(!report.verified);
    assert_eq!(code(&report), Some(ReasonCode::WrongPredicateType));
    assert!(report.reason.unwrap().message.contains("v0.2"));
}

#[test]
fn other_payload_type_fails_with_wrong_payload_type_even_when_signed() {
    let key = AwsKey::new();
    let image = digest("ab");
    let payload = serde_json::to_vec(&statement(&image, "main", "r")).unwrap();
    let sig = key.sign(&pae("application/json", &payload));
    let report = verify_one(
        &image,
        envelope("application/json", &payload, &[(&key.key_id(), &sig)]),
        &[key.trusted()],
        &[],
    );
    assert!(!report.verified);
    assert_eq!(code(&report), Some(ReasonCode::WrongPayloadType));
}

#[test]
fn malformed_envelopes_fail_with_malformed_envelope() {
    let key = AwsKey::new();
    let image = digest("ab");
    for bytes in [
        b"{not json".to_vec(),
        b"\xff\xfe".to_vec(),
        br#"{"payloadType":"application/vnd.in-toto+json","signatures":[]}"#.to_vec(),
        br#"{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"keyid":""}]}"#
            .to_vec(),
        br#"{"payloadType":"application/vnd.in-toto+json","payload":"%%%","signatures":[]}"#
            .to_vec(),
        b"[]".to_vec(),
    ] {
        let shown = String::from_utf8_lossy(&bytes).into_owned();
        let report = verify_one(&image, bytes, &[key.trusted()], &[]);
        assert_eq!(
            code(&report),
            Some(ReasonCode::MalformedEnvelope),
            "{shown}"
        );
        assert_eq!(
            report.attestations[0].checks[0].outcome,
            Outcome::Failed,
            "{shown}"
        );
    }
}

#[test]
fn signed_payload_that_is_not_an_in_toto_statement_fails_with_not_in_toto() {
    let key = AwsKey::new();
    let image = digest("ab");
    for payload in [
        b"not json".to_vec(),
        br#"{"subject":[],"predicateType":"https://slsa.dev/provenance/v1"}"#.to_vec(),
        br#"{"_type":"https://example.com/other","subject":[],"predicateType":"x"}"#.to_vec(),
        br#"{"_type":"https://in-toto.io/Statement/v1","predicateType":"x"}"#.to_vec(),
    ] {
        let sig = key.sign(&pae(IN_TOTO_PAYLOAD_TYPE, &payload));
        let report = verify_one(
            &image,
            envelope(IN_TOTO_PAYLOAD_TYPE, &payload, &[("", &sig)]),
            &[key.trusted()],
            &[],
        );
        assert_eq!(
            code(&report),
            Some(ReasonCode::NotInToto),
            "{}",
            String::from_utf8_lossy(&payload)
        );
    }
}

#[test]
fn legacy_in_toto_v0_1_statement_is_accepted() {
    let key = AwsKey::new();
    let image = digest("ab");
    let mut s = statement(&image, "main", "r");
    s["_type"] = json!(LEGACY_STATEMENT_TYPE);
    let report = verify_one(&image, signed(&key, &s), &[key.trusted()], &[]);
    assert!(report.verified);
    assert!(report.attestations[0].checks[3].message.contains("v0.1"));
}

#[test]
fn policy_deny_fails_with_its_message_on_a_verified_attestation() {
    let key = AwsKey::new();
    let image = digest("ab");
    let policy = Policy::from_source("branch", crate::policy::tests::BRANCH_V1).unwrap();
    let report = verify_one(
        &image,
        signed(&key, &statement(&image, "feature/x", "r")),
        &[key.trusted()],
        std::slice::from_ref(&policy),
    );
    assert!(report.verified);
    assert!(!report.allowed);
    let reason = report.reason.as_ref().unwrap();
    assert_eq!(reason.code, ReasonCode::PolicyDenied);
    assert!(reason.message.contains("builds must come from main"));
    let attestation = &report.attestations[0];
    assert!(attestation.verified && !attestation.allowed);
    assert_eq!(attestation.policies.len(), 1);
    assert_eq!(
        attestation.policies[0].messages,
        ["builds must come from main"]
    );
    assert_eq!(attestation.checks[6].code, Some(ReasonCode::PolicyDenied));

    let main = verify_one(
        &image,
        signed(&key, &statement(&image, "main", "r")),
        &[key.trusted()],
        &[policy],
    );
    assert!(main.allowed);
}

#[test]
fn example_policies_from_the_repository_judge_verified_attestations() {
    let key = AwsKey::new();
    let image = digest("ab");
    let policies = [
        Policy::from_source("branch-main", BRANCH_MAIN).unwrap(),
        Policy::from_source("harness-repository", HARNESS_REPOSITORY).unwrap(),
    ];
    let run = |branch: &str, repository: &str| {
        verify_one(
            &image,
            signed(&key, &statement(&image, branch, repository)),
            &[key.trusted()],
            &policies,
        )
    };

    let good = run("main", "https://github.com/acme/app");
    assert!(good.allowed, "{:?}", good.reason);

    let other_repo = run("main", "https://github.com/evil/app");
    assert!(other_repo.verified && !other_repo.allowed);
    let results = &other_repo.attestations[0].policies;
    assert!(results[0].allowed);
    assert_eq!(
        results[1].messages,
        ["repository https://github.com/evil/app is not on the allowed list"]
    );

    let other_branch = run("dev", "https://github.com/acme/app");
    assert!(!other_branch.allowed);
    assert_eq!(
        other_branch.attestations[0].policies[0].messages,
        ["builds must come from main"]
    );
}

#[test]
fn harness_shaped_policy_passes_a_matching_statement_and_fails_another() {
    let key = AwsKey::new();
    let image = digest("ab");
    let policy = Policy::from_source(
        "harness",
        r#"package slsa
deny[msg] {
  input[0].outcome.stepArtifacts.provenanceArtifacts[0].predicate.buildDefinition.externalParameters.codeMetadata.repositoryURL != "https://github.com/acme/app"
  msg := "Repository verification failed in Provenance"
}"#,
    )
    .unwrap();
    let run = |repository: &str| {
        verify_one(
            &image,
            signed(&key, &statement(&image, "main", repository)),
            &[key.trusted()],
            std::slice::from_ref(&policy),
        )
    };
    assert!(run("https://github.com/acme/app").allowed);
    let denied = run("https://github.com/acme/fork");
    assert!(denied.verified && !denied.allowed);
    assert_eq!(
        denied.attestations[0].policies[0].messages,
        ["Repository verification failed in Provenance"]
    );
}

#[test]
fn attestation_from_another_tool_with_empty_keyid_and_reordered_signatures_verifies() {
    // Another tool: no keyid, the trusted signature second behind a foreign one, a statement with
    // fields attestd never writes, and keys serialized in another order.
    let trusted = AwsKey::new();
    let foreign = AwsKey::new();
    let image = digest("ab");
    let mut s = statement(&image, "main", "https://github.com/acme/app");
    s["predicate"]["runDetails"]["byproducts"] = json!([{"name": "log", "uri": "https://x"}]);
    s["predicate"]["buildDefinition"]["externalParameters"]["workflow"] =
        json!({"ref": "refs/heads/main", "path": ".github/workflows/build.yml"});
    s["subject"][1]["digest"]["sha512"] = json!("00".repeat(64));
    s["x-vendor"] = json!({"tool": "other"});
    let payload = format!("{}\n", serde_json::to_string_pretty(&s).unwrap()).into_bytes();
    let signed_bytes = pae(IN_TOTO_PAYLOAD_TYPE, &payload);
    let bytes = envelope(
        IN_TOTO_PAYLOAD_TYPE,
        &payload,
        &[
            (&foreign.key_id(), &foreign.sign(&signed_bytes)),
            ("", &trusted.sign(&signed_bytes)),
        ],
    );
    let policies = [Policy::from_source("branch-main", BRANCH_MAIN).unwrap()];
    let report = verify_one(&image, bytes, &[trusted.trusted()], &policies);
    assert!(report.verified, "{:?}", report.reason);
    assert!(report.allowed, "{:?}", report.reason);
    let attestation = &report.attestations[0];
    assert_eq!(
        attestation.key_id.as_ref().unwrap().as_str(),
        trusted.key_id()
    );
    assert!(attestation.checks[2].message.contains("signature 2 of 2"));
}

#[test]
fn signature_whose_keyid_names_a_trusted_key_is_preferred() {
    let first = AwsKey::new();
    let second = AwsKey::new();
    let image = digest("ab");
    let payload = serde_json::to_vec(&statement(&image, "main", "r")).unwrap();
    let signed_bytes = pae(IN_TOTO_PAYLOAD_TYPE, &payload);
    let bytes = envelope(
        IN_TOTO_PAYLOAD_TYPE,
        &payload,
        &[
            ("", &first.sign(&signed_bytes)),
            (&second.key_id(), &second.sign(&signed_bytes)),
        ],
    );
    let report = verify_one(&image, bytes, &[first.trusted(), second.trusted()], &[]);
    assert!(report.verified);
    assert_eq!(
        report.attestations[0].key_id.as_ref().unwrap().as_str(),
        second.key_id()
    );
}

#[test]
fn envelope_signed_by_python_cryptography_verifies_and_its_tampered_copy_does_not() {
    let keys = [trusted_key_from_pem(FIXTURE_PUB).unwrap()];
    let image: Digest = FIXTURE_DIGEST.parse().unwrap();
    let policies = [Policy::from_source("branch-main", BRANCH_MAIN).unwrap()];

    let report = verify_one(
        &image,
        FIXTURE_ENVELOPE.as_bytes().to_vec(),
        &keys,
        &policies,
    );
    assert!(report.verified, "{:?}", report.reason);
    // Its predicate records `source`, not attestd's codeMetadata, so the example policy denies it.
    assert!(!report.allowed);
    assert_eq!(
        report.attestations[0].policies[0].messages,
        ["the provenance does not name the branch it was built from"]
    );

    let tampered = verify_one(&image, FIXTURE_TAMPERED.as_bytes().to_vec(), &keys, &[]);
    assert_eq!(code(&tampered), Some(ReasonCode::BadSignature));
}

#[test]
fn envelope_signed_by_rustcrypto_p256_verifies() {
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::{EncodePublicKey as _, LineEnding};

    let mut secret = [0u8; 32];
    aws_lc_rs::rand::fill(&mut secret).unwrap();
    let signing = p256::ecdsa::SigningKey::from_slice(&secret).unwrap();
    let pem = signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let image = digest("ab");
    let payload = serde_json::to_vec(&statement(&image, "main", "r")).unwrap();
    let sig: p256::ecdsa::Signature = signing.sign(&pae(IN_TOTO_PAYLOAD_TYPE, &payload));
    let bytes = envelope(
        IN_TOTO_PAYLOAD_TYPE,
        &payload,
        &[("", sig.to_der().as_bytes())],
    );
    let report = verify_one(&image, bytes, &[trusted_key_from_pem(&pem).unwrap()], &[]);
    assert!(report.verified, "{:?}", report.reason);
}

#[test]
fn no_candidates_is_no_attestations() {
    let key = AwsKey::new();
    let report = verify(&digest("ab"), &[], &[key.trusted()], &[]);
    assert!(!report.verified && !report.allowed);
    assert_eq!(code(&report), Some(ReasonCode::NoAttestations));
    assert!(report.attestations.is_empty());
}

#[test]
fn no_trusted_keys_means_no_signature_verifies() {
    let key = AwsKey::new();
    let image = digest("ab");
    let report = verify_one(
        &image,
        signed(&key, &statement(&image, "main", "r")),
        &[],
        &[],
    );
    assert_eq!(code(&report), Some(ReasonCode::BadSignature));
    assert!(report.reason.unwrap().message.contains("no trusted keys"));
}

#[test]
fn one_good_attestation_among_bad_ones_verifies_the_image() {
    let key = AwsKey::new();
    let image = digest("ab");
    let candidates = [
        candidate(b"garbage".to_vec()),
        candidate(signed(&key, &statement(&image, "main", "r"))),
    ];
    let report = verify(&image, &candidates, &[key.trusted()], &[]);
    assert!(report.verified && report.allowed);
    assert!(report.reason.is_none());
    assert!(!report.attestations[0].verified);
    assert!(report.attestations[1].verified);
}

#[test]
fn overall_reason_comes_from_the_attestation_that_got_furthest() {
    let key = AwsKey::new();
    let untrusted = AwsKey::new();
    let image = digest("ab");
    let candidates = [
        candidate(signed(&untrusted, &statement(&image, "main", "r"))),
        candidate(signed(&key, &statement(&digest("99"), "main", "r"))),
    ];
    let report = verify(&image, &candidates, &[key.trusted()], &[]);
    assert!(!report.verified);
    let reason = report.reason.unwrap();
    assert_eq!(reason.code, ReasonCode::SubjectMismatch);
    assert!(
        reason.message.starts_with("none of 2 attestations"),
        "{}",
        reason.message
    );
}

#[test]
fn policies_must_all_pass_on_the_same_attestation() {
    let key = AwsKey::new();
    let image = digest("ab");
    let policies = [
        Policy::from_source("branch-main", BRANCH_MAIN).unwrap(),
        Policy::from_source("harness-repository", HARNESS_REPOSITORY).unwrap(),
    ];
    // One attestation satisfies only the branch policy, the other only the repository policy.
    let candidates = [
        candidate(signed(
            &key,
            &statement(&image, "main", "https://github.com/evil/app"),
        )),
        candidate(signed(
            &key,
            &statement(&image, "dev", "https://github.com/acme/app"),
        )),
    ];
    let report = verify(&image, &candidates, &[key.trusted()], &policies);
    assert!(report.verified);
    assert!(!report.allowed);
    assert_eq!(code(&report), Some(ReasonCode::PolicyDenied));
}

#[test]
fn policy_that_fails_to_evaluate_fails_the_policy_check_with_policy_error() {
    let key = AwsKey::new();
    let image = digest("ab");
    let policy = Policy::from_source("number", "package p\ndeny := 3").unwrap();
    let report = verify_one(
        &image,
        signed(&key, &statement(&image, "main", "r")),
        &[key.trusted()],
        &[policy],
    );
    assert!(report.verified && !report.allowed);
    let reason = report.reason.unwrap();
    assert_eq!(reason.code, ReasonCode::PolicyError);
    assert!(reason.message.contains("\"number\""), "{}", reason.message);
}

#[test]
fn report_serializes_in_camel_case_with_snake_case_codes() {
    let key = AwsKey::new();
    let image = digest("ab");
    let report = verify_one(
        &image,
        signed(&key, &statement(&digest("99"), "main", "r")),
        &[key.trusted()],
        &[],
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["image"], image.as_str());
    assert_eq!(json["verified"], false);
    assert_eq!(json["allowed"], false);
    assert_eq!(json["reason"]["code"], "subject_mismatch");
    let attestation = &json["attestations"][0];
    assert_eq!(attestation["keyId"], key.key_id());
    assert_eq!(
        attestation["annotations"]["dev.sigstore.cosign/signature"],
        ""
    );
    assert_eq!(attestation["checks"][1]["name"], "payloadType");
    assert_eq!(attestation["checks"][5]["outcome"], "failed");
    assert_eq!(attestation["checks"][5]["code"], "subject_mismatch");
    assert_eq!(attestation["checks"][6]["outcome"], "skipped");
    assert!(attestation["checks"][0].get("code").is_none());
}

#[test]
fn trusted_key_id_is_sha256_of_the_spki_der() {
    let key = AwsKey::new();
    assert_eq!(key.trusted().key_id().as_str(), key.key_id());
    let fixture = trusted_key_from_pem(FIXTURE_PUB).unwrap();
    let der = STANDARD
        .decode(
            FIXTURE_PUB
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    assert_eq!(fixture.key_id(), &KeyId::from_spki_der(&der));
}

#[test]
fn other_key_types_load_from_pem() {
    assert!(trusted_key_from_pem(FIXTURE_P384_PUB).is_ok());
    assert!(trusted_key_from_pem(FIXTURE_ED25519_PUB).is_ok());
}

#[test]
fn bundle_yields_every_distinct_key() {
    let a = AwsKey::new();
    let b = AwsKey::new();
    let bundle = format!("{}{}\n{}", a.pem(), b.pem(), a.pem());
    let keys = trusted_keys_from_pem_bundle(&bundle).unwrap();
    let ids: Vec<&str> = keys.iter().map(|k| k.key_id().as_str()).collect();
    assert_eq!(ids, [a.key_id(), b.key_id()]);
    assert_eq!(
        trusted_key_from_pem(&bundle).unwrap_err(),
        KeyError::SeveralPemBlocks(3)
    );
}

#[test]
fn bad_key_pems_are_refused_with_a_reason() {
    assert_eq!(
        trusted_key_from_pem("not a key").unwrap_err(),
        KeyError::NoPemBlock
    );
    assert!(matches!(
        trusted_key_from_pem(FIXTURE_PRIVATE).unwrap_err(),
        KeyError::NotAPublicKey { block: 1, .. }
    ));
    assert!(matches!(
        trusted_key_from_pem("-----BEGIN PUBLIC KEY-----\n%%%\n-----END PUBLIC KEY-----")
            .unwrap_err(),
        KeyError::MalformedPem { block: 1, .. }
    ));
    assert!(matches!(
        trusted_key_from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n").unwrap_err(),
        KeyError::MalformedPem { block: 1, .. }
    ));
    assert!(matches!(
        trusted_key_from_pem(&pem("PUBLIC KEY", b"\x30\x03\x02\x01\x01")).unwrap_err(),
        KeyError::Unsupported { block: 1, .. }
    ));
}
