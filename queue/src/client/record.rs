//! A job's spec as its record stores it.
//!
//! **Version 2** (compact, written since protocol v2): only what the record's own fields do not
//! hold — the user, the timeout, the payload's content, and the requirements, regions,
//! idempotency key and scan setting when they are not the defaults. The id comes from the key;
//! the pool, tenant, priority, kind and attempts allowed from the record's fields
//! ([`RecordFields`]). A no-op job's spec is then ~50 bytes, so Redis keeps the whole record
//! as a listpack (every value ≤ 64 bytes) instead of a hashtable: 280 bytes instead of 752.
//!
//! **Version 1** (before): the whole [`JobSpec`], with those fields repeated inside it. Readers
//! take both — a field a v1 spec carries is used as it is — so records enqueued before an
//! upgrade run after it, and no drain is needed (docs/design/queue-v2.md, "Migration").
//!
//! Sealing binds the envelope to the tenant, pool, kind and id ([`SealContext`]), taken from the
//! record's fields for both versions; for a v1 record they are the same values its spec holds.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::RecordFormat;
use crate::error::QueueError;
use crate::job::{JobId, JobKind, JobSpec, Priority, Requirements};
use crate::payload::{Payload, PayloadContent};
use crate::seal::{Keyring, SealContext};

/// What a job's record holds beside its spec.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordFields<'a> {
    pub pool: &'a str,
    pub tenant: &'a str,
    pub priority: Priority,
    pub kind: JobKind,
    pub max_attempts: u32,
}

impl RecordFields<'_> {
    fn seal_context(&self, id: JobId) -> SealContext {
        SealContext::new(self.tenant, self.pool, self.kind.as_str(), &id.to_string())
    }
}

/// The compact (v2) spec, as written.
#[derive(Serialize)]
struct CompactSpec<'a> {
    user: &'a str,
    timeout_secs: u64,
    #[serde(skip_serializing_if = "is_any")]
    requirements: &'a Requirements,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    allowed_regions: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<&'a str>,
    #[serde(skip_serializing_if = "is_true")]
    scan_outputs: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
    payload: PayloadContent<'a>,
}

fn is_any(r: &&Requirements) -> bool {
    **r == Requirements::default()
}

fn is_true(b: &bool) -> bool {
    *b
}

fn scan_by_default() -> bool {
    true
}

/// A stored spec of either version, as read.
#[derive(Deserialize)]
struct StoredSpec<'a> {
    // Only in version 1; version 2 has them in the record's fields.
    #[serde(default)]
    pool: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    priority: Option<Priority>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    kind: Option<JobKind>,
    // Both versions.
    user: String,
    timeout_secs: u64,
    #[serde(default)]
    requirements: Requirements,
    #[serde(default)]
    allowed_regions: Vec<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default = "scan_by_default")]
    scan_outputs: bool,
    #[serde(default)]
    traceparent: Option<String>,
    #[serde(borrow)]
    payload: &'a RawValue,
}

/// The spec to store for `spec`, in `format`, its sensitive fields sealed when `keys` are set.
pub(crate) fn encode_spec(spec: &JobSpec, format: RecordFormat, keys: Option<&Keyring>) -> Result<String, QueueError> {
    let protocol = |e: serde_json::Error| QueueError::Protocol(format!("job {}: spec: {e}", spec.id));
    if format == RecordFormat::V1 {
        let Some(keys) = keys else {
            return serde_json::to_string(spec).map_err(protocol);
        };
        let mut value = serde_json::to_value(spec).map_err(protocol)?;
        let ctx = SealContext::of_spec(&value, &spec.id.to_string());
        keys.seal(&mut value, &ctx)?;
        return Ok(value.to_string());
    }
    let compact = CompactSpec {
        user: &spec.user,
        timeout_secs: spec.timeout_secs,
        requirements: &spec.requirements,
        allowed_regions: &spec.allowed_regions,
        idempotency_key: spec.idempotency_key.as_deref(),
        scan_outputs: spec.scan_outputs,
        traceparent: spec.traceparent.as_deref(),
        payload: spec.body.content(),
    };
    match keys {
        Some(keys) => {
            let mut value = serde_json::to_value(&compact).map_err(protocol)?;
            let fields = RecordFields {
                pool: &spec.pool,
                tenant: &spec.tenant,
                priority: spec.priority,
                kind: spec.kind(),
                max_attempts: spec.max_attempts,
            };
            keys.seal(&mut value, &fields.seal_context(spec.id))?;
            Ok(value.to_string())
        }
        None => serde_json::to_string(&compact).map_err(protocol),
    }
}

/// A stored spec of either version, its sealed fields opened with `keys`, completed from the
/// record's `fields`.
pub(crate) fn decode_spec(
    id: JobId,
    raw: &[u8],
    fields: RecordFields<'_>,
    keys: Option<&Keyring>,
) -> Result<JobSpec, QueueError> {
    let unreadable = |e: serde_json::Error| QueueError::Protocol(format!("job {id}: unreadable spec: {e}"));
    // Most specs are not sealed (or have nothing to seal): straight to the struct.
    if !raw.windows(9).any(|w| w == b"\"sealed\":") {
        let stored: StoredSpec<'_> = serde_json::from_slice(raw).map_err(unreadable)?;
        return complete(id, stored, fields).map_err(unreadable);
    }
    let mut v: serde_json::Value = serde_json::from_slice(raw).map_err(unreadable)?;
    crate::seal::open(&mut v, &fields.seal_context(id), keys)?;
    let opened = serde_json::to_vec(&v).map_err(unreadable)?;
    let stored: StoredSpec<'_> = serde_json::from_slice(&opened).map_err(unreadable)?;
    complete(id, stored, fields).map_err(unreadable)
}

fn complete(id: JobId, s: StoredSpec<'_>, f: RecordFields<'_>) -> Result<JobSpec, serde_json::Error> {
    Ok(JobSpec {
        id,
        pool: s.pool.unwrap_or_else(|| f.pool.to_owned()),
        tenant: s.tenant.unwrap_or_else(|| f.tenant.to_owned()),
        user: s.user,
        priority: s.priority.unwrap_or(f.priority),
        requirements: s.requirements,
        allowed_regions: s.allowed_regions,
        idempotency_key: s.idempotency_key,
        max_attempts: s.max_attempts.unwrap_or(f.max_attempts),
        timeout_secs: s.timeout_secs,
        scan_outputs: s.scan_outputs,
        traceparent: s.traceparent,
        body: Payload::from_content(s.kind.unwrap_or(f.kind), s.payload.get())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::GpuRequirement;
    use crate::payload::{GeneratePayload, NoopPayload};

    fn spec(body: Payload) -> JobSpec {
        JobSpec {
            id: JobId::new(),
            pool: "gpu-h100".into(),
            tenant: "studio-a".into(),
            user: "alice@example.com".into(),
            priority: Priority::High,
            requirements: Requirements::default(),
            allowed_regions: Vec::new(),
            idempotency_key: None,
            max_attempts: 4,
            timeout_secs: 600,
            scan_outputs: true,
            traceparent: None,
            body,
        }
    }

    fn fields(s: &JobSpec) -> RecordFields<'_> {
        RecordFields {
            pool: &s.pool,
            tenant: &s.tenant,
            priority: s.priority,
            kind: s.kind(),
            max_attempts: s.max_attempts,
        }
    }

    fn keys() -> Keyring {
        use base64::Engine as _;
        let k = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        Keyring::parse(&format!("k1={k}")).expect("test key")
    }

    #[test]
    fn a_noop_spec_is_small_enough_for_a_listpack_and_reads_back_whole() {
        let s = spec(Payload::Noop(NoopPayload::default()));
        let raw = encode_spec(&s, RecordFormat::V2, None).expect("encodes");
        assert_eq!(raw, r#"{"user":"alice@example.com","timeout_secs":600,"payload":{}}"#);
        assert!(raw.len() <= 64, "Redis's hash-max-listpack-value: {}", raw.len());
        let back = decode_spec(s.id, raw.as_bytes(), fields(&s), None).expect("decodes");
        assert_eq!(back, s);
    }

    #[test]
    fn every_field_that_is_not_a_default_is_kept() {
        let mut s = spec(Payload::Generate(GeneratePayload {
            provider: "openai".into(),
            model: "gpt-image-1".into(),
            prompt: "a red fox".into(),
            ..Default::default()
        }));
        s.requirements.gpu = Some(GpuRequirement {
            min_vram_bytes: 24 << 30,
            nvenc: true,
            count: 1,
        });
        s.allowed_regions = vec!["SG".into()];
        s.idempotency_key = Some("order-1".into());
        s.scan_outputs = false;
        let raw = encode_spec(&s, RecordFormat::V2, None).expect("encodes");
        assert!(!raw.contains("studio-a") && !raw.contains("gpu-h100"), "{raw}");
        assert_eq!(decode_spec(s.id, raw.as_bytes(), fields(&s), None).expect("decodes"), s);
    }

    #[test]
    fn a_version_1_spec_still_reads() {
        let s = spec(Payload::Noop(NoopPayload {
            sleep_ms: 5,
            ..Default::default()
        }));
        let v1 = encode_spec(&s, RecordFormat::V1, None).expect("v1");
        assert_eq!(v1, serde_json::to_string(&s).expect("the whole spec"));
        assert!(v1.contains(r#""tenant":"studio-a""#), "{v1}");
        // The record's fields of a v1 record are the same values; the spec's win.
        let back = decode_spec(s.id, v1.as_bytes(), fields(&s), None).expect("decodes");
        assert_eq!(back, s);
    }

    #[test]
    fn sealed_specs_are_bound_to_the_records_tenant_pool_and_kind() {
        let keys = keys();
        let s = spec(Payload::Generate(GeneratePayload {
            provider: "openai".into(),
            model: "m".into(),
            prompt: "a red fox".into(),
            ..Default::default()
        }));
        let raw = encode_spec(&s, RecordFormat::V2, Some(&keys)).expect("seals");
        assert!(!raw.contains("red fox") && !raw.contains("alice"), "{raw}");
        let back = decode_spec(s.id, raw.as_bytes(), fields(&s), Some(&keys)).expect("opens");
        assert_eq!(back, s);
        let elsewhere = RecordFields {
            tenant: "studio-b",
            ..fields(&s)
        };
        assert!(matches!(
            decode_spec(s.id, raw.as_bytes(), elsewhere, Some(&keys)),
            Err(QueueError::Seal(crate::seal::SealError::Corrupt))
        ));
        assert!(matches!(
            decode_spec(JobId::new(), raw.as_bytes(), fields(&s), Some(&keys)),
            Err(QueueError::Seal(crate::seal::SealError::Corrupt))
        ));
        // A v1 record sealed the old way (its own fields as the context) opens the same.
        let mut v1 = serde_json::to_value(&s).expect("v1");
        let ctx = SealContext::of_spec(&v1, &s.id.to_string());
        keys.seal(&mut v1, &ctx).expect("seals");
        let back = decode_spec(s.id, v1.to_string().as_bytes(), fields(&s), Some(&keys)).expect("opens");
        assert_eq!(back, s);
    }

    #[test]
    fn a_payload_the_kind_does_not_take_is_unreadable() {
        let s = spec(Payload::Noop(NoopPayload::default()));
        let raw = br#"{"user":"u","timeout_secs":60,"payload":{"prompt":"x"}}"#;
        assert!(matches!(
            decode_spec(s.id, raw, fields(&s), None),
            Err(QueueError::Protocol(m)) if m.contains("unreadable spec")
        ));
    }
}
