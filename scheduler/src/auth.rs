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
    /// Who this is, as the audit log names callers: `tenant/key:fingerprint` (or
    /// `tenant/oidc:email` for a person signed in to the console through OpenID Connect).
    pub fn actor(&self) -> String {
        // A person signed in to the console through OpenID Connect is named by their email.
        if self.key_id.starts_with("oidc:") {
            return format!("{}/{}", self.tenant, self.key_id);
        }
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

    /// The caller `key` names (the console's sign-in).
    pub fn by_key(&self, key: &str) -> Option<Caller> {
        if key.is_empty() {
            return None;
        }
        self.by_hash.get(&hash_key(key)).cloned()
    }

    /// Whether a key with `caller`'s tenant and fingerprint is still configured and still holds
    /// every scope `caller` has (a console session made from a key is checked against this on
    /// each request, so a key removed or narrowed since takes its sessions with it).
    pub fn still_grants(&self, caller: &Caller) -> bool {
        self.by_hash.values().any(|c| {
            c.tenant == caller.tenant && c.key_id == caller.key_id && caller.scopes.iter().all(|s| c.scopes.contains(s))
        })
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

/// The authentication layer: every `/v1` route runs behind it. It answers 401 from the headers
/// alone, before any handler or extractor reads a byte of the body, so an unauthenticated
/// client cannot make the scheduler buffer an upload; the caller it finds travels on in the
/// request's extensions for the scope extractors below.
pub async fn authenticate(
    axum::extract::State(keys): axum::extract::State<std::sync::Arc<ApiKeys>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match keys.authenticate(req.headers()) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        // Set by [`authenticate`]; absent only on a route mounted outside it, which then
        // refuses rather than runs unauthenticated.
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Unauthenticated)
    }
}

/// Extractors that yield the caller only if its key holds one scope. Put before the body in a
/// handler's arguments, they refuse (403) before the body is read.
macro_rules! scope_extractor {
    ($(#[$doc:meta] $name:ident => $scope:expr;)*) => {$(
        #[$doc]
        #[derive(Clone, Debug)]
        pub struct $name(pub Caller);

        impl<S: Send + Sync> axum::extract::FromRequestParts<S> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
                let c = Caller::from_request_parts(parts, state).await?;
                c.require($scope)?;
                Ok(Self(c))
            }
        }
    )*};
}

scope_extractor! {
    /// A caller whose key may submit and cancel jobs.
    JobsWrite => Scope::JobsWrite;
    /// A caller whose key may read jobs.
    JobsRead => Scope::JobsRead;
    /// An operator (`admin` scope).
    Admin => Scope::Admin;
    /// A trust-and-safety reviewer (`safety:review`).
    SafetyReview => Scope::SafetyReview;
    /// An operator who may read preserved evidence (`safety:evidence`).
    SafetyEvidence => Scope::SafetyEvidence;
}
