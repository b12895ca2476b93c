//! API keys: `Authorization: Bearer <key>`. Only each key's SHA-256 is configured; a request's
//! key is hashed and looked up. Each key belongs to one tenant and carries scopes.

use std::collections::HashMap;

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::config::{SchedulerConfig, Scope};
use crate::problem::ApiError;

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The tenant the key belongs to.
    pub tenant: String,
    /// What the key may do.
    pub scopes: Vec<Scope>,
    /// The key's fingerprint: the first 12 hex digits of its SHA-256 (names it in the audit
    /// log without revealing it).
    pub key_id: String,
}

impl Caller {
    /// Who this is, as the audit log names callers: `tenant/key:fingerprint`.
    pub fn actor(&self) -> String {
        format!("{}/key:{}", self.tenant, self.key_id)
    }

    /// Refuses unless the key has `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(scope.as_str()))
        }
    }
}

/// The configured keys, by hash.
#[derive(Clone, Debug, Default)]
pub struct ApiKeys {
    by_hash: HashMap<String, Caller>,
}

/// Lowercase hex SHA-256 of `key`.
pub fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl ApiKeys {
    /// The keys of every tenant in `cfg`.
    pub fn from_config(cfg: &SchedulerConfig) -> Self {
        let mut by_hash = HashMap::new();
        for (tenant, t) in &cfg.tenants {
            for k in &t.api_keys {
                by_hash.insert(
                    k.sha256.clone(),
                    Caller {
                        tenant: tenant.clone(),
                        scopes: k.scopes.clone(),
                        key_id: k.sha256.chars().take(12).collect(),
                    },
                );
            }
        }
        Self { by_hash }
    }

    /// The caller a request's headers name.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let key = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(ApiError::Unauthenticated)?;
        self.by_hash
            .get(&hash_key(key))
            .cloned()
            .ok_or(ApiError::Unauthenticated)
    }
}
