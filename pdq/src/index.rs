//! Multi-index hashing: exact Hamming range search over many PDQ hashes.
//!
//! The 256 bits are split into `m` chunks. Two hashes within distance `r` differ in at most
//! `⌊r / m⌋` bits of some chunk (pigeonhole: were every chunk `⌊r / m⌋ + 1` bits apart, the
//! distance would exceed `r`). So the search looks every chunk up at the query's value and at
//! every value within `⌊r / m⌋` bits of it, verifies each candidate's full distance, and finds
//! every hash within `r` — the same answer as a linear scan, which the tests check.
//!
//! Two layouts, by list size. Up to [`WIDE_FROM`] hashes: 16 chunks of 16 bits, so radius 31
//! probes each chunk exactly and at its 16 one-bit neighbours (272 lookups, small tables).
//! Beyond it: 11 chunks of 23 or 24 bits, so radius 31 probes each chunk within two bits
//! (about 3,300 lookups), but each bucket holds about one hash instead of N / 65,536 — at 10
//! million hashes some 3,000 candidates to verify instead of 41,000, which is what keeps a
//! query under a millisecond when every candidate is a cache miss.
//!
//! Layout: the hashes in one array, and per chunk a counting-sorted posting list of indexes
//! with `2^width + 1` offsets (CSR). Memory at 10 million: 320 MB of hashes, 440 MB of postings,
//! 448 MB of offsets.

use crate::hash::Hash256;

/// From this many hashes on, the index uses the wide layout.
pub const WIDE_FROM: usize = 4 << 20;
/// Bit flips probed per chunk, at most.
const MAX_FLIPS: u32 = 2;

/// A match: the hash's index in the indexed list and its distance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hit {
    /// Index into the hashes given to [`MultiIndex::build`].
    pub index: u32,
    /// Hamming distance.
    pub distance: u32,
}

/// Why a search was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexError {
    /// A radius this index cannot answer exactly.
    #[error("radius {radius} exceeds {max}, the largest this index answers exactly")]
    Radius {
        /// Asked for.
        radius: u32,
        /// This index's limit.
        max: u32,
    },
    /// More hashes than 32-bit indexes address.
    #[error("{0} hashes exceed the index's 4,294,967,295")]
    TooMany(usize),
}

/// Which chunks: `(first bit, width)`, bit 0 being the first of the printed hash.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Layout(Vec<(u32, u32)>);

impl Layout {
    /// `m` chunks as equal as can be (the first `256 % m` one bit wider).
    fn split(m: u32) -> Self {
        let (base, extra) = (256 / m, 256 % m);
        let mut at = 0;
        let chunks = (0..m)
            .map(|i| {
                let w = base + u32::from(i < extra);
                let c = (at, w);
                at += w;
                c
            })
            .collect();
        Layout(chunks)
    }
}

/// An immutable multi-index over a list of hashes.
#[derive(Clone)]
pub struct MultiIndex {
    hashes: Vec<Hash256>,
    layout: Layout,
    /// Per chunk: `offsets[v]..offsets[v + 1]` of `postings` hold the indexes whose chunk is `v`.
    offsets: Vec<Vec<u32>>,
    postings: Vec<Vec<u32>>,
}

impl std::fmt::Debug for MultiIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiIndex")
            .field("hashes", &self.hashes.len())
            .field("chunks", &self.layout.0.len())
            .finish()
    }
}

/// Bits `[at, at + width)` of the printed hash, as a number (`width` ≤ 32).
#[inline]
fn bits(h: &Hash256, at: u32, width: u32) -> usize {
    let lane = (at / 64) as usize;
    let hi = u128::from(h.lanes[lane]) << 64;
    let lo = h.lanes.get(lane + 1).map_or(0, |&l| u128::from(l));
    let window = hi | lo;
    let shift = 128 - (at % 64) - width;
    ((window >> shift) as usize) & ((1usize << width) - 1)
}

impl MultiIndex {
    /// Indexes `hashes` (duplicates are kept: each is its own entry), choosing the layout by
    /// size.
    pub fn build(hashes: Vec<Hash256>) -> Result<Self, IndexError> {
        let m = if hashes.len() >= WIDE_FROM { 11 } else { 16 };
        Self::build_with(hashes, m)
    }

    /// Indexes `hashes` in `chunks` chunks (11 to 16).
    pub fn build_with(hashes: Vec<Hash256>, chunks: u32) -> Result<Self, IndexError> {
        let n = u32::try_from(hashes.len()).map_err(|_| IndexError::TooMany(hashes.len()))?;
        let layout = Layout::split(chunks.clamp(11, 16));
        let mut offsets = Vec::with_capacity(layout.0.len());
        let mut postings = Vec::with_capacity(layout.0.len());
        for &(at, width) in &layout.0 {
            let buckets = 1usize << width;
            let mut count = vec![0u32; buckets + 1];
            for h in &hashes {
                count[bits(h, at, width) + 1] += 1;
            }
            for v in 0..buckets {
                count[v + 1] += count[v];
            }
            let mut next = count.clone();
            let mut post = vec![0u32; n as usize];
            for (i, h) in hashes.iter().enumerate() {
                let v = bits(h, at, width);
                post[next[v] as usize] = i as u32;
                next[v] += 1;
            }
            offsets.push(count);
            postings.push(post);
        }
        Ok(Self {
            hashes,
            layout,
            offsets,
            postings,
        })
    }

    /// Hashes indexed.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The hash at `index`.
    pub fn get(&self, index: u32) -> Option<&Hash256> {
        self.hashes.get(index as usize)
    }

    /// The largest radius this index answers exactly.
    pub fn max_radius(&self) -> u32 {
        (MAX_FLIPS + 1) * self.layout.0.len() as u32 - 1
    }

    /// Every hash within `radius` of `query`, by index (each once), nearest first.
    pub fn search(&self, query: &Hash256, radius: u32) -> Result<Vec<Hit>, IndexError> {
        let mut hits = Vec::new();
        self.search_into(query, radius, &mut hits)?;
        finish(&mut hits);
        Ok(hits)
    }

    /// Every hash within `radius` of any of `queries` (e.g. the 8 dihedral variants of one
    /// image): per indexed hash, its smallest distance and which query found it.
    pub fn search_any(&self, queries: &[Hash256], radius: u32) -> Result<Vec<(Hit, usize)>, IndexError> {
        let mut best: Vec<(Hit, usize)> = Vec::new();
        let mut hits = Vec::new();
        for (q, query) in queries.iter().enumerate() {
            hits.clear();
            self.search_into(query, radius, &mut hits)?;
            best.extend(hits.iter().map(|h| (*h, q)));
        }
        best.sort_by_key(|(h, q)| (h.index, h.distance, *q));
        best.dedup_by_key(|(h, _)| h.index);
        best.sort_by_key(|(h, q)| (h.distance, h.index, *q));
        Ok(best)
    }

    /// Appends hits (possibly repeated) to `hits`.
    ///
    /// In three passes — bucket bounds, then candidate indexes, then distances — rather than
    /// one probe at a time: each pass is a run of independent loads the CPU overlaps, where
    /// probing one bucket after another waits on every cache miss in turn (about 3× slower
    /// at 10 million hashes).
    fn search_into(&self, query: &Hash256, radius: u32, hits: &mut Vec<Hit>) -> Result<(), IndexError> {
        if radius > self.max_radius() {
            return Err(IndexError::Radius {
                radius,
                max: self.max_radius(),
            });
        }
        let flips = radius / self.layout.0.len() as u32;
        let mut ranges: Vec<(u32, u32, u32)> = Vec::new();
        for (c, &(at, width)) in self.layout.0.iter().enumerate() {
            let offsets = &self.offsets[c];
            let v = bits(query, at, width);
            let mut push = |v: usize| ranges.push((c as u32, offsets[v], offsets[v + 1]));
            push(v);
            if flips >= 1 {
                for b in 0..width {
                    let v1 = v ^ (1 << b);
                    push(v1);
                    if flips >= 2 {
                        for b2 in (b + 1)..width {
                            push(v1 ^ (1 << b2));
                        }
                    }
                }
            }
        }
        let mut candidates: Vec<u32> = Vec::new();
        for &(c, start, end) in &ranges {
            if start < end {
                candidates.extend_from_slice(&self.postings[c as usize][start as usize..end as usize]);
            }
        }
        for i in candidates {
            let d = self.hashes[i as usize].distance(query);
            if d <= radius {
                hits.push(Hit { index: i, distance: d });
            }
        }
        Ok(())
    }
}

fn finish(hits: &mut Vec<Hit>) {
    hits.sort_unstable_by_key(|h| h.index);
    hits.dedup_by_key(|h| h.index);
    hits.sort_unstable_by_key(|h| (h.distance, h.index));
}

/// The linear scan the index must agree with.
pub fn brute_force(hashes: &[Hash256], query: &Hash256, radius: u32) -> Vec<Hit> {
    let mut hits: Vec<Hit> = hashes
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let d = h.distance(query);
            (d <= radius).then_some(Hit {
                index: i as u32,
                distance: d,
            })
        })
        .collect();
    finish(&mut hits);
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random hash (splitmix64).
    fn random(seed: &mut u64) -> Hash256 {
        let mut next = || {
            *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = *seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Hash256 {
            lanes: [next(), next(), next(), next()],
        }
    }

    fn flip(h: &Hash256, bits: &[usize]) -> Hash256 {
        let mut out = *h;
        for &b in bits {
            out.lanes[b / 64] ^= 1 << (b % 64);
        }
        out
    }

    #[test]
    fn agrees_with_a_linear_scan_at_every_radius_up_to_the_limit() {
        let mut seed = 7;
        let mut hashes: Vec<Hash256> = (0..20_000).map(|_| random(&mut seed)).collect();
        // Plant near neighbours of a few bases at every distance up to 47, spread worst-case
        // (bits spread evenly over the chunks, so no chunk is exact).
        let bases: Vec<Hash256> = (0..8).map(|_| random(&mut seed)).collect();
        for b in &bases {
            for d in 0..=47usize {
                let bits: Vec<usize> = (0..d).map(|k| (k % 16) * 16 + k / 16).collect();
                hashes.push(flip(b, &bits));
            }
        }
        let index = MultiIndex::build(hashes.clone()).unwrap();
        for q in &bases {
            for radius in [0, 15, 16, 31, 32, 47] {
                let got = index.search(q, radius).unwrap();
                assert_eq!(got, brute_force(&hashes, q, radius), "radius {radius}");
                assert!(got.len() as u32 > radius, "the planted neighbours are found");
            }
        }
        assert_eq!(
            index.search(&bases[0], 48),
            Err(IndexError::Radius { radius: 48, max: 47 })
        );
        // The wide layout (11 chunks of 23-24 bits, for large lists) answers the same, up to 32.
        let wide = MultiIndex::build_with(hashes.clone(), 11).unwrap();
        assert_eq!(wide.max_radius(), 32);
        for q in &bases {
            for radius in [0, 10, 21, 22, 31, 32] {
                assert_eq!(
                    wide.search(q, radius).unwrap(),
                    brute_force(&hashes, q, radius),
                    "wide, radius {radius}"
                );
            }
        }
    }

    #[test]
    fn chunks_cover_every_bit_once() {
        for m in 11..=16 {
            let l = Layout::split(m);
            assert_eq!(l.0.iter().map(|c| c.1).sum::<u32>(), 256);
            assert_eq!(l.0.last().map(|c| c.0 + c.1), Some(256));
        }
        let mut h = Hash256::ZERO;
        h.lanes = [0, 0xFF, u64::MAX << 40, 0];
        // Bits 120..128 are the low byte of lane 1; bits 128..152 the top 24 of lane 2.
        assert_eq!(bits(&h, 120, 8), 0xFF);
        assert_eq!(bits(&h, 124, 8), 0xFF);
        assert_eq!(bits(&h, 128, 24), 0xFF_FFFF);
        assert_eq!(bits(&h, 232, 24), 0);
    }

    #[test]
    fn any_of_several_queries_keeps_the_nearest() {
        let mut seed = 11;
        let a = random(&mut seed);
        let b = random(&mut seed);
        let index = MultiIndex::build(vec![flip(&a, &[1, 2, 3]), flip(&b, &[9])]).unwrap();
        let got = index.search_any(&[a, b], 31).unwrap();
        assert_eq!(
            got,
            vec![(Hit { index: 1, distance: 1 }, 1), (Hit { index: 0, distance: 3 }, 0)]
        );
    }
}
