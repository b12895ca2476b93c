//! The operator console's sessions: an operator signs in with an operator API key; the console keeps a session
//! in Redis and gives the browser only a random token, in a cookie (`HttpOnly`,
//! `SameSite=Strict`, `Path=/console`, `Secure` when configured). The session names the
//! operator (tenant, key fingerprint, scopes, as the audit log names API callers) and holds the
//! CSRF token every state-changing form carries. It ends after `idle_secs` without a request
//! (its key's TTL, renewed by each one) or `absolute_secs` after sign-in, whichever comes first.
//! Only the token's SHA-256 names the Redis key, so a read of Redis yields no usable session.

use std::collections::BTreeMap;

use base64::Engine as _;
use rand::RngCore as _;

use crate::auth::{Caller, hash_key};
use crate::config::{ConsoleConfig, Scope};
use gantry_queue::QueueError;

/// The session cookie's name.
pub const COOKIE: &str = "gantry_console";

/// A signed-in operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Who: as an API caller, for scopes and the audit log.
    pub caller: Caller,
    /// The CSRF token its forms carry.
    pub csrf: String,
    /// Signed in at (Unix ms).
    pub created_ms: u64,
}

impl Session {
    /// Whether it may act (pause, replay, purge…), not only look: the `admin` scope.
    pub fn may_act(&self) -> bool {
        self.caller.scopes.contains(&Scope::Admin)
    }

    /// Whether `token` is this session's CSRF token (compared in constant time).
    pub fn csrf_ok(&self, token: &str) -> bool {
        let (a, b) = (self.csrf.as_bytes(), token.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Sessions in Redis.
#[derive(Clone)]
pub struct Sessions {
    conn: gantry_queue::RedisConn,
    cfg: ConsoleConfig,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn key(token: &str) -> String {
    format!("gantry:{{console}}:session:{}", hash_key(token))
}

fn once_key(token: &str) -> String {
    format!("gantry:{{console}}:once:{}", hash_key(token))
}

/// A random 256-bit token, base64url (session tokens, CSRF tokens, OIDC state and PKCE).
pub(crate) fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl Sessions {
    /// Sessions on `conn`, timed out as `cfg` says.
    pub fn new(conn: gantry_queue::RedisConn, cfg: ConsoleConfig) -> Self {
        Self { conn, cfg }
    }

    /// Starts a session for `caller`; returns its token (the cookie's value).
    pub async fn create(&self, caller: &Caller) -> Result<String, QueueError> {
        let token = random_token();
        let scopes: Vec<&str> = caller.scopes.iter().map(|s| s.as_str()).collect();
        let mut c = self.conn.clone();
        redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(key(&token))
            .arg("tenant")
            .arg(&caller.tenant)
            .arg("key_id")
            .arg(&caller.key_id)
            .arg("scopes")
            .arg(scopes.join(","))
            .arg("csrf")
            .arg(random_token())
            .arg("created")
            .arg(gantry_core::time::now_ms())
            .ignore()
            .cmd("EXPIRE")
            .arg(key(&token))
            .arg(self.cfg.idle_secs.max(1))
            .ignore()
            .query_async::<()>(&mut c)
            .await?;
        Ok(token)
    }

    /// The live session `token` names, its idle timeout renewed; `None` when there is none (or
    /// it is past its absolute lifetime, when it is ended now).
    pub async fn get(&self, token: &str) -> Result<Option<Session>, QueueError> {
        let mut c = self.conn.clone();
        let (h, _): (BTreeMap<String, String>, i64) = redis::pipe()
            .cmd("HGETALL")
            .arg(key(token))
            .cmd("EXPIRE")
            .arg(key(token))
            .arg(self.cfg.idle_secs.max(1))
            .query_async(&mut c)
            .await?;
        let created_ms: u64 = h.get("created").and_then(|v| v.parse().ok()).unwrap_or(0);
        let (Some(tenant), Some(key_id), Some(csrf)) = (h.get("tenant"), h.get("key_id"), h.get("csrf")) else {
            return Ok(None);
        };
        if gantry_core::time::now_ms().saturating_sub(created_ms) > self.cfg.absolute_secs.saturating_mul(1000) {
            self.end(token).await?;
            return Ok(None);
        }
        let scopes = h
            .get("scopes")
            .map(|s| {
                s.split(',')
                    .filter_map(|n| serde_json::from_value(serde_json::Value::String(n.to_owned())).ok())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(Session {
            caller: Caller {
                tenant: tenant.clone(),
                scopes,
                key_id: key_id.clone(),
            },
            csrf: csrf.clone(),
            created_ms,
        }))
    }

    /// A one-time sign-in link's token for `caller`, good for `ttl_secs` and one use (the
    /// demo prints one for its operator).
    pub async fn one_time(&self, caller: &Caller, ttl_secs: u64) -> Result<String, QueueError> {
        let token = random_token();
        let scopes: Vec<&str> = caller.scopes.iter().map(|s| s.as_str()).collect();
        let who = serde_json::json!({"tenant": caller.tenant, "key_id": caller.key_id, "scopes": scopes});
        let mut c = self.conn.clone();
        redis::cmd("SET")
            .arg(once_key(&token))
            .arg(who.to_string())
            .arg("EX")
            .arg(ttl_secs.max(1))
            .query_async::<()>(&mut c)
            .await?;
        Ok(token)
    }

    /// Uses up a one-time sign-in token: the operator it was made for, once.
    pub async fn redeem(&self, token: &str) -> Result<Option<Caller>, QueueError> {
        let mut c = self.conn.clone();
        let who: Option<String> = redis::cmd("GETDEL").arg(once_key(token)).query_async(&mut c).await?;
        let Some(v) = who.and_then(|w| serde_json::from_str::<serde_json::Value>(&w).ok()) else {
            return Ok(None);
        };
        let (Some(tenant), Some(key_id)) = (v["tenant"].as_str(), v["key_id"].as_str()) else {
            return Ok(None);
        };
        let scopes = v["scopes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| serde_json::from_value(s.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(Caller {
            tenant: tenant.to_owned(),
            scopes,
            key_id: key_id.to_owned(),
        }))
    }

    /// Ends the session `token` names.
    pub async fn end(&self, token: &str) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        redis::cmd("DEL").arg(key(token)).query_async::<()>(&mut c).await?;
        Ok(())
    }

    /// The `Set-Cookie` value that gives the browser `token`.
    pub fn cookie(&self, token: &str) -> String {
        let secure = if self.cfg.secure_cookies { "; Secure" } else { "" };
        format!(
            "{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            self.cfg.absolute_secs
        )
    }

    /// The `Set-Cookie` value that clears it.
    pub fn cleared(&self) -> String {
        let secure = if self.cfg.secure_cookies { "; Secure" } else { "" };
        format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
    }
}

/// The cookie that ties an OpenID Connect sign-in's return to the browser that began it.
pub const OIDC_COOKIE: &str = "gantry_console_oidc";

/// How long an OpenID Connect sign-in may take at the provider.
const OIDC_TTL_SECS: u64 = 600;

fn oidc_key(state: &str) -> String {
    format!("gantry:{{console}}:oidc:{}", hash_key(state))
}

impl Sessions {
    /// Keeps an OpenID Connect sign-in's PKCE verifier and nonce under its `state`, for ten
    /// minutes.
    pub async fn begin_oidc(&self, state: &str, verifier: &str, nonce: &str) -> Result<(), QueueError> {
        let v = serde_json::json!({"verifier": verifier, "nonce": nonce});
        let mut c = self.conn.clone();
        redis::cmd("SET")
            .arg(oidc_key(state))
            .arg(v.to_string())
            .arg("EX")
            .arg(OIDC_TTL_SECS)
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    /// Takes (once) the verifier and nonce kept under `state`.
    pub async fn take_oidc(&self, state: &str) -> Result<Option<(String, String)>, QueueError> {
        let mut c = self.conn.clone();
        let v: Option<String> = redis::cmd("GETDEL").arg(oidc_key(state)).query_async(&mut c).await?;
        Ok(v.and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok())
            .and_then(|v| Some((v["verifier"].as_str()?.to_owned(), v["nonce"].as_str()?.to_owned()))))
    }

    /// The `Set-Cookie` value holding a sign-in's `state` while the browser is at the
    /// provider: `SameSite=Lax`, as the provider's redirect back is a cross-site navigation.
    pub fn oidc_cookie(&self, state: &str) -> String {
        let secure = if self.cfg.secure_cookies { "; Secure" } else { "" };
        format!("{OIDC_COOKIE}={state}; Path=/console/oidc; HttpOnly; SameSite=Lax; Max-Age={OIDC_TTL_SECS}{secure}")
    }

    /// The `Set-Cookie` value that clears it.
    pub fn oidc_cookie_cleared(&self) -> String {
        let secure = if self.cfg.secure_cookies { "; Secure" } else { "" };
        format!("{OIDC_COOKIE}=; Path=/console/oidc; HttpOnly; SameSite=Lax; Max-Age=0{secure}")
    }
}

/// The value of cookie `name` in a request.
pub fn cookie_of(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The session token a request's cookies carry.
pub fn token_of(headers: &axum::http::HeaderMap) -> Option<String> {
    cookie_of(headers, COOKIE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_the_cookie_and_csrf_compares_exactly() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            "a=1; gantry_console=tok; b=2".parse().expect("header"),
        );
        assert_eq!(token_of(&h).as_deref(), Some("tok"));
        let s = Session {
            caller: Caller {
                tenant: "ops".into(),
                scopes: vec![Scope::AdminRead],
                key_id: "k".into(),
            },
            csrf: "abc".into(),
            created_ms: 0,
        };
        assert!(s.csrf_ok("abc") && !s.csrf_ok("abd") && !s.csrf_ok("ab") && !s.csrf_ok(""));
        assert!(!s.may_act(), "read-only");
        assert_ne!(random_token(), random_token());
    }
}
