//! The console's OpenID Connect client: discovery, the authorization request (code flow with
//! PKCE, S256), the token exchange, and the ID token's verification (RS256 or ES256 against
//! the provider's JWKS; issuer, audience, expiry, nonce). No other algorithm is taken: not
//! `none`, not HMAC. The discovery document and the keys are cached; an unknown key id fetches
//! the keys again (at most once a minute), so the provider may rotate them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::config::OidcConfig;
use crate::console_session::random_token;

/// Why a sign-in through the provider failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be reached, or answered with an error.
    #[error("the identity provider: {0}")]
    Provider(String),
    /// The ID token is not one this console may accept.
    #[error("the ID token was refused: {0}")]
    Token(String),
}

/// Clock skew allowed on `exp` and `iat`.
const LEEWAY_SECS: u64 = 60;
/// The keys are fetched again for an unknown key id at most this often.
const JWKS_REFETCH: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

/// One key of the provider's JWKS.
#[derive(Clone, Debug, Deserialize)]
pub struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Default)]
struct Cache {
    discovery: Option<Discovery>,
    keys: Vec<Jwk>,
    keys_at: Option<Instant>,
}

/// The provider, as the console talks to it. Cheap to clone.
#[derive(Clone)]
pub struct OidcClient {
    cfg: Arc<OidcConfig>,
    secret: Option<String>,
    http: reqwest::Client,
    cache: Arc<Mutex<Cache>>,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient")
            .field("issuer", &self.cfg.issuer)
            .finish_non_exhaustive()
    }
}

/// What a sign-in starts with: where to send the browser, and what to keep until it returns.
#[derive(Debug)]
pub struct Authorization {
    /// The provider's authorization URL, with every parameter.
    pub url: String,
    /// The `state` (kept in a cookie and server-side).
    pub state: String,
    /// The PKCE verifier (kept server-side).
    pub verifier: String,
    /// The `nonce` the ID token must carry (kept server-side).
    pub nonce: String,
}

/// Who signed in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The provider's subject.
    pub subject: String,
    /// Their email, lowercased (verified, where the provider says).
    pub email: String,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Result<Vec<u8>, OidcError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| OidcError::Token("not base64url".into()))
}

/// The S256 PKCE challenge of `verifier`.
pub fn challenge(verifier: &str) -> String {
    b64(&Sha256::digest(verifier.as_bytes()))
}

impl OidcClient {
    /// A client for `cfg`; the secret is read from `client_secret_env` now.
    pub fn new(cfg: OidcConfig) -> Result<Self, OidcError> {
        let secret = match &cfg.client_secret_env {
            Some(var) => Some(
                std::env::var(var).map_err(|_| OidcError::Provider(format!("{var} (the client secret) is not set")))?,
            ),
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OidcError::Provider(e.to_string()))?;
        Ok(Self {
            cfg: Arc::new(cfg),
            secret,
            http,
            cache: Arc::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OidcConfig {
        &self.cfg
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        if !crate::config::https_or_loopback(url) {
            return Err(OidcError::Provider(format!("{url}: not https")));
        }
        let r = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| OidcError::Provider(format!("{url}: {e}")))?;
        if !r.status().is_success() {
            return Err(OidcError::Provider(format!("{url}: HTTP {}", r.status())));
        }
        r.json::<T>()
            .await
            .map_err(|e| OidcError::Provider(format!("{url}: {e}")))
    }

    async fn discovery(&self) -> Result<Discovery, OidcError> {
        if let Some(d) = self.cache.lock().await.discovery.clone() {
            return Ok(d);
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.cfg.issuer.trim_end_matches('/')
        );
        let d: Discovery = self.get_json(&url).await?;
        if d.issuer != self.cfg.issuer {
            return Err(OidcError::Provider(format!(
                "the discovery document names issuer {:?}, not {:?}",
                d.issuer, self.cfg.issuer
            )));
        }
        self.cache.lock().await.discovery = Some(d.clone());
        Ok(d)
    }

    /// Starts a sign-in: a fresh state, nonce and PKCE verifier, and the URL to send the
    /// browser to.
    pub async fn authorize(&self) -> Result<Authorization, OidcError> {
        let d = self.discovery().await?;
        let (state, nonce, verifier) = (random_token(), random_token(), random_token());
        let sep = if d.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!(
            "{}{sep}response_type=code&client_id={}&redirect_uri={}&scope={}&state={}&nonce={}&code_challenge={}&code_challenge_method=S256",
            d.authorization_endpoint,
            crate::percent::encode(&self.cfg.client_id),
            crate::percent::encode(&self.cfg.redirect_url),
            crate::percent::encode(&self.cfg.scopes),
            crate::percent::encode(&state),
            crate::percent::encode(&nonce),
            crate::percent::encode(&challenge(&verifier)),
        );
        Ok(Authorization {
            url,
            state,
            verifier,
            nonce,
        })
    }

    /// Exchanges `code` for tokens and verifies the ID token; who signed in.
    pub async fn finish(&self, code: &str, verifier: &str, nonce: &str) -> Result<Identity, OidcError> {
        #[derive(Deserialize)]
        struct Tokens {
            id_token: String,
        }
        let d = self.discovery().await?;
        if !crate::config::https_or_loopback(&d.token_endpoint) {
            return Err(OidcError::Provider("the token endpoint is not https".into()));
        }
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.cfg.redirect_url.as_str()),
            ("client_id", self.cfg.client_id.as_str()),
            ("code_verifier", verifier),
        ];
        if let Some(s) = &self.secret {
            form.push(("client_secret", s.as_str()));
        }
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{k}={}", crate::percent::encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let r = self
            .http
            .post(&d.token_endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| OidcError::Provider(format!("token endpoint: {e}")))?;
        if !r.status().is_success() {
            return Err(OidcError::Provider(format!("token endpoint: HTTP {}", r.status())));
        }
        let t: Tokens = r
            .json()
            .await
            .map_err(|e| OidcError::Provider(format!("token endpoint: {e}")))?;
        let keys = self.keys_for(&t.id_token).await?;
        verify_id_token(
            &t.id_token,
            &keys,
            &self.cfg.issuer,
            &self.cfg.client_id,
            nonce,
            gantry_core::time::now_ms() / 1000,
        )
    }

    /// The provider's keys, fetched again if the token names a key id not among them.
    async fn keys_for(&self, token: &str) -> Result<Vec<Jwk>, OidcError> {
        let kid = header_of(token)?.kid;
        let mut cache = self.cache.lock().await;
        let known = |keys: &[Jwk]| kid.is_none() || keys.iter().any(|k| k.kid == kid);
        let stale = cache.keys_at.is_none_or(|at| at.elapsed() >= JWKS_REFETCH);
        if cache.keys_at.is_none() || (!known(&cache.keys) && stale) {
            let uri = match &cache.discovery {
                Some(d) => d.jwks_uri.clone(),
                None => return Err(OidcError::Provider("no discovery document".into())),
            };
            drop(cache);
            let jwks: Jwks = self.get_json(&uri).await?;
            cache = self.cache.lock().await;
            cache.keys = jwks.keys;
            cache.keys_at = Some(Instant::now());
        }
        Ok(cache.keys.clone())
    }
}

#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

fn header_of(token: &str) -> Result<Header, OidcError> {
    let h = token
        .split('.')
        .next()
        .ok_or_else(|| OidcError::Token("not a JWT".into()))?;
    serde_json::from_slice(&unb64(h)?).map_err(|_| OidcError::Token("unreadable header".into()))
}

#[derive(Debug, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: serde_json::Value,
    #[serde(default)]
    azp: Option<String>,
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<bool>,
}

/// Verifies a compact JWS signature with `key` (`RS256` or `ES256`).
fn verify_signature(alg: &str, key: &Jwk, signed: &[u8], sig: &[u8]) -> Result<(), OidcError> {
    use ring::signature;
    let bad = || OidcError::Token("the signature does not verify".into());
    match (alg, key.kty.as_str()) {
        ("RS256", "RSA") => {
            let (Some(n), Some(e)) = (&key.n, &key.e) else {
                return Err(OidcError::Token("an RSA key without n and e".into()));
            };
            let (n, e) = (unb64(n)?, unb64(e)?);
            signature::RsaPublicKeyComponents { n: &n, e: &e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, sig)
                .map_err(|_| bad())
        }
        ("ES256", "EC") => {
            let (Some(x), Some(y)) = (&key.x, &key.y) else {
                return Err(OidcError::Token("an EC key without x and y".into()));
            };
            if key.crv.as_deref() != Some("P-256") {
                return Err(OidcError::Token("ES256 needs a P-256 key".into()));
            }
            let mut point = vec![4u8];
            point.extend(unb64(x)?);
            point.extend(unb64(y)?);
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(signed, sig)
                .map_err(|_| bad())
        }
        _ => Err(OidcError::Token(format!(
            "algorithm {alg} with a {} key is not accepted (RS256 or ES256)",
            key.kty
        ))),
    }
}

/// Verifies an ID token: signature by one of `keys`, issuer, audience (and `azp` when there
/// are several), expiry, issue time, nonce; an email that is not marked unverified.
pub fn verify_id_token(
    token: &str,
    keys: &[Jwk],
    issuer: &str,
    client_id: &str,
    nonce: &str,
    now_secs: u64,
) -> Result<Identity, OidcError> {
    let parts: Vec<&str> = token.split('.').collect();
    let [h, p, s] = parts.as_slice() else {
        return Err(OidcError::Token("not a compact JWS".into()));
    };
    let header = header_of(token)?;
    if !matches!(header.alg.as_str(), "RS256" | "ES256") {
        return Err(OidcError::Token(format!(
            "algorithm {} is not accepted (RS256 or ES256)",
            header.alg
        )));
    }
    let want_kty = if header.alg == "RS256" { "RSA" } else { "EC" };
    let key = keys
        .iter()
        .filter(|k| k.kty == want_kty)
        .find(|k| header.kid.is_none() || k.kid == header.kid)
        .ok_or_else(|| OidcError::Token("no key of the provider's matches the token's".into()))?;
    let signed = format!("{h}.{p}");
    verify_signature(&header.alg, key, signed.as_bytes(), &unb64(s)?)?;
    let c: Claims =
        serde_json::from_slice(&unb64(p)?).map_err(|e| OidcError::Token(format!("unreadable claims: {e}")))?;
    if c.iss != issuer {
        return Err(OidcError::Token(format!("issued by {:?}", c.iss)));
    }
    let audiences: Vec<&str> = match &c.aud {
        serde_json::Value::String(a) => vec![a.as_str()],
        serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_str()).collect(),
        _ => vec![],
    };
    if !audiences.contains(&client_id) {
        return Err(OidcError::Token("issued for another client".into()));
    }
    if audiences.len() > 1 && c.azp.as_deref() != Some(client_id) {
        return Err(OidcError::Token("several audiences, and azp is not this client".into()));
    }
    if c.exp + LEEWAY_SECS < now_secs {
        return Err(OidcError::Token("expired".into()));
    }
    if c.iat.is_some_and(|iat| iat > now_secs + LEEWAY_SECS) {
        return Err(OidcError::Token("issued in the future".into()));
    }
    let nonce_ok = c.nonce.as_deref().is_some_and(|n| {
        n.len() == nonce.len() && n.bytes().zip(nonce.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    if !nonce_ok {
        return Err(OidcError::Token("the nonce is not this sign-in's".into()));
    }
    let email = match (c.email, c.email_verified) {
        (Some(_), Some(false)) => return Err(OidcError::Token("the email is not verified".into())),
        (Some(e), _) if !e.is_empty() => e.to_ascii_lowercase(),
        _ => return Err(OidcError::Token("no email claim (ask for the email scope)".into())),
    };
    Ok(Identity { subject: c.sub, email })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7515, appendix A.2: an RS256 JWS and its key.
    const RFC_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
    const RFC_JWS: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";

    fn rsa_key() -> Jwk {
        Jwk {
            kty: "RSA".into(),
            kid: None,
            n: Some(RFC_N.into()),
            e: Some("AQAB".into()),
            crv: None,
            x: None,
            y: None,
        }
    }

    fn split(t: &str) -> (String, Vec<u8>) {
        let (signed, sig) = t.rsplit_once('.').unwrap();
        (signed.to_owned(), unb64(sig).unwrap())
    }

    #[test]
    fn the_rfc_7515_rs256_example_verifies_and_a_changed_byte_does_not() {
        let (signed, sig) = split(RFC_JWS);
        verify_signature("RS256", &rsa_key(), signed.as_bytes(), &sig).unwrap();
        let mut bad = sig.clone();
        bad[10] ^= 1;
        assert!(verify_signature("RS256", &rsa_key(), signed.as_bytes(), &bad).is_err());
        let tampered = signed.replacen('J', "K", 1);
        assert!(verify_signature("RS256", &rsa_key(), tampered.as_bytes(), &sig).is_err());
    }

    #[test]
    fn none_and_hmac_are_never_accepted() {
        let claims = b64(br#"{"iss":"i","sub":"s","aud":"c","exp":9999999999,"nonce":"n","email":"a@b"}"#);
        for alg in ["none", "HS256"] {
            let token = format!("{}.{claims}.", b64(format!(r#"{{"alg":"{alg}"}}"#).as_bytes()));
            let e = verify_id_token(&token, &[rsa_key()], "i", "c", "n", 0).unwrap_err();
            assert!(e.to_string().contains("not accepted"), "{e}");
        }
    }

    #[test]
    fn the_rfc_token_is_refused_for_its_claims_after_its_signature_verifies() {
        // Its signature verifies; its claims (no aud, no nonce, iss "joe") do not pass.
        let e = verify_id_token(RFC_JWS, &[rsa_key()], "joe", "c", "n", 0).unwrap_err();
        assert!(e.to_string().contains("unreadable claims"), "{e}");
    }

    #[test]
    fn the_pkce_challenge_is_rfc_7636s_example() {
        // RFC 7636, appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    /// A P-256 key and a way to sign claims with it, as a provider would.
    fn es256() -> (Jwk, impl Fn(&serde_json::Value) -> String) {
        use ring::rand::SystemRandom;
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let public = pair.public_key().as_ref().to_vec();
        let key = Jwk {
            kty: "EC".into(),
            kid: Some("k1".into()),
            n: None,
            e: None,
            crv: Some("P-256".into()),
            x: Some(b64(&public[1..33])),
            y: Some(b64(&public[33..])),
        };
        let sign = move |claims: &serde_json::Value| {
            let signed = format!(
                "{}.{}",
                b64(br#"{"alg":"ES256","kid":"k1"}"#),
                b64(claims.to_string().as_bytes())
            );
            let sig = pair.sign(&SystemRandom::new(), signed.as_bytes()).unwrap();
            format!("{signed}.{}", b64(sig.as_ref()))
        };
        (key, sign)
    }

    #[test]
    fn an_es256_id_token_is_checked_claim_by_claim() {
        let (key, sign) = es256();
        let good = serde_json::json!({
            "iss": "https://idp", "sub": "u1", "aud": "console", "exp": 2_000, "iat": 1_000,
            "nonce": "n1", "email": "Alice@Example.com", "email_verified": true,
        });
        let check = |claims: &serde_json::Value| {
            verify_id_token(
                &sign(claims),
                std::slice::from_ref(&key),
                "https://idp",
                "console",
                "n1",
                1_500,
            )
        };
        assert_eq!(
            check(&good).unwrap(),
            Identity {
                subject: "u1".into(),
                email: "alice@example.com".into()
            }
        );
        for (field, value, why) in [
            ("iss", serde_json::json!("https://other"), "issued by"),
            ("aud", serde_json::json!("another"), "another client"),
            ("aud", serde_json::json!(["console", "x"]), "azp"),
            ("exp", serde_json::json!(1_000), "expired"),
            ("iat", serde_json::json!(9_000), "future"),
            ("nonce", serde_json::json!("n2"), "nonce"),
            ("email_verified", serde_json::json!(false), "not verified"),
            ("email", serde_json::Value::Null, "no email"),
        ] {
            let mut c = good.clone();
            c[field] = value;
            let e = check(&c).unwrap_err().to_string();
            assert!(e.contains(why), "{field}: {e}");
        }
        // Signed by another key: refused.
        let (_, other) = es256();
        let e = verify_id_token(&other(&good), &[key], "https://idp", "console", "n1", 1_500).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
    }

    #[test]
    fn loopback_http_only() {
        use crate::config::https_or_loopback as ok;
        assert!(ok("https://idp.example.com"));
        assert!(ok("http://127.0.0.1:8080/x"));
        assert!(ok("http://localhost:9/"));
        assert!(ok("http://[::1]:9/"));
        assert!(!ok("http://idp.example.com"));
        assert!(!ok("http://127.0.0.1.evil.example/"));
        assert!(!ok("ftp://127.0.0.1/"));
    }
}
