//! Outputs encrypted at rest: envelope encryption with the fleet's data key ring
//! (`GANTRY_DATA_KEYS`, the ring job payloads are sealed with, rotated the same way; the store
//! sees it as a [`KeyWrap`]).
//!
//! Each object gets a data encryption key of its own (random, 256 bits). The content is
//! sealed with it in pieces of 64 KiB — AES-256-GCM-SIV, a random nonce per piece, each bound
//! to the object's key, the piece's index and whether it is the last — so a range is read by
//! opening only the pieces it covers, and nothing can be reordered, moved to another object or
//! cut off unseen. The object is `GOE1` then, per piece, the nonce and the ciphertext (every
//! piece but the last is [`SEALED_PIECE`] bytes, so the plaintext's size and a range's pieces
//! follow from the stored size).
//!
//! The data key is wrapped by the ring's current key, bound to the object's key (which names
//! the tenant's folder), and kept beside the content in a small sidecar object,
//! `keys/<object key>`: rotating the ring re-wraps the sidecars and never touches the content.
//! Without the ring, the content is unreadable.

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use gantry_core::KeyWrap;

use crate::OutputError;

/// What a sealed object starts with.
pub const MAGIC: &[u8; 4] = b"GOE1";
/// Plaintext bytes per piece.
pub const PIECE: u64 = 64 << 10;
/// Stored bytes per full piece: the nonce, the piece, the tag.
pub const SEALED_PIECE: u64 = 12 + PIECE + 16;
/// Where the sidecars live.
pub const KEYS_PREFIX: &str = "keys";

/// The sidecar of a sealed object: its data key, wrapped.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
pub struct KeyRecord {
    /// The format (`GOE1`).
    pub format: String,
    /// The ring's key that wrapped it.
    pub kid: String,
    /// The wrap's nonce (base64).
    pub nonce: String,
    /// The wrapped data key (base64).
    pub wrapped: String,
}

fn sealed(why: impl Into<String>) -> OutputError {
    OutputError::Sealed(why.into())
}

fn wrap_aad(object_key: &str) -> Vec<u8> {
    format!("gantry-output-key\0{object_key}").into_bytes()
}

fn piece_aad(object_key: &str, index: u64, last: bool) -> Vec<u8> {
    format!("gantry-output\0{object_key}\0{index}\0{}", u8::from(last)).into_bytes()
}

/// A fresh data key for `object_key`, and its sidecar.
pub fn new_key(ring: &dyn KeyWrap, object_key: &str) -> Result<(DataKey, KeyRecord), OutputError> {
    let raw: [u8; 32] = rand::random();
    let (kid, nonce, wrapped) = ring
        .wrap(&raw, &wrap_aad(object_key))
        .map_err(|e| sealed(format!("wrapping the data key: {e}")))?;
    let record = KeyRecord {
        format: "GOE1".into(),
        kid,
        nonce: B64.encode(nonce),
        wrapped: B64.encode(wrapped),
    };
    Ok((DataKey::new(&raw, object_key)?, record))
}

/// Unwraps the data key of `object_key` from its sidecar.
pub fn open_key(ring: &dyn KeyWrap, object_key: &str, record: &KeyRecord) -> Result<DataKey, OutputError> {
    let raw = unwrap(ring, object_key, record)?;
    DataKey::new(&raw, object_key)
}

fn unwrap(ring: &dyn KeyWrap, object_key: &str, record: &KeyRecord) -> Result<Vec<u8>, OutputError> {
    let nonce: [u8; 12] = B64
        .decode(&record.nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or_else(|| sealed("the data key's record is damaged"))?;
    let wrapped = B64
        .decode(&record.wrapped)
        .map_err(|_| sealed("the data key's record is damaged"))?;
    ring.unwrap(&record.kid, &nonce, &wrapped, &wrap_aad(object_key))
        .map_err(|e| sealed(format!("the data key of {object_key} does not open: {e}")))
}

/// The sidecar of `object_key` wrapped again by the ring's current key (`None` when it already
/// is). The data key, and so the content, stays as it is.
pub fn rewrap(ring: &dyn KeyWrap, object_key: &str, record: &KeyRecord) -> Result<Option<KeyRecord>, OutputError> {
    if record.kid == ring.current() {
        return Ok(None);
    }
    let raw = unwrap(ring, object_key, record)?;
    let (kid, nonce, wrapped) = ring
        .wrap(&raw, &wrap_aad(object_key))
        .map_err(|e| sealed(format!("wrapping the data key: {e}")))?;
    Ok(Some(KeyRecord {
        format: record.format.clone(),
        kid,
        nonce: B64.encode(nonce),
        wrapped: B64.encode(wrapped),
    }))
}

/// One object's data key.
#[derive(Clone)]
pub struct DataKey {
    cipher: Aes256GcmSiv,
    object_key: String,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("object_key", &self.object_key)
            .finish_non_exhaustive()
    }
}

impl DataKey {
    fn new(raw: &[u8], object_key: &str) -> Result<Self, OutputError> {
        Ok(Self {
            cipher: Aes256GcmSiv::new_from_slice(raw).map_err(|_| sealed("a data key of the wrong length"))?,
            object_key: object_key.to_owned(),
        })
    }

    /// Seals piece `index` (the last one when `last`): nonce then ciphertext.
    pub fn seal_piece(&self, index: u64, last: bool, plain: &[u8]) -> Result<Vec<u8>, OutputError> {
        let nonce: [u8; 12] = rand::random();
        let aad = piece_aad(&self.object_key, index, last);
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad: &aad })
            .map_err(|_| sealed("sealing a piece"))?;
        let mut out = Vec::with_capacity(12 + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens piece `index` (nonce then ciphertext).
    pub fn open_piece(&self, index: u64, last: bool, sealed_piece: &[u8]) -> Result<Vec<u8>, OutputError> {
        if sealed_piece.len() < 28 {
            return Err(sealed(format!("{}: a piece cut short", self.object_key)));
        }
        let aad = piece_aad(&self.object_key, index, last);
        self.cipher
            .decrypt(
                Nonce::from_slice(&sealed_piece[..12]),
                Payload {
                    msg: &sealed_piece[12..],
                    aad: &aad,
                },
            )
            .map_err(|_| {
                sealed(format!(
                    "{}: piece {index} does not open (damaged or moved)",
                    self.object_key
                ))
            })
    }

    /// Seals a whole content: `GOE1` and every piece.
    pub fn seal_all(&self, plain: &[u8]) -> Result<Vec<u8>, OutputError> {
        let pieces = pieces_of(plain.len() as u64);
        let mut out = Vec::with_capacity(sealed_len(plain.len() as u64) as usize);
        out.extend_from_slice(MAGIC);
        for i in 0..pieces {
            let start = (i * PIECE) as usize;
            let end = (start + PIECE as usize).min(plain.len());
            out.extend_from_slice(&self.seal_piece(i, i + 1 == pieces, &plain[start..end])?);
        }
        Ok(out)
    }

    /// Opens a whole sealed content.
    pub fn open_all(&self, stored: &[u8]) -> Result<Vec<u8>, OutputError> {
        let plain_len = plain_len(stored.len() as u64).ok_or_else(|| sealed("not a sealed output"))?;
        if &stored[..4] != MAGIC {
            return Err(sealed("not a sealed output"));
        }
        let pieces = pieces_of(plain_len);
        let mut out = Vec::with_capacity(plain_len as usize);
        for i in 0..pieces {
            let start = (4 + i * SEALED_PIECE) as usize;
            let end = (start + SEALED_PIECE as usize).min(stored.len());
            out.extend_from_slice(&self.open_piece(i, i + 1 == pieces, &stored[start..end])?);
        }
        Ok(out)
    }
}

/// Pieces a plaintext of `len` bytes is sealed in (at least one: an empty content is one empty
/// last piece).
pub fn pieces_of(len: u64) -> u64 {
    len.div_ceil(PIECE).max(1)
}

/// Stored bytes of a plaintext of `len` bytes.
pub fn sealed_len(len: u64) -> u64 {
    4 + len + pieces_of(len) * 28
}

/// The plaintext's length from the stored size; `None` when no plaintext seals to that size.
pub fn plain_len(stored: u64) -> Option<u64> {
    let body = stored.checked_sub(4)?;
    let full = body / SEALED_PIECE;
    let rem = body % SEALED_PIECE;
    let len = match (full, rem) {
        (0, r) if r >= 28 => r - 28,
        (f, 0) if f > 0 => f * PIECE,
        (f, r) if r >= 28 => f * PIECE + (r - 28),
        _ => return None,
    };
    // An empty remainder piece after full ones would have sealed as its own piece of 28 bytes.
    (sealed_len(len) == stored).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_queue::seal::Keyring;

    fn ring(id: &str, byte: u8) -> Keyring {
        Keyring::parse(&format!("{id}={}", B64.encode([byte; 32]))).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn sizes_round_trip_and_pieces_open_only_in_place() {
        for len in [0, 1, PIECE - 1, PIECE, PIECE + 1, 3 * PIECE, 3 * PIECE + 7] {
            assert_eq!(plain_len(sealed_len(len)), Some(len), "{len}");
        }
        assert_eq!(plain_len(3), None);
        let r = ring("k1", 1);
        let (key, record) = new_key(&r, "jobs/t/u/j/out.png").unwrap_or_else(|e| panic!("{e}"));
        let plain: Vec<u8> = (0..(2 * PIECE + 5)).map(|i| (i % 251) as u8).collect();
        let stored = key.seal_all(&plain).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !stored
                .windows(64)
                .any(|w| w == &plain[PIECE as usize..PIECE as usize + 64])
        );
        assert_eq!(key.open_all(&stored).unwrap_or_default(), plain);
        // Another object's key does not open it; nor does the record bound to another key.
        let (other, _) = new_key(&r, "jobs/t2/u/j/out.png").unwrap_or_else(|e| panic!("{e}"));
        assert!(other.open_all(&stored).is_err());
        assert!(open_key(&r, "jobs/t2/u/j/out.png", &record).is_err());
        // Cut at a piece boundary: the new last piece was not sealed as the last.
        assert!(key.open_all(&stored[..(4 + 2 * SEALED_PIECE) as usize]).is_err());
        // Re-wrapped by a new current key: the same data key.
        let rotated = Keyring::parse(&format!("k2={}, k1={}", B64.encode([2u8; 32]), B64.encode([1u8; 32])))
            .unwrap_or_else(|e| panic!("{e}"));
        let again = rewrap(&rotated, "jobs/t/u/j/out.png", &record)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("a new key re-wraps"));
        assert_eq!(again.kid, "k2");
        let key2 = open_key(&ring("k2", 2), "jobs/t/u/j/out.png", &again).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(key2.open_all(&stored).unwrap_or_default(), plain);
        assert!(
            rewrap(&rotated, "jobs/t/u/j/out.png", &again)
                .unwrap_or_else(|e| panic!("{e}"))
                .is_none()
        );
    }
}
