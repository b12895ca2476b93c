//! Named, versioned hash lists in Redis.
//!
//! A list holds PDQ hashes (matched by Hamming distance) and MD5 / SHA-256 digests (matched
//! exactly). Keys, all under the list's hash tag so a cluster keeps them in one slot:
//!
//! - `gantry:{hashlist:NAME}:meta` — hash: `version`, `category`, counts, `updated_at_ms`,
//!   and `next_version` (the last version reserved);
//! - `gantry:{hashlist:NAME}:v{V}:pdq:{i}` — PDQ hashes of version V, 32 bytes each (the
//!   reference's printed order), at most [`CHUNK`] per string;
//! - `gantry:{hashlist:NAME}:v{V}:md5`, `…:sha256` — sets of lowercase hex digests;
//! - `gantry:{hashlists}:names` — the set of list names.
//!
//! Publishing writes version V+1 beside V, then switches `version` in one `HSET`; readers
//! always see a whole version. V's keys expire [`GRACE_SECS`] later, so a reader that began
//! before the switch finishes (and one that loses the race re-reads the current version).

use gantry_codecs::pdq::Hash256;
use gantry_queue::RedisConn;
use redis::AsyncCommands;

use crate::error::SafetyError;

/// PDQ hashes per Redis string (32 MiB).
pub const CHUNK: usize = 1 << 20;
/// How long a superseded version stays readable.
pub const GRACE_SECS: i64 = 600;

/// A list's content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HashList {
    /// PDQ hashes.
    pub pdq: Vec<Hash256>,
    /// MD5 digests, lowercase hex.
    pub md5: Vec<String>,
    /// SHA-256 digests, lowercase hex.
    pub sha256: Vec<String>,
}

impl HashList {
    /// Parses a list file: one entry per line, `#` comments and blank lines ignored. An entry
    /// is `pdq:HEX64`, `md5:HEX32` or `sha256:HEX64`; a bare 64-hex value is PDQ (the
    /// reference lists' format, also `hash,quality,filename` lines) and a bare 32-hex one MD5.
    /// Any other line fails the whole file with its line number. Whitespace is spaces, tabs
    /// and carriage returns (the grammar the API's document states as a pattern).
    pub fn parse(text: &str) -> Result<Self, SafetyError> {
        let ws: &[char] = &[' ', '\t', '\r'];
        let mut list = HashList::default();
        for (n, raw) in text.split('\n').enumerate() {
            let line = raw.trim_matches(ws);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: String| SafetyError::InvalidEntry { line: n + 1, reason };
            let (kind, value) = match line.split_once(':') {
                Some((k, v)) => (k.trim_matches(ws).to_ascii_lowercase(), v.trim_matches(ws)),
                None => (String::new(), line.split(',').next().unwrap_or(line).trim_matches(ws)),
            };
            let hex = |len: usize| -> Result<String, SafetyError> {
                if value.len() == len && value.chars().all(|c| c.is_ascii_hexdigit()) {
                    Ok(value.to_ascii_lowercase())
                } else {
                    Err(bad(format!(
                        "expected {len} hex characters, got {:?}",
                        value.chars().take(80).collect::<String>()
                    )))
                }
            };
            match (kind.as_str(), value.len()) {
                ("pdq", _) | ("", 64) => list.pdq.push(
                    hex(64)?
                        .parse()
                        .map_err(|e: gantry_codecs::pdq::HashError| bad(e.to_string()))?,
                ),
                ("md5", _) | ("", 32) => list.md5.push(hex(32)?),
                ("sha256", _) => list.sha256.push(hex(64)?),
                _ => {
                    return Err(bad(format!(
                        "not a hash: {:?} (use pdq:, md5: or sha256:)",
                        line.chars().take(80).collect::<String>()
                    )));
                }
            }
        }
        Ok(list)
    }

    /// Entries in all.
    pub fn len(&self) -> usize {
        self.pdq.len() + self.md5.len() + self.sha256.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A list's current version, as stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ListMeta {
    /// Name.
    pub name: String,
    /// Version (1, 2, …).
    pub version: u64,
    /// The violation category its matches are recorded under (`csam`, `ncii`, …).
    pub category: String,
    /// PDQ hashes.
    pub pdq: u64,
    /// MD5 digests.
    pub md5: u64,
    /// SHA-256 digests.
    pub sha256: u64,
    /// When this version was published, ms since the epoch.
    pub updated_at_ms: u64,
    /// PDQ matches this close or closer (and every exact digest) take the category's action
    /// at once.
    pub block_distance: u32,
    /// PDQ matches farther than `block_distance` and this close or closer are withheld for a
    /// person to review; equal to `block_distance` when the list has no review band.
    pub review_distance: u32,
}

/// A list's PDQ distances: at or under `block`, a match is acted on at once; over it and at or
/// under `review`, the content is withheld for review; farther, it is no match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// The block distance.
    pub block: u32,
    /// The review distance (≥ `block`).
    pub review: u32,
}

/// The largest PDQ distance the matcher finds (the reference's 31, which the multi-index
/// guarantees).
pub const MAX_DISTANCE: u32 = 31;

impl Default for Thresholds {
    /// No review band: every match within [`MAX_DISTANCE`] is acted on.
    fn default() -> Self {
        Self {
            block: MAX_DISTANCE,
            review: MAX_DISTANCE,
        }
    }
}

impl Thresholds {
    /// Checked distances: `block` ≤ `review` ≤ [`MAX_DISTANCE`].
    pub fn new(block: u32, review: u32) -> Result<Self, SafetyError> {
        if block > review || review > MAX_DISTANCE {
            return Err(SafetyError::InvalidThresholds(format!(
                "block_distance {block} and review_distance {review}: need block <= review <= {MAX_DISTANCE}"
            )));
        }
        Ok(Self { block, review })
    }
}

/// The lists, in Redis.
#[derive(Clone, Debug)]
pub struct HashListStore {
    conn: RedisConn,
}

const NAMES: &str = "gantry:{hashlists}:names";

fn meta_key(name: &str) -> String {
    format!("gantry:{{hashlist:{name}}}:meta")
}

fn data_key(name: &str, version: u64, part: &str) -> String {
    format!("gantry:{{hashlist:{name}}}:v{version}:{part}")
}

/// Checks a list name.
pub fn check_name(name: &str) -> Result<(), SafetyError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(SafetyError::InvalidName(name.chars().take(80).collect()))
    }
}

/// PDQ strings a version of `pdq` hashes is stored in.
fn chunks_for(pdq: u64) -> u64 {
    pdq.div_ceil(CHUNK as u64)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl HashListStore {
    /// A store on `conn`.
    pub fn new(conn: RedisConn) -> Self {
        Self { conn }
    }

    /// Publishes `content` as the next version of `name` (created if new) under `category`,
    /// with no review band.
    pub async fn publish(&self, name: &str, category: &str, content: &HashList) -> Result<ListMeta, SafetyError> {
        self.publish_with(name, category, Thresholds::default(), content).await
    }

    /// Publishes `content` as the next version of `name` (created if new) under `category`,
    /// matching PDQ hashes by `thresholds`.
    pub async fn publish_with(
        &self,
        name: &str,
        category: &str,
        thresholds: Thresholds,
        content: &HashList,
    ) -> Result<ListMeta, SafetyError> {
        check_name(name)?;
        let thresholds = Thresholds::new(thresholds.block, thresholds.review)?;
        check_name(category)?;
        let mut c = self.conn.clone();
        let meta = meta_key(name);
        let old: Option<(u64, u64)> = {
            let (v, pdq): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
                .arg(&meta)
                .arg("version")
                .arg("pdq")
                .query_async(&mut c)
                .await?;
            v.map(|v| (v, chunks_for(pdq.unwrap_or(0))))
        };
        let version: u64 = c.hincr(&meta, "next_version", 1).await?;
        for (i, part) in content.pdq.chunks(CHUNK).enumerate() {
            let mut bytes = Vec::with_capacity(part.len() * 32);
            for h in part {
                bytes.extend_from_slice(&h.to_bytes());
            }
            let _: () = c.set(data_key(name, version, &format!("pdq:{i}")), bytes).await?;
        }
        for (part, digests) in [("md5", &content.md5), ("sha256", &content.sha256)] {
            for batch in digests.chunks(10_000) {
                let _: () = c.sadd(data_key(name, version, part), batch).await?;
            }
        }
        let updated_at_ms = now_ms();
        let _: () = redis::cmd("HSET")
            .arg(&meta)
            .arg("version")
            .arg(version)
            .arg("category")
            .arg(category)
            .arg("pdq")
            .arg(content.pdq.len())
            .arg("md5")
            .arg(content.md5.len())
            .arg("sha256")
            .arg(content.sha256.len())
            .arg("updated_at_ms")
            .arg(updated_at_ms)
            .arg("block_distance")
            .arg(thresholds.block)
            .arg("review_distance")
            .arg(thresholds.review)
            .query_async(&mut c)
            .await?;
        let _: () = c.sadd(NAMES, name).await?;
        if let Some((v, n)) = old {
            self.expire_version(name, v, n).await?;
        }
        tracing::info!(
            list = name,
            version,
            pdq = content.pdq.len(),
            md5 = content.md5.len(),
            sha256 = content.sha256.len(),
            "hash list published"
        );
        Ok(ListMeta {
            name: name.to_owned(),
            version,
            category: category.to_owned(),
            pdq: content.pdq.len() as u64,
            md5: content.md5.len() as u64,
            sha256: content.sha256.len() as u64,
            updated_at_ms,
            block_distance: thresholds.block,
            review_distance: thresholds.review,
        })
    }

    async fn expire_version(&self, name: &str, version: u64, chunks: u64) -> Result<(), SafetyError> {
        let mut c = self.conn.clone();
        let mut keys: Vec<String> = (0..chunks)
            .map(|i| data_key(name, version, &format!("pdq:{i}")))
            .collect();
        keys.push(data_key(name, version, "md5"));
        keys.push(data_key(name, version, "sha256"));
        for k in keys {
            let _: bool = c.expire(k, GRACE_SECS).await?;
        }
        Ok(())
    }

    /// Every list's current version, by name.
    pub async fn lists(&self) -> Result<Vec<ListMeta>, SafetyError> {
        let mut c = self.conn.clone();
        let mut names: Vec<String> = c.smembers(NAMES).await?;
        names.sort();
        let mut out = Vec::new();
        for n in names {
            if let Some(m) = self.meta(&n).await? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// A list's current version, if it exists.
    pub async fn meta(&self, name: &str) -> Result<Option<ListMeta>, SafetyError> {
        check_name(name)?;
        let mut c = self.conn.clone();
        let m: std::collections::HashMap<String, String> = c.hgetall(meta_key(name)).await?;
        let Some(version) = m.get("version").and_then(|v| v.parse().ok()) else {
            return Ok(None);
        };
        let num = |f: &str| m.get(f).and_then(|v| v.parse().ok()).unwrap_or(0);
        // Lists published before the review band match as they did: everything within 31.
        let distance = |f: &str| {
            m.get(f)
                .and_then(|v| v.parse::<u32>().ok())
                .map_or(MAX_DISTANCE, |d| d.min(MAX_DISTANCE))
        };
        let block_distance = distance("block_distance");
        Ok(Some(ListMeta {
            name: name.to_owned(),
            version,
            category: m.get("category").cloned().unwrap_or_default(),
            pdq: num("pdq"),
            md5: num("md5"),
            sha256: num("sha256"),
            updated_at_ms: num("updated_at_ms"),
            block_distance,
            review_distance: distance("review_distance").max(block_distance),
        }))
    }

    /// Reads the current version of `name` whole. A version superseded (and expired) while
    /// being read is retried from the new current one.
    pub async fn load(&self, name: &str) -> Result<(ListMeta, HashList), SafetyError> {
        for _ in 0..3 {
            let meta = self
                .meta(name)
                .await?
                .ok_or_else(|| SafetyError::NotFound(name.to_owned()))?;
            let mut c = self.conn.clone();
            let chunks = chunks_for(meta.pdq);
            let mut pdq = Vec::with_capacity(meta.pdq as usize);
            let mut gone = false;
            for i in 0..chunks {
                let bytes: Option<Vec<u8>> = c.get(data_key(name, meta.version, &format!("pdq:{i}"))).await?;
                let Some(bytes) = bytes else {
                    gone = true;
                    break;
                };
                if bytes.len() % 32 != 0 {
                    return Err(SafetyError::Corrupt(format!(
                        "{name} v{} chunk {i}: {} bytes",
                        meta.version,
                        bytes.len()
                    )));
                }
                for h in bytes.chunks_exact(32) {
                    let mut b = [0u8; 32];
                    b.copy_from_slice(h);
                    pdq.push(Hash256::from_bytes(&b));
                }
            }
            if gone || pdq.len() as u64 != meta.pdq {
                continue;
            }
            let md5: Vec<String> = c.smembers(data_key(name, meta.version, "md5")).await?;
            let sha256: Vec<String> = c.smembers(data_key(name, meta.version, "sha256")).await?;
            if md5.len() as u64 != meta.md5 || sha256.len() as u64 != meta.sha256 {
                continue;
            }
            return Ok((meta, HashList { pdq, md5, sha256 }));
        }
        Err(SafetyError::Corrupt(format!(
            "{name}: the stored version changed three times while being read"
        )))
    }

    /// Removes a list: it stops matching at once; its data expires after the grace period.
    pub async fn remove(&self, name: &str) -> Result<bool, SafetyError> {
        let Some(meta) = self.meta(name).await? else {
            return Ok(false);
        };
        let mut c = self.conn.clone();
        let _: () = c.srem(NAMES, name).await?;
        let _: () = c.del(meta_key(name)).await?;
        self.expire_version(name, meta.version, chunks_for(meta.pdq)).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_files_parse_with_line_numbers_for_bad_entries() {
        let text = "# known\nf8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22,100,bridge.jpg\n\
                    md5:D41D8CD98F00B204E9800998ECF8427E\n0cc175b9c0f1b6a831c399e269772661\n\
                    sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n";
        let l = HashList::parse(text).unwrap_or_default();
        assert_eq!((l.pdq.len(), l.md5.len(), l.sha256.len()), (1, 2, 1));
        assert_eq!(l.md5[0], "d41d8cd98f00b204e9800998ecf8427e");
        match HashList::parse("# ok\nmd5:xyz\n") {
            Err(SafetyError::InvalidEntry { line, .. }) => assert_eq!(line, 2),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            HashList::parse("hello world"),
            Err(SafetyError::InvalidEntry { line: 1, .. })
        ));
        assert!(check_name("ncmec-2026.11").is_ok());
        assert!(check_name("a b").is_err() && check_name("").is_err());
    }
}
