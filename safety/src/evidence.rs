//! Evidence preservation: content taken down for a category that preserves it (CSAM, by law,
//! for a year) is copied, sealed, into the quarantine before it leaves the user-facing store,
//! and kept until its expiry; then the retention sweep deletes it. Nothing else reads it: the
//! only way back is [`Vault::open_file`], which the scheduler serves on an audited operator
//! route.
//!
//! **Sealing.** Each file is sealed with the evidence key ring (`GANTRY_EVIDENCE_KEYS`, a ring
//! of its own, never the job data keys) in pieces of 1 MiB: AES-256-GCM-SIV, a random nonce per
//! piece, each bound to the case, the file's index, the piece's index and whether it is the
//! last, so pieces cannot be reordered, moved between files or cases, or cut off unseen. The
//! object is `GEV1`, the key id (a byte of length, then the id), then per piece: a byte (1 on the
//! last), the 12-byte nonce, the ciphertext's length (u32, big-endian) and the ciphertext.
//!
//! Keys: `gantry:{safety}:evidence:{id}` (the record, JSON: what was kept, its digests, where,
//! under which key, until when) and `gantry:{safety}:evidence:expiry` (ids by expiry, ms).

use std::io::{Read, Write};
use std::path::Path;

use gantry_queue::RedisConn;
use gantry_queue::seal::Keyring;
use gantry_store::{OutputStore, Quarantine};
use redis::AsyncCommands;

use crate::error::SafetyError;

const MAGIC: &[u8; 4] = b"GEV1";
const PIECE: usize = 1 << 20;
const EXPIRY: &str = "gantry:{safety}:evidence:expiry";
/// The largest file preserved (as large as any output the scan reads).
pub const MAX_FILE_BYTES: u64 = 4 << 30;

fn record_key(id: &str) -> String {
    format!("gantry:{{safety}}:evidence:{id}")
}

/// One preserved file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct EvidenceFile {
    /// Its name where it was found (`output-0.png`, or the job's input).
    pub name: String,
    /// The object key it was found at.
    pub source: String,
    /// Its object in the quarantine.
    pub object: String,
    /// Bytes, as found.
    pub size: u64,
    /// SHA-256 of the bytes as found.
    pub sha256: String,
    /// MD5 of the bytes as found (what a report's file hash names).
    pub md5: String,
}

/// What a case preserved.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct EvidenceRecord {
    /// The case's id (the job's id).
    pub id: String,
    /// The violation category.
    pub category: String,
    /// Tenant.
    pub tenant: String,
    /// The user's pseudonymous key.
    pub user_key: String,
    /// The job whose content it is.
    pub job_id: String,
    /// The files.
    pub files: Vec<EvidenceFile>,
    /// The evidence key that sealed them.
    pub key_id: String,
    /// When, ms since the epoch.
    pub preserved_at_ms: u64,
    /// When the retention sweep deletes it.
    pub expires_at_ms: u64,
}

/// Who and what a preservation is for.
#[derive(Clone, Debug)]
pub struct Case<'a> {
    /// The case id (the job's id).
    pub id: &'a str,
    /// The category.
    pub category: &'a str,
    /// Tenant.
    pub tenant: &'a str,
    /// The user's pseudonymous key.
    pub user_key: &'a str,
    /// How many days to keep it.
    pub days: u32,
}

/// The quarantine and its keys.
#[derive(Clone)]
pub struct Vault {
    conn: RedisConn,
    quarantine: Quarantine,
    keys: Option<Keyring>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("quarantine", &self.quarantine)
            .field("keys", &self.keys)
            .finish()
    }
}

fn aad(case: &str, file: usize, piece: u64, last: bool) -> Vec<u8> {
    format!("gantry-evidence\0{case}\0{file}\0{piece}\0{}", u8::from(last)).into_bytes()
}

fn io(e: std::io::Error) -> SafetyError {
    SafetyError::Evidence(format!("scratch space: {e}"))
}

impl Vault {
    /// A vault in `quarantine`, sealing with `keys` (without keys nothing can be preserved).
    pub fn new(conn: RedisConn, quarantine: Quarantine, keys: Option<Keyring>) -> Self {
        Self { conn, quarantine, keys }
    }

    /// The fleet's vault: the quarantine at `quarantine_url` (a store of its own), else the
    /// prefix `quarantine/` of `outputs`; the keys from `GANTRY_EVIDENCE_KEYS` (or the file
    /// `GANTRY_EVIDENCE_KEYS_FILE`). Without keys it opens, and preserves nothing.
    pub fn open(conn: RedisConn, outputs: &OutputStore, quarantine_url: Option<&str>) -> Result<Self, SafetyError> {
        let quarantine = match quarantine_url {
            Some(url) => Quarantine::open(url)?,
            None => outputs.quarantine_within(),
        };
        let keys = Keyring::from_env_var("GANTRY_EVIDENCE_KEYS").map_err(|e| SafetyError::Evidence(e.to_string()))?;
        if keys.is_none() {
            tracing::warn!("no evidence keys (GANTRY_EVIDENCE_KEYS): content taken down cannot be preserved");
        }
        Ok(Self::new(conn, quarantine, keys))
    }

    /// Whether it has keys to seal with.
    pub fn can_preserve(&self) -> bool {
        self.keys.is_some()
    }

    /// Copies `objects` (name, object key) of `from` into the quarantine, sealed, and records
    /// them for `case`. Idempotent: a case already preserved returns its record.
    pub async fn preserve(
        &self,
        case: &Case<'_>,
        from: &OutputStore,
        objects: &[(String, String)],
    ) -> Result<EvidenceRecord, SafetyError> {
        if let Some(r) = self.get(case.id).await? {
            return Ok(r);
        }
        let keys = self.keys.clone().ok_or_else(|| {
            SafetyError::Evidence("no evidence keys (GANTRY_EVIDENCE_KEYS): nothing can be preserved".into())
        })?;
        crate::hashlists::check_name(case.id).map_err(|_| SafetyError::Evidence("bad case id".into()))?;
        let dir = tempfile::tempdir().map_err(io)?;
        let mut files = Vec::with_capacity(objects.len());
        for (i, (name, source)) in objects.iter().enumerate() {
            let plain = dir.path().join(format!("plain-{i}"));
            let sealed = dir.path().join(format!("sealed-{i}"));
            let size = from.download(source, &plain, MAX_FILE_BYTES).await?;
            let (keys, case_id, p, s) = (keys.clone(), case.id.to_owned(), plain.clone(), sealed.clone());
            let (sha256, md5) = tokio::task::spawn_blocking(move || seal_file(&keys, &case_id, i, &p, &s))
                .await
                .map_err(|e| SafetyError::Evidence(format!("sealing: {e}")))??;
            let _ = std::fs::remove_file(&plain);
            let object = format!("evidence/{}/{i}.sealed", case.id);
            self.quarantine.put_file(&object, &sealed).await?;
            let _ = std::fs::remove_file(&sealed);
            files.push(EvidenceFile {
                name: name.clone(),
                source: source.clone(),
                object,
                size,
                sha256,
                md5,
            });
        }
        let now = crate::trust::now_ms();
        let record = EvidenceRecord {
            id: case.id.to_owned(),
            category: case.category.to_owned(),
            tenant: case.tenant.to_owned(),
            user_key: case.user_key.to_owned(),
            job_id: case.id.to_owned(),
            files,
            key_id: keys.current().to_owned(),
            preserved_at_ms: now,
            expires_at_ms: now + u64::from(case.days) * 86_400_000,
        };
        let json = serde_json::to_string(&record).map_err(|source| SafetyError::Json {
            what: "evidence record",
            source,
        })?;
        let mut c = self.conn.clone();
        let _: () = redis::pipe()
            .atomic()
            .set(record_key(case.id), json)
            .zadd(EXPIRY, case.id, record.expires_at_ms)
            .query_async(&mut c)
            .await?;
        tracing::info!(
            case = case.id,
            category = case.category,
            files = record.files.len(),
            "evidence preserved, sealed"
        );
        Ok(record)
    }

    /// A case's record.
    pub async fn get(&self, id: &str) -> Result<Option<EvidenceRecord>, SafetyError> {
        let mut c = self.conn.clone();
        let raw: Option<String> = c.get(record_key(id)).await?;
        raw.map(|j| {
            serde_json::from_str(&j).map_err(|source| SafetyError::Json {
                what: "evidence record",
                source,
            })
        })
        .transpose()
    }

    /// Opens file `index` of case `id` into the local file `to`, checking it against the
    /// digest recorded when it was preserved.
    pub async fn open_file(&self, id: &str, index: usize, to: &Path) -> Result<EvidenceFile, SafetyError> {
        let record = self.get(id).await?.ok_or_else(|| SafetyError::NoRecord {
            what: "evidence",
            id: id.to_owned(),
        })?;
        let file = record.files.get(index).cloned().ok_or_else(|| SafetyError::NoRecord {
            what: "evidence file",
            id: format!("{id}/{index}"),
        })?;
        let keys = self
            .keys
            .clone()
            .ok_or_else(|| SafetyError::Evidence("no evidence keys (GANTRY_EVIDENCE_KEYS) to open it".into()))?;
        let sealed = to.with_extension("sealed");
        self.quarantine
            .download(&file.object, &sealed, MAX_FILE_BYTES + MAX_FILE_BYTES / 1024 + 64)
            .await?;
        let (case_id, s, t) = (id.to_owned(), sealed.clone(), to.to_owned());
        let sha256 = tokio::task::spawn_blocking(move || open_file(&keys, &case_id, index, &s, &t))
            .await
            .map_err(|e| SafetyError::Evidence(format!("opening: {e}")))??;
        let _ = std::fs::remove_file(&sealed);
        if sha256 != file.sha256 {
            return Err(SafetyError::Evidence(format!(
                "{id}/{index}: the opened bytes do not match their digest"
            )));
        }
        Ok(file)
    }

    /// Cases whose expiry is at or before `now_ms`, oldest first, at most `limit`.
    pub async fn expired(&self, now_ms: u64, limit: usize) -> Result<Vec<String>, SafetyError> {
        crate::due_by_score(&self.conn, EXPIRY, now_ms, limit).await
    }

    /// Deletes case `id`'s objects and record; what it held, if it existed.
    pub async fn destroy(&self, id: &str) -> Result<Option<EvidenceRecord>, SafetyError> {
        let record = self.get(id).await?;
        if let Some(r) = &record {
            for f in &r.files {
                self.quarantine.delete(&f.object).await?;
            }
        }
        let mut c = self.conn.clone();
        let _: () = redis::pipe()
            .atomic()
            .del(record_key(id))
            .zrem(EXPIRY, id)
            .query_async(&mut c)
            .await?;
        Ok(record)
    }

    /// The quarantine (tests read its raw objects to show they are sealed).
    pub fn quarantine(&self) -> &Quarantine {
        &self.quarantine
    }
}

/// Seals `plain` into `sealed`; the plaintext's SHA-256 and MD5.
fn seal_file(
    keys: &Keyring,
    case: &str,
    index: usize,
    plain: &Path,
    sealed: &Path,
) -> Result<(String, String), SafetyError> {
    use md5::Digest as _;
    let mut input = std::io::BufReader::new(std::fs::File::open(plain).map_err(io)?);
    let mut out = std::io::BufWriter::new(std::fs::File::create(sealed).map_err(io)?);
    let kid = keys.current().as_bytes();
    out.write_all(MAGIC).map_err(io)?;
    out.write_all(&[kid.len() as u8]).map_err(io)?;
    out.write_all(kid).map_err(io)?;
    let (mut sha, mut md5) = (<sha2::Sha256 as sha2::Digest>::new(), md5::Md5::new());
    let mut cur = read_piece(&mut input)?;
    let mut n = 0u64;
    loop {
        let next = if cur.len() == PIECE {
            read_piece(&mut input)?
        } else {
            Vec::new()
        };
        let last = next.is_empty();
        sha2::Digest::update(&mut sha, &cur);
        md5.update(&cur);
        let (_, nonce, ct) = keys
            .seal_bytes(&cur, &aad(case, index, n, last))
            .map_err(|e| SafetyError::Evidence(e.to_string()))?;
        out.write_all(&[u8::from(last)]).map_err(io)?;
        out.write_all(&nonce).map_err(io)?;
        out.write_all(&(ct.len() as u32).to_be_bytes()).map_err(io)?;
        out.write_all(&ct).map_err(io)?;
        if last {
            break;
        }
        cur = next;
        n += 1;
    }
    out.flush().map_err(io)?;
    Ok((
        gantry_store::hex(&sha2::Digest::finalize(sha)),
        gantry_store::hex(&md5.finalize()),
    ))
}

fn read_piece(r: &mut impl Read) -> Result<Vec<u8>, SafetyError> {
    let mut buf = Vec::with_capacity(PIECE);
    r.by_ref().take(PIECE as u64).read_to_end(&mut buf).map_err(io)?;
    Ok(buf)
}

/// Opens `sealed` into `to`; the plaintext's SHA-256. Every piece must open, in order, and the
/// last must say it is the last.
fn open_file(keys: &Keyring, case: &str, index: usize, sealed: &Path, to: &Path) -> Result<String, SafetyError> {
    let corrupt = || {
        SafetyError::Evidence(format!(
            "{case}/{index}: the sealed object is damaged or not this case's"
        ))
    };
    let mut input = std::io::BufReader::new(std::fs::File::open(sealed).map_err(io)?);
    let mut out = std::io::BufWriter::new(std::fs::File::create(to).map_err(io)?);
    let mut magic = [0u8; 5];
    input.read_exact(&mut magic).map_err(|_| corrupt())?;
    if &magic[..4] != MAGIC {
        return Err(corrupt());
    }
    let mut kid = vec![0u8; usize::from(magic[4])];
    input.read_exact(&mut kid).map_err(|_| corrupt())?;
    let kid = String::from_utf8(kid).map_err(|_| corrupt())?;
    let mut sha = <sha2::Sha256 as sha2::Digest>::new();
    let mut n = 0u64;
    loop {
        let mut head = [0u8; 17];
        input.read_exact(&mut head).map_err(|_| corrupt())?;
        let last = head[0] == 1;
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&head[1..13]);
        let len = u32::from_be_bytes([head[13], head[14], head[15], head[16]]) as usize;
        if len > PIECE + 16 {
            return Err(corrupt());
        }
        let mut ct = vec![0u8; len];
        input.read_exact(&mut ct).map_err(|_| corrupt())?;
        let plain = keys
            .open_bytes(&kid, &nonce, &ct, &aad(case, index, n, last))
            .map_err(|_| corrupt())?;
        sha2::Digest::update(&mut sha, &plain);
        out.write_all(&plain).map_err(io)?;
        if last {
            break;
        }
        n += 1;
    }
    // Nothing may follow the last piece.
    if input.read(&mut [0u8; 1]).map_err(io)? != 0 {
        return Err(corrupt());
    }
    out.flush().map_err(io)?;
    Ok(gantry_store::hex(&sha2::Digest::finalize(sha)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn ring(id: &str, byte: u8) -> Keyring {
        let key = base64::engine::general_purpose::STANDARD.encode([byte; 32]);
        Keyring::parse(&format!("{id}={key}")).expect("test key")
    }

    #[test]
    fn sealed_evidence_opens_only_whole_in_order_and_for_its_case() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = dir.path().join("plain");
        // Three pieces and a bit: the boundaries are exercised.
        let data: Vec<u8> = (0..(3 * PIECE + 17)).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&plain, &data).expect("write");
        let keys = ring("e1", 9);
        let sealed = dir.path().join("sealed");
        let (sha, _md5) = seal_file(&keys, "case-1", 0, &plain, &sealed).expect("seal");
        let raw = std::fs::read(&sealed).expect("read");
        assert!(
            !raw.windows(64).any(|w| w == &data[PIECE..PIECE + 64]),
            "plaintext in the sealed object"
        );
        let out = dir.path().join("out");
        assert_eq!(open_file(&keys, "case-1", 0, &sealed, &out).expect("open"), sha);
        assert_eq!(std::fs::read(&out).expect("read"), data);
        // Another case, another file index, another key: nothing opens.
        assert!(open_file(&keys, "case-2", 0, &sealed, &out).is_err());
        assert!(open_file(&keys, "case-1", 1, &sealed, &out).is_err());
        assert!(open_file(&ring("e1", 8), "case-1", 0, &sealed, &out).is_err());
        // Cut after the first piece: the first piece does not say it is the last.
        let first = 4 + 1 + 2 + 17 + PIECE + 16;
        std::fs::write(&sealed, &raw[..first]).expect("write");
        assert!(open_file(&keys, "case-1", 0, &sealed, &out).is_err());
        // Anything after the last piece is refused.
        let mut longer = raw.clone();
        longer.push(0);
        std::fs::write(&sealed, &longer).expect("write");
        assert!(open_file(&keys, "case-1", 0, &sealed, &out).is_err());
        // An empty file seals as one empty last piece.
        std::fs::write(&plain, b"").expect("write");
        seal_file(&keys, "c", 0, &plain, &sealed).expect("seal");
        open_file(&keys, "c", 0, &sealed, &out).expect("open");
        assert!(std::fs::read(&out).expect("read").is_empty());
    }
}
