//! A user's pseudonymous key: how the queue, the object store and the trust records name a user
//! without writing the user id down.

use sha2::{Digest, Sha256};

/// A user's pseudonymous key: the first 32 hex digits of SHA-256 over the tenant, a NUL and
/// the user id. It names the user's index of jobs in each pool and the user's folder in the
/// object store, so an erasure finds everything of theirs although the user id itself is
/// written nowhere but inside the (sealed) job records.
pub fn user_key(tenant: &str, user: &str) -> String {
    let mut v = Vec::with_capacity(tenant.len() + 1 + user.len());
    v.extend_from_slice(tenant.as_bytes());
    v.push(0);
    v.extend_from_slice(user.as_bytes());
    digest_hex(&v)[..32].to_owned()
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn digest_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_keys_are_stable_and_keep_tenants_apart() {
        let k = user_key("studio", "u-1");
        assert_eq!(k.len(), 32);
        assert!(k.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(k, user_key("studio", "u-1"));
        assert_ne!(k, user_key("studio2", "u-1"));
        // the separator keeps ("ab", "c") and ("a", "bc") apart
        assert_ne!(user_key("ab", "c"), user_key("a", "bc"));
        assert!(!k.contains("u-1"), "the user id is not readable from its key");
    }
}
