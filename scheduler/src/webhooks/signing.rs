//! Signatures per the Standard Webhooks specification, so a platform verifies our deliveries
//! with any of its libraries: `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, one signature per
//! secret that is valid (two while a secret is being rotated), space-separated.
//! Secrets are `whsec_` and base64 of 24 random bytes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of a secret's text.
pub const SECRET_PREFIX: &str = "whsec_";

/// A fresh secret.
pub fn new_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    format!("{SECRET_PREFIX}{}", B64.encode(bytes))
}

/// A secret that is not `whsec_<base64>` of at least 16 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a signing secret is whsec_ and base64 of 16 to 64 bytes")]
pub struct BadSecret;

/// A secret's key bytes.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, BadSecret> {
    let b64 = secret.strip_prefix(SECRET_PREFIX).ok_or(BadSecret)?;
    let key = B64.decode(b64).map_err(|_| BadSecret)?;
    if !(16..=64).contains(&key.len()) {
        return Err(BadSecret);
    }
    Ok(key)
}

/// One `v1,<signature>` of `body` sent as message `id` at `timestamp` (Unix seconds).
pub fn sign(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> Result<String, BadSecret> {
    let key = secret_key(secret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| BadSecret)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("v1,{}", B64.encode(mac.finalize().into_bytes())))
}

/// The `webhook-signature` header: a signature per secret, space-separated (bad secrets are
/// skipped; they are refused when stored, so none should be here).
pub fn signature_header<'a>(
    secrets: impl IntoIterator<Item = &'a str>,
    id: &str,
    timestamp: u64,
    body: &[u8],
) -> String {
    secrets
        .into_iter()
        .filter_map(|s| sign(s, id, timestamp, body).ok())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's published example (the reference libraries' test vector).
    #[test]
    fn signs_the_specifications_example() {
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig.as_deref(), Ok("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
    }

    #[test]
    fn one_signature_per_valid_secret_and_fresh_secrets_are_valid() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(secret_key(&a).is_ok());
        let h = signature_header([a.as_str(), b.as_str(), "nope"], "msg_1", 5, b"{}");
        let parts: Vec<&str> = h.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(&a, "msg_1", 5, b"{}").unwrap_or_default());
        for bad in ["", "whsec_", "whsec_!!!", "sk_abc", "whsec_AAAA"] {
            assert_eq!(secret_key(bad), Err(BadSecret), "{bad:?}");
        }
    }
}
