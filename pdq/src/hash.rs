//! The 256-bit hash, stored in the reference's printed order: 64 hex characters are words
//! `w[15]` … `w[0]` (`%04hx` each), bit `k` lives in `w[k / 16]` at bit `k % 16`. Distance is
//! the popcount of the XOR.

/// Why a hash string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashError {
    /// Not 64 characters.
    #[error("a PDQ hash is 64 hex characters; got {0}")]
    Length(usize),
    /// Not hex.
    #[error("a PDQ hash is hex; found {0:?}")]
    NotHex(char),
}

/// A PDQ hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash256 {
    /// Big-endian 64-bit lanes of the printed form: `lanes[0]` is its first 16 hex characters.
    pub lanes: [u64; 4],
}

/// The dihedral variants' names, in the order [`super::hash_dihedral`] returns them.
pub const DIHEDRAL_NAMES: [&str; 8] = [
    "original",
    "rotate90",
    "rotate180",
    "rotate270",
    "flipx",
    "flipy",
    "flip_plus1",
    "flip_minus1",
];

impl Hash256 {
    /// All zero bits.
    pub const ZERO: Hash256 = Hash256 { lanes: [0; 4] };

    /// Sets bit `k` (0..256) as the reference numbers bits.
    pub fn set_bit(&mut self, k: usize) {
        // w[k/16] is printed at position 15 - k/16; four words per 64-bit lane.
        let word = k / 16;
        let printed = 15 - word;
        let lane = printed / 4;
        let shift = (3 - printed % 4) * 16 + (k % 16);
        self.lanes[lane] |= 1u64 << shift;
    }

    /// Whether bit `k` is set.
    pub fn bit(&self, k: usize) -> bool {
        let printed = 15 - k / 16;
        let shift = (3 - printed % 4) * 16 + (k % 16);
        self.lanes[printed / 4] >> shift & 1 == 1
    }

    /// Hamming distance.
    #[inline]
    pub fn distance(&self, other: &Hash256) -> u32 {
        (self.lanes[0] ^ other.lanes[0]).count_ones()
            + (self.lanes[1] ^ other.lanes[1]).count_ones()
            + (self.lanes[2] ^ other.lanes[2]).count_ones()
            + (self.lanes[3] ^ other.lanes[3]).count_ones()
    }

    /// The 32 bytes of the printed form (as `bytes.fromhex` gives them).
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, lane) in self.lanes.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&lane.to_be_bytes());
        }
        out
    }

    /// From the 32 bytes of the printed form.
    pub fn from_bytes(b: &[u8; 32]) -> Self {
        let mut lanes = [0u64; 4];
        for (i, lane) in lanes.iter_mut().enumerate() {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i * 8..i * 8 + 8]);
            *lane = u64::from_be_bytes(x);
        }
        Self { lanes }
    }

    /// Number of set bits.
    pub fn ones(&self) -> u32 {
        self.lanes.iter().map(|l| l.count_ones()).sum()
    }
}

impl std::str::FromStr for Hash256 {
    type Err = HashError;
    fn from_str(s: &str) -> Result<Self, HashError> {
        let s = s.trim();
        if s.len() != 64 {
            return Err(HashError::Length(s.chars().count()));
        }
        let mut lanes = [0u64; 4];
        for (i, c) in s.chars().enumerate() {
            let v = c.to_digit(16).ok_or(HashError::NotHex(c))?;
            lanes[i / 16] = lanes[i / 16] << 4 | u64::from(v);
        }
        Ok(Self { lanes })
    }
}

impl std::fmt::Display for Hash256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for l in self.lanes {
            write!(f, "{l:016x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Hash256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hash256({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_follow_the_reference_word_order() {
        let mut h = Hash256::ZERO;
        h.set_bit(0);
        // w[0] bit 0 is the last hex character's lowest bit.
        assert_eq!(h.to_string(), format!("{}1", "0".repeat(63)));
        let mut h = Hash256::ZERO;
        h.set_bit(255);
        // w[15] bit 15 is the first hex character's highest bit.
        assert_eq!(h.to_string(), format!("8{}", "0".repeat(63)));
        let mut h = Hash256::ZERO;
        h.set_bit(17);
        assert_eq!(h.to_string(), format!("{}00020000", "0".repeat(56)));
        assert!(h.bit(17) && !h.bit(16));
    }

    #[test]
    fn hex_round_trips_and_bad_strings_are_typed_errors() {
        let s = "f8f8f0cce0f4e84d0e370a22028f67f0b36e2ed596623e1d33e6339c4e9c9b22";
        let h: Hash256 = s.parse().unwrap_or(Hash256::ZERO);
        assert_eq!(h.to_string(), s);
        assert_eq!(Hash256::from_bytes(&h.to_bytes()), h);
        assert_eq!("abc".parse::<Hash256>(), Err(HashError::Length(3)));
        assert_eq!(
            format!("{}g", "0".repeat(63)).parse::<Hash256>(),
            Err(HashError::NotHex('g'))
        );
        let other: Hash256 = format!("{}0", &s[..63]).parse().unwrap_or(Hash256::ZERO);
        assert_eq!(h.distance(&other), 1);
    }
}
