-- Every public key attestd has loaded to sign with, so envelopes signed before a key rotation
-- still verify by key id. Written when a key is loaded, before it signs; never deleted.
CREATE TABLE signing_keys (
    key_id         TEXT    PRIMARY KEY, -- lowercase hex SHA-256 of the SubjectPublicKeyInfo DER
    name           TEXT    NOT NULL,    -- the [signing.keys] name it was last loaded under
    kind           TEXT    NOT NULL,    -- cosign, transit or development
    public_key_pem TEXT    NOT NULL,
    first_seen_at  INTEGER NOT NULL,
    last_seen_at   INTEGER NOT NULL
);
