//! Dead Simple Signing Envelope (DSSE v1): the pre-authentication encoding every signature
//! covers, and the envelope's JSON shape.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// The payload type of an in-toto statement inside a DSSE envelope.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// `PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + payload_type.len() + payload.len());
    out.extend_from_slice(
        format!(
            "DSSEv1 {} {payload_type} {} ",
            payload_type.len(),
            payload.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope as serialized: payload and signatures in standard (padded) base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub payload_type: String,
    pub payload: String,
    pub signatures: Vec<Signature>,
}

/// One signature in an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub keyid: String,
    pub sig: String,
}

/// Serialize a one-signature envelope straight into bytes: the same JSON as serializing
/// [`Envelope::new`] with serde, without building the intermediate strings (this is on the
/// signing hot path).
pub fn envelope_json(payload_type: &str, payload: &[u8], keyid: &str, sig: &[u8]) -> Vec<u8> {
    fn push_b64(out: &mut Vec<u8>, bytes: &[u8]) {
        let start = out.len();
        out.resize(
            start + base64::encoded_len(bytes.len(), true).unwrap_or(0),
            0,
        );
        let written = STANDARD.encode_slice(bytes, &mut out[start..]).unwrap_or(0);
        out.truncate(start + written);
    }
    fn push_str(out: &mut Vec<u8>, s: &str) {
        // Writing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
    let mut out =
        Vec::with_capacity(payload.len() * 4 / 3 + payload_type.len() + keyid.len() + 200);
    out.extend_from_slice(b"{\"payloadType\":");
    push_str(&mut out, payload_type);
    out.extend_from_slice(b",\"payload\":\"");
    push_b64(&mut out, payload);
    out.extend_from_slice(b"\",\"signatures\":[{");
    if !keyid.is_empty() {
        out.extend_from_slice(b"\"keyid\":");
        push_str(&mut out, keyid);
        out.push(b',');
    }
    out.extend_from_slice(b"\"sig\":\"");
    push_b64(&mut out, sig);
    out.extend_from_slice(b"\"}]}");
    out
}

impl Envelope {
    /// An envelope over `payload` carrying one signature (`sig` is the raw signature bytes).
    pub fn new(payload_type: &str, payload: &[u8], keyid: &str, sig: &[u8]) -> Self {
        Self {
            payload_type: payload_type.to_owned(),
            payload: STANDARD.encode(payload),
            signatures: vec![Signature {
                keyid: keyid.to_owned(),
                sig: STANDARD.encode(sig),
            }],
        }
    }

    /// The decoded payload bytes.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        STANDARD.decode(&self.payload)
    }

    /// The PAE bytes the signatures must cover.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        Ok(pae(&self.payload_type, &self.payload_bytes()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_specification_example() {
        // From the DSSE protocol document: PAE("http://example.com/HelloWorld", "hello world").
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn pae_counts_bytes_not_characters() {
        assert_eq!(
            pae("t", "é".as_bytes()),
            "DSSEv1 1 t 2 é".as_bytes().to_vec()
        );
    }

    #[test]
    fn direct_serialization_matches_serde() {
        for (payload_type, payload, keyid, sig) in [
            (
                IN_TOTO_PAYLOAD_TYPE,
                &b"{\"_type\":\"x\"}"[..],
                "abc123",
                &[0u8, 255, 7][..],
            ),
            ("weird \"type\"\n", &[0u8; 1000][..], "", &[1u8; 71][..]),
            ("t", &b""[..], "k\\\"", &b""[..]),
        ] {
            let via_serde =
                serde_json::to_vec(&Envelope::new(payload_type, payload, keyid, sig)).unwrap();
            assert_eq!(envelope_json(payload_type, payload, keyid, sig), via_serde);
        }
    }

    #[test]
    fn envelope_round_trips_payload() {
        let env = Envelope::new(IN_TOTO_PAYLOAD_TYPE, b"{\"a\":1}", "k", &[1, 2, 3]);
        let json = serde_json::to_string(&env).unwrap();
        assert!(json.starts_with("{\"payloadType\":\"application/vnd.in-toto+json\",\"payload\":"));
        let back: Envelope = serde_json::from_str(&json).unwrap();
        assert_eq!(back.payload_bytes().unwrap(), b"{\"a\":1}");
        assert_eq!(back.signatures[0].sig, "AQID");
    }
}
