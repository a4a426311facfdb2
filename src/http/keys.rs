//! `GET /v1/keys`: the public keys attestd signs with and those it signed with before a rotation,
//! with their ids, so anyone can verify.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use crate::app::AppState;
use crate::error::ApiError;
use crate::signing::KeyState;

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
    /// `current`: new attestations are signed with it; `retired`: it signed before a rotation.
    pub state: KeyState,
    /// The accounts that sign with this key now (empty for a retired key).
    pub accounts: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PublicKeys {
    pub keys: Vec<PublicKeyView>,
}

#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "keys",
    responses(
        (status = 200, description = "Current keys (every configured key that has loaded), then retired keys that signed before a rotation", body = PublicKeys),
        (status = 500, description = "The store could not be read", body = crate::error::ErrorResponse),
    )
)]
pub async fn list_keys(State(state): State<AppState>) -> Result<Json<PublicKeys>, ApiError> {
    let keys = state
        .keyring
        .listing(&state.settings.accounts())
        .await?
        .into_iter()
        .map(|k| PublicKeyView {
            name: k.name,
            key_id: k.key_id,
            public_key_pem: k.public_key_pem,
            kind: k.kind,
            state: k.state,
            accounts: k.accounts.iter().map(ToString::to_string).collect(),
        })
        .collect();
    Ok(Json(PublicKeys { keys }))
}
