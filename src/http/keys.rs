//! `GET /v1/keys`: the public keys attestd signs with, and their ids, so anyone can verify.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use crate::app::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublicKeyView {
    pub name: String,
    /// Lowercase hex SHA-256 of the SubjectPublicKeyInfo DER; the `keyid` in envelopes.
    pub key_id: String,
    /// PKIX `PUBLIC KEY` PEM, usable as `cosign verify-attestation --key`.
    pub public_key_pem: String,
    /// `cosign`, `transit` or `development`.
    pub kind: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PublicKeys {
    pub keys: Vec<PublicKeyView>,
}

#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "keys",
    responses((status = 200, description = "Public keys of every configured signing key that has loaded", body = PublicKeys))
)]
pub async fn list_keys(State(state): State<AppState>) -> Json<PublicKeys> {
    let keys = state
        .keyring
        .public_keys()
        .await
        .into_iter()
        .map(|k| PublicKeyView {
            name: k.name,
            key_id: k.key_id.to_string(),
            public_key_pem: k.public_key_pem,
            kind: serde_json::to_value(k.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        })
        .collect();
    Json(PublicKeys { keys })
}
