//! Encryption at rest of the sensitive fields of a job — a generate job's prompt, negative
//! prompt and reference images, and any job's idempotency key — before its spec reaches Redis.
//! The fields are taken out of the stored JSON and kept as one envelope,
//! `payload.sealed = "gk2:<key id>:<nonce>:<ciphertext>"` (base64).
//!
//! **`gk2`** (what is written): AES-256-GCM-SIV (RFC 8452), a nonce-misuse-resistant AEAD, so
//! the random 96-bit nonces that a long-lived key accumulates cannot, by colliding, reveal the
//! key stream or allow forgeries as they can with plain GCM (past ~2^32 seals a collision is
//! no longer negligible). The associated data binds the tenant, the pool, the kind and the job
//! id, so an envelope moved to another job, tenant, pool or kind does not open.
//! **`gk1`** (read only): AES-256-GCM bound to the job id, as written before; still opened with
//! the same key ids, and `gantry keys rotate` re-seals such records as `gk2`.
//!
//! Keys come from the environment — `GANTRY_DATA_KEYS="k2=BASE64,k1=BASE64"` — or a file named
//! by `GANTRY_DATA_KEYS_FILE` (one `id=BASE64` per line), never from Redis. The first key seals;
//! every listed key opens, so a new key is rolled out by putting it first and keeping the old
//! one until no record uses it. Without keys, specs are stored as given (development), and a
//! sealed spec cannot be read (`no data keys`).

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, Payload as AeadPayload};
use aes_gcm::{Aes256Gcm, Nonce};
use aes_gcm_siv::Aes256GcmSiv;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

/// The fields sealed in a generate payload.
const SENSITIVE: [&str; 3] = ["prompt", "negative_prompt", "reference_images"];
/// The spec's own fields sealed with them: the platform's idempotency key (which may carry
/// more than an order id) and the platform's user id (records find their user by its
/// pseudonymous key, [`crate::user_key`]; the id itself is the platform's personal data). The
/// user id's place keeps an empty string.
const IDEM: &str = "idempotency_key";
const USER: &str = "user";
/// The envelope written: AES-256-GCM-SIV, bound to tenant, pool, kind and job.
const TAG: &str = "gk2";
/// The envelope of old records: AES-256-GCM, bound to the job id only. Opened, never written.
const TAG_V1: &str = "gk1";

/// Why sealing or opening failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// A key list that does not parse.
    #[error("data keys: {0}")]
    BadKeys(String),
    /// A sealed record and no keys to open it.
    #[error("the job's payload is sealed and this process has no data keys (GANTRY_DATA_KEYS)")]
    NoKeys,
    /// Sealed with a key this process does not have.
    #[error("the job's payload is sealed with key {0:?}, which this process does not have")]
    UnknownKey(String),
    /// The envelope is damaged, or not for this job.
    #[error("the job's sealed payload does not open (damaged, or not this job's)")]
    Corrupt,
}

/// One data key, as both ciphers: GCM-SIV seals and opens `gk2`, GCM opens `gk1`.
#[derive(Clone)]
struct DataKey {
    siv: Aes256GcmSiv,
    gcm: Aes256Gcm,
}

/// The data keys: the first seals, all open.
#[derive(Clone)]
pub struct Keyring {
    current: String,
    keys: BTreeMap<String, DataKey>,
}

/// What an envelope is bound to: the job's tenant, pool and kind, and its id (`gk2`: all four,
/// each length-prefixed so no two different contexts read the same; `gk1`: the id alone). A
/// compact record (protocol v2) keeps tenant, pool and kind beside its spec rather than in it,
/// so the context is built from the record ([`SealContext::new`]); a whole spec names its own
/// ([`SealContext::of_spec`]), and the two agree for the same job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealContext {
    aad: Vec<u8>,
    job_id: String,
}

impl SealContext {
    /// The context of job `job_id` of `tenant` in `pool`, of `kind`.
    pub fn new(tenant: &str, pool: &str, kind: &str, job_id: &str) -> Self {
        let mut aad = b"gantry-seal-v2".to_vec();
        for part in [tenant, pool, kind, job_id] {
            aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        Self {
            aad,
            job_id: job_id.to_owned(),
        }
    }

    /// The context a whole spec (protocol v1: `tenant`, `pool` and `kind` inside it) names.
    pub fn of_spec(spec: &Value, job_id: &str) -> Self {
        let field = |k: &str| spec.get(k).and_then(Value::as_str).unwrap_or_default();
        Self::new(field("tenant"), field("pool"), field("kind"), job_id)
    }
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// Parses `id=BASE64(32 bytes)` entries separated by commas or newlines (`#` comments).
    pub fn parse(text: &str) -> Result<Self, SealError> {
        let mut keys = BTreeMap::new();
        let mut current = None;
        for entry in text.split([',', '\n']).map(str::trim) {
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let (id, b64) = entry
                .split_once('=')
                .ok_or_else(|| SealError::BadKeys("expected id=BASE64".into()))?;
            let id = id.trim();
            let id_ok = !id.is_empty()
                && id.len() <= 32
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !id_ok {
                return Err(SealError::BadKeys(format!("key id {id:?}: 1-32 of A-Z a-z 0-9 - _")));
            }
            let raw = B64
                .decode(b64.trim())
                .map_err(|_| SealError::BadKeys(format!("key {id}: not base64")))?;
            let wrong = || SealError::BadKeys(format!("key {id}: {} bytes, AES-256 needs 32", raw.len()));
            let key = DataKey {
                siv: Aes256GcmSiv::new_from_slice(&raw).map_err(|_| wrong())?,
                gcm: Aes256Gcm::new_from_slice(&raw).map_err(|_| wrong())?,
            };
            if keys.insert(id.to_owned(), key).is_some() {
                return Err(SealError::BadKeys(format!("key {id} listed twice")));
            }
            current.get_or_insert_with(|| id.to_owned());
        }
        let current = current.ok_or_else(|| SealError::BadKeys("no keys".into()))?;
        Ok(Self { current, keys })
    }

    /// The keys the environment names (`GANTRY_DATA_KEYS`, or the file `GANTRY_DATA_KEYS_FILE`);
    /// `None` when neither is set.
    pub fn from_env() -> Result<Option<Self>, SealError> {
        Self::from_env_var("GANTRY_DATA_KEYS")
    }

    /// The keys the variable `var` holds, or the file `<var>_FILE` names; `None` when neither
    /// is set (the evidence keys are `GANTRY_EVIDENCE_KEYS`, a ring of their own).
    pub fn from_env_var(var: &str) -> Result<Option<Self>, SealError> {
        if let Ok(text) = std::env::var(var) {
            return Self::parse(&text).map(Some);
        }
        if let Ok(path) = std::env::var(format!("{var}_FILE")) {
            let text = std::fs::read_to_string(&path).map_err(|e| SealError::BadKeys(format!("{path}: {e}")))?;
            return Self::parse(&text).map(Some);
        }
        Ok(None)
    }

    /// Seals one piece of a stream (evidence, in pieces of a mebibyte) with the current key,
    /// bound to `aad`: the key's id, the random nonce and the ciphertext (16 bytes longer).
    pub fn seal_bytes(&self, plain: &[u8], aad: &[u8]) -> Result<(&str, [u8; 12], Vec<u8>), SealError> {
        let key = self
            .keys
            .get(&self.current)
            .ok_or(SealError::UnknownKey(self.current.clone()))?;
        let nonce: [u8; 12] = rand::random();
        let ct = key
            .siv
            .encrypt(aes_gcm_siv::Nonce::from_slice(&nonce), AeadPayload { msg: plain, aad })
            .map_err(|_| SealError::Corrupt)?;
        Ok((&self.current, nonce, ct))
    }

    /// Opens what [`Keyring::seal_bytes`] sealed with key `key_id` for `aad`.
    pub fn open_bytes(&self, key_id: &str, nonce: &[u8; 12], ct: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let key = self
            .keys
            .get(key_id)
            .ok_or_else(|| SealError::UnknownKey(key_id.to_owned()))?;
        key.siv
            .decrypt(aes_gcm_siv::Nonce::from_slice(nonce), AeadPayload { msg: ct, aad })
            .map_err(|_| SealError::Corrupt)
    }

    /// The id of the sealing key.
    pub fn current(&self) -> &str {
        &self.current
    }

    /// Moves the sensitive fields of `spec` (a stored job spec as JSON) into a sealed envelope
    /// bound to `ctx`. Specs without sensitive fields are left alone.
    pub fn seal(&self, spec: &mut Value, ctx: &SealContext) -> Result<(), SealError> {
        let Some(spec) = spec.as_object_mut() else {
            return Ok(());
        };
        match spec.get("payload") {
            Some(Value::Object(p)) if !p.contains_key("sealed") => {}
            _ => return Ok(()),
        }
        let idem = spec.remove(IDEM);
        let user = match spec.get(USER) {
            Some(Value::String(u)) if !u.is_empty() => spec.insert(USER.to_owned(), Value::String(String::new())),
            _ => None,
        };
        let Some(Value::Object(payload)) = spec.get_mut("payload") else {
            return Ok(());
        };
        let mut secret = serde_json::Map::new();
        for f in SENSITIVE {
            if let Some(v) = payload.remove(f) {
                secret.insert(f.to_owned(), v);
            }
        }
        if let Some(k) = idem {
            secret.insert(IDEM.to_owned(), k);
        }
        if let Some(u) = user {
            secret.insert(USER.to_owned(), u);
        }
        if secret.is_empty() {
            return Ok(());
        }
        // The prompt stays present (empty) so the stored spec keeps its shape.
        if secret.contains_key("prompt") {
            payload.insert("prompt".into(), Value::String(String::new()));
        }
        let plain = Value::Object(secret).to_string();
        let sealed = self.encrypt(TAG, plain.as_bytes(), &ctx.aad)?;
        let Some(Value::Object(payload)) = spec.get_mut("payload") else {
            return Ok(());
        };
        payload.insert("sealed".into(), Value::String(sealed));
        Ok(())
    }

    /// `plain` sealed with the current key, bound to `aad`: `tag:key-id:nonce:ciphertext`.
    fn encrypt(&self, tag: &str, plain: &[u8], aad: &[u8]) -> Result<String, SealError> {
        let (kid, nonce, ct) = self.seal_bytes(plain, aad)?;
        Ok(format!("{tag}:{kid}:{}:{}", B64.encode(nonce), B64.encode(ct)))
    }
}

impl gantry_core::KeyWrap for Keyring {
    fn current(&self) -> &str {
        &self.current
    }

    fn wrap(&self, plain: &[u8], aad: &[u8]) -> Result<(String, [u8; 12], Vec<u8>), String> {
        self.seal_bytes(plain, aad)
            .map(|(kid, nonce, ct)| (kid.to_owned(), nonce, ct))
            .map_err(|e| e.to_string())
    }

    fn unwrap(&self, kid: &str, nonce: &[u8; 12], ct: &[u8], aad: &[u8]) -> Result<Vec<u8>, String> {
        self.open_bytes(kid, nonce, ct, aad).map_err(|e| e.to_string())
    }
}

/// The tag of a sealed text ([`Keyring::seal_text`]).
const TEXT_TAG: &str = "gkt1";

impl Keyring {
    /// Seals a short secret (a webhook signing secret) bound to `context` (what it belongs to:
    /// a different context does not open it): `gkt1:<key id>:<nonce>:<ciphertext>`.
    pub fn seal_text(&self, plain: &str, context: &[u8]) -> Result<String, SealError> {
        self.encrypt(TEXT_TAG, plain.as_bytes(), context)
    }
}

/// Whether `text` is a sealed text.
pub fn is_sealed_text(text: &str) -> bool {
    text.starts_with(TEXT_TAG) && text.as_bytes().get(TEXT_TAG.len()) == Some(&b':')
}

/// A sealed string's parts: `tag:key-id:nonce:ciphertext`.
struct Envelope<'a> {
    tag: &'a str,
    key: &'a DataKey,
    nonce: Vec<u8>,
    ct: Vec<u8>,
}

/// The parts of a sealed string: its tag, the key it names (which `keys` must hold), the nonce
/// and the ciphertext.
fn envelope<'a>(sealed: &'a str, keys: &'a Keyring) -> Result<Envelope<'a>, SealError> {
    let mut parts = sealed.splitn(4, ':');
    let (Some(tag), Some(kid), Some(nonce), Some(ct)) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(SealError::Corrupt);
    };
    let key = keys
        .keys
        .get(kid)
        .ok_or_else(|| SealError::UnknownKey(kid.to_owned()))?;
    let nonce = B64.decode(nonce).map_err(|_| SealError::Corrupt)?;
    let ct = B64.decode(ct).map_err(|_| SealError::Corrupt)?;
    if nonce.len() != 12 {
        return Err(SealError::Corrupt);
    }
    Ok(Envelope { tag, key, nonce, ct })
}

/// Opens what [`Keyring::seal_text`] sealed for `context`.
pub fn open_text(sealed: &str, context: &[u8], keys: Option<&Keyring>) -> Result<String, SealError> {
    let keys = keys.ok_or(SealError::NoKeys)?;
    let Envelope { tag, key, nonce, ct } = envelope(sealed, keys)?;
    if tag != TEXT_TAG {
        return Err(SealError::Corrupt);
    }
    let plain = key
        .siv
        .decrypt(
            aes_gcm_siv::Nonce::from_slice(&nonce),
            AeadPayload { msg: &ct, aad: context },
        )
        .map_err(|_| SealError::Corrupt)?;
    String::from_utf8(plain).map_err(|_| SealError::Corrupt)
}

/// The key id a stored spec was sealed with, if it is sealed.
pub fn sealed_with(spec: &Value) -> Option<&str> {
    let s = spec.get("payload")?.get("sealed")?.as_str()?;
    s.split(':').nth(1)
}

/// Whether a stored spec is sealed as `keys` would seal it now (current key, current envelope):
/// what `gantry keys rotate` leaves alone.
pub fn sealed_current(spec: &Value, keys: &Keyring) -> bool {
    spec.get("payload")
        .and_then(|p| p.get("sealed"))
        .and_then(Value::as_str)
        .and_then(|s| s.strip_prefix(TAG))
        .and_then(|s| s.strip_prefix(':'))
        .and_then(|s| s.split(':').next())
        == Some(keys.current())
}

/// Opens the envelope of `spec` (if sealed, for `ctx`) in place, with `keys`.
pub fn open(spec: &mut Value, ctx: &SealContext, keys: Option<&Keyring>) -> Result<(), SealError> {
    let Some(payload) = spec.get_mut("payload").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let Some(Value::String(sealed)) = payload.remove("sealed") else {
        return Ok(());
    };
    let keys = keys.ok_or(SealError::NoKeys)?;
    let Envelope { tag, key, nonce, ct } = envelope(&sealed, keys)?;
    let plain = match tag {
        TAG => key.siv.decrypt(
            aes_gcm_siv::Nonce::from_slice(&nonce),
            AeadPayload {
                msg: &ct,
                aad: &ctx.aad,
            },
        ),
        TAG_V1 => key.gcm.decrypt(
            Nonce::from_slice(&nonce),
            AeadPayload {
                msg: &ct,
                aad: ctx.job_id.as_bytes(),
            },
        ),
        _ => return Err(SealError::Corrupt),
    }
    .map_err(|_| SealError::Corrupt)?;
    let Some(payload) = spec.get_mut("payload").and_then(Value::as_object_mut) else {
        return Err(SealError::Corrupt);
    };
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&plain) else {
        return Err(SealError::Corrupt);
    };
    payload.extend(fields);
    let top: Vec<(&str, Value)> = [IDEM, USER]
        .into_iter()
        .filter_map(|f| payload.remove(f).map(|v| (f, v)))
        .collect();
    if let Some(o) = spec.as_object_mut() {
        for (f, v) in top {
            o.insert(f.to_owned(), v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Seals a whole (v1-shaped) spec, bound to what it names.
    fn seal_as(ring: &Keyring, spec: &mut Value, id: &str) -> Result<(), SealError> {
        let ctx = SealContext::of_spec(spec, id);
        ring.seal(spec, &ctx)
    }

    fn open_as(spec: &mut Value, id: &str, keys: Option<&Keyring>) -> Result<(), SealError> {
        let ctx = SealContext::of_spec(spec, id);
        open(spec, &ctx, keys)
    }

    fn key(byte: u8) -> String {
        B64.encode([byte; 32])
    }

    #[test]
    fn sealed_fields_leave_the_json_and_come_back() {
        let ring = Keyring::parse(&format!("k2={}, k1={}", key(2), key(1))).unwrap();
        assert_eq!(ring.current(), "k2");
        let original = json!({"id": "J1", "kind": "generate", "idempotency_key": "order-of-alice@example.com",
            "payload": {"provider": "openai", "model": "m", "prompt": "a red fox", "reference_images": ["https://x/y.png"]}});
        let mut v = original.clone();
        seal_as(&ring, &mut v, "J1").expect("test input");
        let text = v.to_string();
        assert!(
            !text.contains("red fox") && !text.contains("x/y.png") && !text.contains("alice"),
            "{text}"
        );
        assert_eq!(sealed_with(&v), Some("k2"));
        let mut opened = v.clone();
        open_as(&mut opened, "J1", Some(&ring)).expect("test input");
        assert_eq!(opened, original);
        // Bound to the job; keys needed; old keys still open.
        assert!(matches!(
            open_as(&mut v.clone(), "J2", Some(&ring)),
            Err(SealError::Corrupt)
        ));
        assert!(matches!(open_as(&mut v.clone(), "J1", None), Err(SealError::NoKeys)));
        let rotated = Keyring::parse(&format!("k3={}\nk2={}", key(3), key(2))).unwrap();
        let mut again = v.clone();
        open_as(&mut again, "J1", Some(&rotated)).expect("test input");
        assert_eq!(again, original);
        let only_new = Keyring::parse(&format!("k3={}", key(3))).unwrap();
        assert!(matches!(open_as(&mut v.clone(), "J1", Some(&only_new)), Err(SealError::UnknownKey(k)) if k == "k2"));
        // Nothing sensitive: untouched.
        let mut noop = json!({"id": "J3", "kind": "noop", "payload": {"sleep_ms": 5}});
        seal_as(&ring, &mut noop, "J3").expect("test input");
        assert_eq!(noop, json!({"id": "J3", "kind": "noop", "payload": {"sleep_ms": 5}}));
        // Any kind's idempotency key is sealed, and comes back to its place.
        let keyed = json!({"id": "J4", "kind": "noop", "idempotency_key": "k-9", "payload": {"sleep_ms": 5}});
        let mut v = keyed.clone();
        seal_as(&ring, &mut v, "J4").expect("test input");
        assert!(!v.to_string().contains("k-9") && sealed_with(&v) == Some("k2"));
        open_as(&mut v, "J4", Some(&ring)).expect("test input");
        assert_eq!(v, keyed);
    }

    /// Issue 17: the envelope is bound to tenant, pool and kind as well as the job, and is
    /// GCM-SIV; records sealed the old way (GCM, job id only) still open and count as not
    /// current, so a rotation re-seals them.
    #[test]
    fn envelopes_are_bound_to_tenant_pool_kind_and_job_and_old_ones_still_open() {
        let ring = Keyring::parse(&format!("k1={}", key(1))).expect("test input");
        let spec = json!({"id": "J1", "tenant": "t1", "pool": "cpu", "kind": "generate", "user": "alice@example.com",
            "payload": {"provider": "openai", "model": "m", "prompt": "a red fox"}});
        let mut sealed = spec.clone();
        seal_as(&ring, &mut sealed, "J1").expect("test input");
        // The platform's user id is sealed too; its place stays, empty.
        assert!(!sealed.to_string().contains("alice"), "{sealed}");
        assert_eq!(sealed["user"], "");
        let envelope = sealed["payload"]["sealed"].as_str().expect("test input").to_owned();
        assert!(envelope.starts_with("gk2:k1:"), "{envelope}");
        assert!(sealed_current(&sealed, &ring));
        for (field, other) in [("tenant", "t2"), ("pool", "gpu-h100"), ("kind", "upscale")] {
            let mut moved = sealed.clone();
            moved[field] = json!(other);
            assert!(
                matches!(open_as(&mut moved, "J1", Some(&ring)), Err(SealError::Corrupt)),
                "an envelope moved to another {field} must not open"
            );
        }
        // Two seals of the same spec differ (random nonces), and both open.
        let mut again = spec.clone();
        seal_as(&ring, &mut again, "J1").expect("test input");
        assert_ne!(again["payload"]["sealed"], sealed["payload"]["sealed"]);
        let mut opened = sealed.clone();
        open_as(&mut opened, "J1", Some(&ring)).expect("test input");
        assert_eq!(opened, spec);

        // A gk1 envelope, as the previous version wrote it, still opens.
        let nonce = [9u8; 12];
        let gcm = Aes256Gcm::new_from_slice(&[1u8; 32]).expect("test input");
        let ct = gcm
            .encrypt(
                Nonce::from_slice(&nonce),
                AeadPayload {
                    msg: br#"{"prompt":"a red fox"}"#,
                    aad: b"J1",
                },
            )
            .expect("test input");
        let mut old = json!({"id": "J1", "tenant": "t1", "pool": "cpu", "kind": "generate", "user": "alice@example.com",
            "payload": {"provider": "openai", "model": "m", "prompt": "",
                "sealed": format!("gk1:k1:{}:{}", B64.encode(nonce), B64.encode(ct))}});
        assert!(!sealed_current(&old, &ring), "a rotation upgrades it");
        open_as(&mut old, "J1", Some(&ring)).expect("test input");
        assert_eq!(old, spec);
    }

    #[test]
    fn bad_key_lists_are_refused() {
        for bad in [
            "",
            "k1",
            "k1=notbase64!",
            &format!("k1={}", B64.encode([1u8; 16])),
            &format!("k 1={}", key(1)),
        ] {
            assert!(Keyring::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Keyring::parse(&format!("k1={},k1={}", key(1), key(2))).is_err());
    }

    #[test]
    fn sealed_texts_open_only_for_their_context_and_keys() {
        let keys = Keyring::parse("k1=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").expect("keys");
        let sealed = keys.seal_text("whsec_abc", b"tenant-a/ep_1").expect("sealed");
        assert!(is_sealed_text(&sealed) && !sealed.contains("whsec_abc"), "{sealed}");
        assert_eq!(
            open_text(&sealed, b"tenant-a/ep_1", Some(&keys)).expect("opens"),
            "whsec_abc"
        );
        assert!(
            open_text(&sealed, b"tenant-b/ep_1", Some(&keys)).is_err(),
            "another context"
        );
        assert!(matches!(
            open_text(&sealed, b"tenant-a/ep_1", None),
            Err(SealError::NoKeys)
        ));
        let other = Keyring::parse("k2=AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=").expect("keys");
        assert!(matches!(
            open_text(&sealed, b"tenant-a/ep_1", Some(&other)),
            Err(SealError::UnknownKey(_))
        ));
        assert!(!is_sealed_text("whsec_abc") && !is_sealed_text("gkt1x"));
    }
}
