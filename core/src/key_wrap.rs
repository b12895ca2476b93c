//! What sealing needs of a key ring, named here so that crates below the queue (the object
//! store, which seals outputs) can use the fleet's data key ring (`gantry_queue::seal::Keyring`,
//! which implements it) without depending on the queue.

/// A key ring that wraps small secrets (an object's data key) under its current key and
/// unwraps them under any key it holds, each bound to associated data.
pub trait KeyWrap: Send + Sync + std::fmt::Debug {
    /// The id of the key that wraps.
    fn current(&self) -> &str;

    /// `plain` wrapped by the current key, bound to `aad`: the key's id, the nonce and the
    /// ciphertext.
    fn wrap(&self, plain: &[u8], aad: &[u8]) -> Result<(String, [u8; 12], Vec<u8>), String>;

    /// What [`KeyWrap::wrap`] wrapped with key `kid` for `aad`.
    fn unwrap(&self, kid: &str, nonce: &[u8; 12], ct: &[u8], aad: &[u8]) -> Result<Vec<u8>, String>;
}
