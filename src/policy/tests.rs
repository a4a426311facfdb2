use super::*;
use serde_json::json;

const BRANCH_MAIN: &str = include_str!("../../policies/examples/branch-main.rego");
const HARNESS_REPOSITORY: &str = include_str!("../../policies/examples/harness-repository.rego");
/// The Rego v1 `deny contains` form, inline so the test shows exactly what is parsed.
pub(crate) const BRANCH_V1: &str = r#"package attestd.branch
deny contains msg if {
    input.predicate.buildDefinition.externalParameters.codeMetadata.branch != "main"
    msg := "builds must come from main"
}"#;

fn statement(repository: &str, branch: &str) -> serde_json::Value {
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "registry.example.com/acme/app", "digest": {"sha256": "ab".repeat(32)}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "https://attestd.dev/buildtypes/ci-webhook/v1",
                "externalParameters": {
                    "codeMetadata": {"repositoryURL": repository, "branch": branch, "commitSha": "0123"}
                }
            },
            "runDetails": {"builder": {"id": "https://ci.example.com"}}
        }
    })
}

fn only(policy: &Policy, statement: &serde_json::Value) -> PolicyResult {
    let mut results = evaluate(std::slice::from_ref(policy), statement).unwrap();
    assert_eq!(results.len(), 1);
    results.remove(0)
}

#[test]
fn rego_v1_deny_contains_fails_with_its_message() {
    let policy = Policy::from_source("branch", BRANCH_V1).unwrap();
    assert_eq!(policy.rego_version(), RegoVersion::V1);
    assert_eq!(policy.input_shape(), InputShape::Statement);

    let denied = only(
        &policy,
        &statement("https://github.com/acme/app", "feature/x"),
    );
    assert!(!denied.allowed);
    assert_eq!(denied.messages, ["builds must come from main"]);
    assert_eq!(denied.policy, "branch");

    let allowed = only(&policy, &statement("https://github.com/acme/app", "main"));
    assert!(allowed.allowed);
    assert!(allowed.messages.is_empty());
}

#[test]
fn rego_v0_deny_set_is_parsed_as_v0() {
    let policy = Policy::from_source(
        "v0",
        r#"package v0
deny[msg] {
    input.predicate.buildDefinition.externalParameters.codeMetadata.branch != "main"
    msg := "not main"
}"#,
    )
    .unwrap();
    assert_eq!(policy.rego_version(), RegoVersion::V0);
    let result = only(&policy, &statement("r", "dev"));
    assert_eq!(result.messages, ["not main"]);
    assert!(only(&policy, &statement("r", "main")).allowed);
}

#[test]
fn rego_v1_ref_head_without_contains_yields_its_keys_as_messages() {
    // In Rego v1 `deny[msg] if` defines an object {msg: true}, not a set.
    let policy = Policy::from_source(
        "refhead",
        "package refhead\ndeny[msg] if {\n  input.predicate.buildDefinition.externalParameters.codeMetadata.branch != \"main\"\n  msg := \"not main\"\n}",
    )
    .unwrap();
    assert_eq!(only(&policy, &statement("r", "dev")).messages, ["not main"]);
    assert!(only(&policy, &statement("r", "main")).allowed);
}

#[test]
fn conftest_style_object_messages_use_their_msg_field() {
    let policy = Policy::from_source(
        "objects",
        "package objects\ndeny contains {\"msg\": \"no\", \"code\": 7} if { input.predicate }",
    )
    .unwrap();
    assert_eq!(only(&policy, &statement("r", "main")).messages, ["no"]);
}

#[test]
fn every_deny_message_is_reported_in_sorted_order() {
    let policy = Policy::from_source(
        "many",
        r#"package many
deny contains "b second" if { input.predicate }
deny contains "a first" if { input.subject }
deny contains "never" if { input.nothing }"#,
    )
    .unwrap();
    let result = only(&policy, &statement("r", "main"));
    assert_eq!(result.messages, ["a first", "b second"]);
}

#[test]
fn regex_builtin_is_available() {
    let policy = Policy::from_source(
        "regex",
        r#"package regex_policy
deny contains "release branches only" if {
    not regex.match(`^release/[0-9]+$`, input.predicate.buildDefinition.externalParameters.codeMetadata.branch)
}"#,
    )
    .unwrap();
    assert!(only(&policy, &statement("r", "release/12")).allowed);
    assert!(!only(&policy, &statement("r", "main")).allowed);
}

#[test]
fn example_branch_main_policy_allows_main_and_denies_others() {
    let policy = Policy::from_source("branch-main", BRANCH_MAIN).unwrap();
    assert_eq!(policy.input_shape(), InputShape::Statement);
    assert_eq!(policy.rego_version(), RegoVersion::V1);
    assert!(only(&policy, &statement("https://github.com/acme/app", "main")).allowed);
    assert_eq!(
        only(&policy, &statement("https://github.com/acme/app", "dev")).messages,
        ["builds must come from main"]
    );
    let mut no_branch = statement("https://github.com/acme/app", "main");
    no_branch["predicate"]["buildDefinition"]["externalParameters"] = json!({"source": "git+x"});
    assert_eq!(
        only(&policy, &no_branch).messages,
        ["the provenance does not name the branch it was built from"]
    );
}

#[test]
fn example_harness_repository_policy_sees_the_harness_shape() {
    let policy = Policy::from_source("harness-repository", HARNESS_REPOSITORY).unwrap();
    assert_eq!(policy.input_shape(), InputShape::Harness);
    assert_eq!(policy.rego_version(), RegoVersion::V0);

    let matching = only(&policy, &statement("https://github.com/acme/app", "main"));
    assert!(matching.allowed, "{:?}", matching.messages);
    assert_eq!(matching.input_shape, InputShape::Harness);

    let other = only(&policy, &statement("https://github.com/evil/app", "main"));
    assert!(!other.allowed);
    assert_eq!(
        other.messages,
        ["repository https://github.com/evil/app is not on the allowed list"]
    );
}

#[test]
fn harness_example_from_the_harness_documentation_runs_unchanged() {
    // The shape of Harness' documented example (v0, `!=` against a literal).
    let policy = Policy::from_source(
        "harness-doc",
        r#"package slsa
deny[msg]{
  input[0].outcome.stepArtifacts.provenanceArtifacts[0].predicate.buildDefinition.externalParameters.codeMetadata.branch != "main"
  msg := "Branch verification failed in provenance"
}"#,
    )
    .unwrap();
    assert!(only(&policy, &statement("r", "main")).allowed);
    assert_eq!(
        only(&policy, &statement("r", "dev")).messages,
        ["Branch verification failed in provenance"]
    );
}

#[test]
fn harness_shape_exposes_subject_and_predicate_type() {
    let policy = Policy::from_source(
        "harness-fields",
        r#"package fields
deny contains "wrong type" if {
    input[0].outcome.stepArtifacts.provenanceArtifacts[0].predicateType != "https://slsa.dev/provenance/v1"
}
deny contains "wrong subject" if {
    input[0].outcome.stepArtifacts.provenanceArtifacts[0].subject[0].name != "registry.example.com/acme/app"
}"#,
    )
    .unwrap();
    assert!(only(&policy, &statement("r", "main")).allowed);
    let mut other = statement("r", "main");
    other["subject"][0]["name"] = json!("elsewhere");
    assert_eq!(only(&policy, &other).messages, ["wrong subject"]);
}

#[test]
fn overriding_the_input_shape_changes_what_input_is() {
    let policy = Policy::from_source(
        "override",
        "package o\ndeny contains \"statement shape\" if { input.predicate }",
    )
    .unwrap()
    .with_input_shape(InputShape::Harness);
    assert!(only(&policy, &statement("r", "main")).allowed);
}

#[test]
fn unparsable_policy_is_an_error_naming_it() {
    let err = Policy::from_source("broken", "package p\ndeny contains msg if {").unwrap_err();
    assert!(matches!(&err, PolicyError::Parse { policy, .. } if policy == "broken"));
    let text = err.to_string();
    assert!(text.contains("\"broken\""), "{text}");
    assert!(
        text.contains("Rego v1") && text.contains("Rego v0"),
        "{text}"
    );
}

#[test]
fn policy_without_deny_rule_is_refused() {
    let err = Policy::from_source("allow-only", "package p\nallow if { true }").unwrap_err();
    assert!(matches!(err, PolicyError::NoDenyRule { policy } if policy == "allow-only"));
}

#[test]
fn deny_that_is_not_a_set_is_an_evaluation_error_naming_the_policy() {
    let policy = Policy::from_source("number", "package p\ndeny := 3").unwrap();
    let err = evaluate(&[policy], &statement("r", "main")).unwrap_err();
    assert!(matches!(&err, PolicyError::Evaluate { policy, .. } if policy == "number"));
    assert!(
        err.to_string().contains("must be a set of messages"),
        "{err}"
    );
}

#[test]
fn runtime_error_is_an_evaluation_error_naming_the_policy() {
    // Two different values for one complete rule is a conflict OPA and regorus both refuse.
    let policy = Policy::from_source(
        "conflict",
        "package p\nx := 1 if { input.predicate }\nx := 2 if { input.subject }\ndeny contains \"d\" if { x > 0 }",
    )
    .unwrap();
    let err = evaluate(&[policy], &statement("r", "main")).unwrap_err();
    assert!(
        matches!(&err, PolicyError::Evaluate { policy, .. } if policy == "conflict"),
        "{err}"
    );
}

#[test]
fn policies_from_files_are_named_after_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("branch-main.rego");
    std::fs::write(&path, BRANCH_MAIN).unwrap();
    let policy = Policy::from_file(&path).unwrap();
    assert_eq!(policy.name(), "branch-main");
    assert_eq!(policy.source(), BRANCH_MAIN);
    let missing = Policy::from_file(&dir.path().join("missing.rego")).unwrap_err();
    assert!(matches!(missing, PolicyError::Read { .. }));
}

#[test]
fn policies_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Policy>();
}

#[test]
fn regorus_timer_ends_a_spinning_policy_with_a_clear_reason() {
    let policy = Policy::from_source(
        "spin",
        "package spin\ndeny contains \"d\" if { count({x | some a in numbers.range(0, 100000); some b in numbers.range(0, 100000); x := a * b}) > 0 }",
    )
    .unwrap();
    let limits = EvalLimits {
        timeout_ms: 200,
        ..EvalLimits::default()
    };
    let started = std::time::Instant::now();
    let err = policy
        .evaluate_with(&statement("r", "main"), &limits)
        .unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert!(err.to_string().contains("exceeded time limit"), "{err}");
}

#[test]
fn deny_messages_are_capped_and_capping_twice_changes_nothing() {
    let limits = EvalLimits {
        max_messages: 3,
        max_message_bytes: 64,
        ..EvalLimits::default()
    };
    // Multi-byte characters around the cut.
    let messages: Vec<String> = (0..5).map(|i| format!("{i} {}", "é".repeat(60))).collect();
    let capped = cap_messages(messages, &limits);
    assert_eq!(capped.len(), 3);
    for m in &capped[..2] {
        assert!(m.len() <= 64 && m.ends_with("… [truncated]"), "{m}");
    }
    assert_eq!(capped[2], "… and 3 more deny messages not shown");
    assert_eq!(cap_messages(capped.clone(), &limits), capped);
    let few = vec!["short".to_owned()];
    assert_eq!(cap_messages(few.clone(), &limits), few);
}

#[test]
fn bounds_are_checked_before_anything_is_parsed() {
    let ok = [("a", 10u64), ("b", 64)];
    assert_eq!(check_bounds(ok.into_iter(), 2, 64), Ok(()));
    assert!(matches!(
        check_bounds(ok.into_iter(), 1, 64),
        Err(BoundsError::TooMany { count: 2, max: 1 })
    ));
    assert!(matches!(
        check_bounds([("big", 65u64)].into_iter(), 2, 64),
        Err(BoundsError::TooLarge { bytes: 65, .. })
    ));
    let long = "n".repeat(MAX_POLICY_NAME_BYTES + 1);
    assert_eq!(
        check_bounds([("", 1u64)].into_iter(), 2, 64),
        Err(BoundsError::BadName)
    );
    assert_eq!(
        check_bounds([(long.as_str(), 1u64)].into_iter(), 2, 64),
        Err(BoundsError::BadName)
    );
}
