//! Signing against the real OpenBao: cosign keys read from KV v2, Transit signing, and how a
//! missing secret and an unreachable server are reported. Signatures are checked with
//! implementations attestd does not use for signing (RustCrypto `p256`, the Python fixtures).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::sync::Arc;

use attestd::config::{KeySettings, SigningSettings};
use attestd::domain::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE, pae};
use attestd::domain::{AccountId, KeyId};
use attestd::secrets::{self, SecretError};
use attestd::signing::{self, Keyring, KeyringError, SignError, TransitSigner, generate_key_pair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::DecodePublicKey as _;
use serde_json::json;

use crate::support::bao::{self, Bao};
use crate::support::{repo_path, run_fixture_script};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(repo_path(&format!("tests/fixtures/keys/{name}"))).unwrap()
}

fn account() -> AccountId {
    "acme".parse().unwrap()
}

fn one_key(name: &str, key: KeySettings) -> SigningSettings {
    SigningSettings {
        default_key: name.into(),
        shared_default_key: false,
        dev_key_prefix: "unused".into(),
        accounts: BTreeMap::new(),
        keys: BTreeMap::from([(name.to_owned(), key)]),
    }
}

/// A keyring whose only key is Transit key `key` on `mount` of the test server.
async fn transit_keyring(
    bao: &Bao,
    mount: &str,
    key: &str,
    refresh_secs: u64,
) -> Result<Keyring, KeyringError> {
    let mut settings = bao.secrets_settings();
    settings.refresh_secs = refresh_secs;
    let transit = KeySettings::Transit {
        mount: mount.to_owned(),
        key: key.to_owned(),
    };
    Keyring::load(
        &one_key("hsm", transit),
        &settings,
        Arc::new(secrets::env::EnvSource),
    )
    .await
}

/// A ~3 KB in-toto statement-shaped payload.
fn statement() -> Vec<u8> {
    let subjects: Vec<_> = (0..20)
        .map(|i| json!({"name": format!("registry.example.com/app-{i}"), "digest": {"sha256": format!("{i:064x}")}}))
        .collect();
    serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subjects,
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {"buildDefinition": {"buildType": "https://attestd.dev/ci/v1"}},
    }))
    .unwrap()
}

/// Verify `envelope` with the RustCrypto `p256` crate against `public_pem`, and check that a
/// one-byte change of the payload does not verify.
fn assert_envelope_verifies(envelope: &Envelope, public_pem: &str) {
    let key = p256::ecdsa::VerifyingKey::from_public_key_pem(public_pem).unwrap();
    let sig = STANDARD.decode(&envelope.signatures[0].sig).unwrap();
    let sig = p256::ecdsa::DerSignature::try_from(sig.as_slice()).unwrap();
    let payload = envelope.payload_bytes().unwrap();
    key.verify(&pae(&envelope.payload_type, &payload), &sig)
        .expect("signature verifies over the PAE");
    let mut changed = payload.clone();
    changed[10] ^= 0x01;
    assert!(
        key.verify(&pae(&envelope.payload_type, &changed), &sig)
            .is_err()
    );
}

#[tokio::test]
async fn cosign_key_and_password_from_kv_v2_sign_an_envelope_that_verifies() {
    let bao = Bao::from_env();
    let path = Bao::unique("attestd/signing");
    bao.write_kv(
        &path,
        json!({
            "cosign_key": fixture("cosign-p256-n15.key"),
            "cosign_password": fixture("cosign-p256-n15.password"),
        }),
    )
    .await;
    let settings = bao.secrets_settings();
    let source = secrets::from_settings(&settings).unwrap();
    let keyring = Keyring::load(
        &one_key(
            "release",
            KeySettings::Cosign {
                private_key: format!("{path}#cosign_key"),
                password: Some(format!("{path}#cosign_password")),
            },
        ),
        &settings,
        source,
    )
    .await
    .unwrap();

    let signer = keyring.signer_for(&account()).await.unwrap();
    let bytes = signing::sign_envelope(signer.as_ref(), IN_TOTO_PAYLOAD_TYPE, &statement())
        .await
        .unwrap();
    let envelope: Envelope = serde_json::from_slice(&bytes).unwrap();
    let fixture_pub = fixture("cosign-p256-n15.pub");
    assert_envelope_verifies(&envelope, &fixture_pub);
    let spki = pem::parse(&fixture_pub).unwrap();
    assert_eq!(
        envelope.signatures[0].keyid,
        KeyId::from_spki_der(spki.contents()).as_str()
    );

    // And the independent Python DSSE verifier agrees.
    let dir = tempfile::tempdir().unwrap();
    let envelope_file = dir.path().join("envelope.json");
    std::fs::write(&envelope_file, &bytes).unwrap();
    run_fixture_script(
        "verify_dsse.py",
        &[
            envelope_file.as_os_str(),
            repo_path("tests/fixtures/keys/cosign-p256-n15.pub").as_os_str(),
        ],
    );
}

#[tokio::test]
async fn transit_key_signs_envelopes_that_verify_with_the_public_key_from_transit() {
    let bao = Bao::from_env();
    let mount = bao.enable_transit().await;
    bao.create_transit_key(&mount, "attestd", "ecdsa-p256")
        .await;
    let keyring = transit_keyring(&bao, &mount, "attestd", 300).await.unwrap();

    let signer = keyring.signer_for(&account()).await.unwrap();
    let bytes = signing::sign_envelope(signer.as_ref(), IN_TOTO_PAYLOAD_TYPE, &statement())
        .await
        .unwrap();
    let envelope: Envelope = serde_json::from_slice(&bytes).unwrap();
    let server_pem = bao.transit_public_key(&mount, "attestd", 1).await;
    assert_envelope_verifies(&envelope, &server_pem);
    let spki = pem::parse(&server_pem).unwrap();
    assert_eq!(signer.key_id(), &KeyId::from_spki_der(spki.contents()));

    let listed = keyring.public_keys().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].kind, signing::KeyKind::Transit);
    assert_eq!(&listed[0].key_id, signer.key_id());
}

#[tokio::test]
async fn transit_key_of_another_type_is_refused_at_start_up() {
    let bao = Bao::from_env();
    let mount = bao.enable_transit().await;
    bao.create_transit_key(&mount, "ed", "ed25519").await;
    let err = transit_keyring(&bao, &mount, "ed", 300)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("`hsm`") && err.contains("ed25519"), "{err}");
}

#[tokio::test]
async fn wrong_kv_path_or_field_is_not_found_naming_the_reference() {
    let bao = Bao::from_env();
    let path = Bao::unique("attestd/present");
    bao.write_kv(&path, json!({ "cosign_key": "x" })).await;
    let source = secrets::from_settings(&bao.secrets_settings()).unwrap();

    let missing_path = format!("{}#cosign_key", Bao::unique("attestd/absent"));
    let missing_field = format!("{path}#cosign_password");
    for reference in [&missing_path, &missing_field] {
        let err = source.get(reference).await.unwrap_err();
        assert!(matches!(err, SecretError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains(reference.as_str()), "{err}");
    }
}

#[tokio::test]
async fn wrong_token_is_unavailable_and_never_echoed() {
    let bao = Bao::from_env();
    let path = Bao::unique("attestd/denied");
    bao.write_kv(&path, json!({ "f": "v" })).await;
    let source =
        secrets::from_settings(&bao::secrets_settings(&bao.addr, "not-a-real-token")).unwrap();
    let err = source.get(&format!("{path}#f")).await.unwrap_err();
    assert!(matches!(err, SecretError::Unavailable { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("permission denied"), "{text}");
    assert!(!text.contains("not-a-real-token"), "{text}");
}

#[tokio::test]
async fn unreachable_vault_is_unavailable_and_delays_keys_without_failing_start_up() {
    let settings = bao::secrets_settings(&bao::closed_address(), "root");
    let source = secrets::from_settings(&settings).unwrap();
    let err = source.get("attestd/x#cosign_key").await.unwrap_err();
    assert!(matches!(err, SecretError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("attestd/x#cosign_key"), "{err}");

    let client = Arc::new(secrets::vault::VaultClient::from_settings(&settings).unwrap());
    let err = TransitSigner::load(client, "transit", "attestd")
        .await
        .unwrap_err();
    assert!(matches!(err, SignError::Unavailable(_)), "{err}");

    // Both kinds of key: start-up succeeds, signing reports Unavailable so the job retries.
    for key in [
        KeySettings::Transit {
            mount: "transit".into(),
            key: "attestd".into(),
        },
        KeySettings::Cosign {
            private_key: "attestd/x#cosign_key".into(),
            password: Some("attestd/x#cosign_password".into()),
        },
    ] {
        let keyring = Keyring::load(&one_key("k", key), &settings, source.clone())
            .await
            .unwrap();
        let err = keyring.signer_for(&account()).await.err().unwrap();
        assert!(matches!(err, SignError::Unavailable(_)), "{err}");
    }
}

#[tokio::test]
async fn approle_login_reads_kv_secrets() {
    let bao = Bao::from_env();
    let path = Bao::unique("attestd/approle");
    bao.write_kv(&path, json!({ "password": "from-approle" }))
        .await;
    // Enabling AppRole is global to the server: tolerate another test having done it.
    let _ = reqwest::Client::new()
        .post(format!("{}/v1/sys/auth/approle", bao.addr))
        .header("X-Vault-Token", &bao.token)
        .json(&json!({ "type": "approle" }))
        .send()
        .await;
    let policy = Bao::unique("attestd-read");
    bao.request(
        reqwest::Method::PUT,
        &format!("sys/policies/acl/{policy}"),
        Some(json!({ "policy": format!("path \"secret/data/{path}\" {{ capabilities = [\"read\"] }}") })),
    )
    .await;
    let role = Bao::unique("attestd");
    bao.request(
        reqwest::Method::POST,
        &format!("auth/approle/role/{role}"),
        Some(json!({ "token_policies": [policy] })),
    )
    .await;
    let role_id = bao
        .request(
            reqwest::Method::GET,
            &format!("auth/approle/role/{role}/role-id"),
            None,
        )
        .await["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_id = bao
        .request(
            reqwest::Method::POST,
            &format!("auth/approle/role/{role}/secret-id"),
            None,
        )
        .await["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut settings = bao::secrets_settings(&bao.addr, "");
    settings.vault_approle_role_id = role_id.into();
    settings.vault_approle_secret_id = secret_id.into();
    let source = secrets::from_settings(&settings).unwrap();
    let value = source.get(&format!("{path}#password")).await.unwrap();
    use secrecy::ExposeSecret as _;
    assert_eq!(value.expose_secret(), "from-approle");
}

#[test]
fn generated_key_pair_is_read_back_by_the_independent_python_checker() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("cosign");
    let password = "py-check: ünïcode and spaces";
    let generated = generate_key_pair(&prefix, password.as_bytes(), false).unwrap();
    let password_file = dir.path().join("cosign.password");
    std::fs::write(&password_file, password).unwrap();
    run_fixture_script(
        "check_cosign_key.py",
        &[
            OsStr::new("--require-p256"),
            generated.private_key_path.as_os_str(),
            password_file.as_os_str(),
            generated.public_key_path.as_os_str(),
        ],
    );
}

#[tokio::test]
async fn rotated_transit_key_is_picked_up_on_refresh_and_each_signature_matches_its_key_id() {
    let bao = Bao::from_env();
    let mount = bao.enable_transit().await;
    bao.create_transit_key(&mount, "attestd", "ecdsa-p256")
        .await;
    let keyring = transit_keyring(&bao, &mount, "attestd", 0).await.unwrap();
    let before = keyring.signer_for(&account()).await.unwrap();

    bao.request(
        reqwest::Method::POST,
        &format!("{mount}/keys/attestd/rotate"),
        None,
    )
    .await;

    // A signer obtained before the rotation keeps signing with (and naming) version 1.
    let bytes = signing::sign_envelope(before.as_ref(), IN_TOTO_PAYLOAD_TYPE, &statement())
        .await
        .unwrap();
    let envelope: Envelope = serde_json::from_slice(&bytes).unwrap();
    assert_envelope_verifies(
        &envelope,
        &bao.transit_public_key(&mount, "attestd", 1).await,
    );

    let after = keyring.signer_for(&account()).await.unwrap();
    assert_ne!(after.key_id(), before.key_id());
    let bytes = signing::sign_envelope(after.as_ref(), IN_TOTO_PAYLOAD_TYPE, &statement())
        .await
        .unwrap();
    let envelope: Envelope = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(envelope.signatures[0].keyid, after.key_id().as_str());
    assert_envelope_verifies(
        &envelope,
        &bao.transit_public_key(&mount, "attestd", 2).await,
    );
}
