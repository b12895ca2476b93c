//! An OpenID Connect identity provider on loopback, for the console's sign-in tests: discovery,
//! an authorization page with a "sign in" button (the person signing in is whoever the test
//! says), a token endpoint that checks the PKCE verifier against the challenge and issues an
//! ES256-signed ID token, and its JWKS. Codes work once, for one client and redirect URI.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

struct Grant {
    challenge: String,
    nonce: String,
    redirect_uri: String,
    email: String,
}

struct Inner {
    issuer: String,
    client_id: String,
    key: EcdsaKeyPair,
    codes: Mutex<HashMap<String, Grant>>,
    email: Mutex<String>,
    /// Token requests whose verifier matched the code's challenge.
    verified: Mutex<u32>,
    /// Token requests refused (wrong verifier, reused code…).
    refused: Mutex<u32>,
}

/// The provider; it stops with the test's runtime.
#[derive(Clone)]
pub struct Idp {
    inner: Arc<Inner>,
    /// Its issuer URL, `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Idp {
    /// Starts one for `client_id`; whoever signs in is `email` until [`Idp::sign_in_as`].
    pub async fn start(client_id: &str, email: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let inner = Arc::new(Inner {
            issuer: url.clone(),
            client_id: client_id.to_owned(),
            key,
            codes: Mutex::default(),
            email: Mutex::new(email.to_owned()),
            verified: Mutex::new(0),
            refused: Mutex::new(0),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/authorize", get(authorize))
            .route("/approve", post(approve))
            .route("/token", post(token))
            .route("/jwks", get(jwks))
            .with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { inner, url }
    }

    /// Whoever signs in from now on.
    pub fn sign_in_as(&self, email: &str) {
        *self.inner.email.lock().unwrap() = email.to_owned();
    }

    /// Token requests that proved the PKCE verifier, and those refused.
    pub fn token_requests(&self) -> (u32, u32) {
        (
            *self.inner.verified.lock().unwrap(),
            *self.inner.refused.lock().unwrap(),
        )
    }
}

async fn discovery(State(i): State<Arc<Inner>>) -> Json<Value> {
    Json(json!({
        "issuer": i.issuer,
        "authorization_endpoint": format!("{}/authorize", i.issuer),
        "token_endpoint": format!("{}/token", i.issuer),
        "jwks_uri": format!("{}/jwks", i.issuer),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The sign-in page: checks the request, then asks the person to press a button.
async fn authorize(State(i): State<Arc<Inner>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    if get("response_type") != "code"
        || get("client_id") != i.client_id
        || get("code_challenge_method") != "S256"
        || get("code_challenge").len() != 43
        || !get("scope").split(' ').any(|s| s == "openid")
        || get("state").is_empty()
        || get("nonce").is_empty()
    {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    }
    let email = i.email.lock().unwrap().clone();
    let hidden: String = ["redirect_uri", "state", "nonce", "code_challenge"]
        .iter()
        .map(|k| format!(r#"<input type="hidden" name="{k}" value="{}">"#, escape(&get(k))))
        .collect();
    Html(format!(
        r#"<!doctype html><html lang="en"><head><title>Test IdP</title></head><body><main><h1>Test identity provider</h1>
<form method="post" action="/approve">{hidden}<button id="approve" type="submit">Sign in as {}</button></form></main></body></html>"#,
        escape(&email)
    ))
    .into_response()
}

async fn approve(State(i): State<Arc<Inner>>, Form(f): Form<HashMap<String, String>>) -> Response {
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let mut code = [0u8; 16];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut code).unwrap();
    let code = b64(&code);
    let redirect_uri = get("redirect_uri");
    i.codes.lock().unwrap().insert(
        code.clone(),
        Grant {
            challenge: get("code_challenge"),
            nonce: get("nonce"),
            redirect_uri: redirect_uri.clone(),
            email: i.email.lock().unwrap().clone(),
        },
    );
    let state: String = get("state");
    Redirect::to(&format!("{redirect_uri}?code={code}&state={state}")).into_response()
}

async fn token(State(i): State<Arc<Inner>>, Form(f): Form<HashMap<String, String>>) -> Response {
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let grant = i.codes.lock().unwrap().remove(&get("code"));
    let refuse = |why: &str| {
        *i.refused.lock().unwrap() += 1;
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": why})),
        )
            .into_response()
    };
    let Some(g) = grant else {
        return refuse("unknown or used code");
    };
    if get("grant_type") != "authorization_code" || get("client_id") != i.client_id {
        return refuse("bad grant type or client");
    }
    if get("redirect_uri") != g.redirect_uri {
        return refuse("redirect_uri differs");
    }
    if b64(&Sha256::digest(get("code_verifier").as_bytes())) != g.challenge {
        return refuse("PKCE verifier does not match the challenge");
    }
    *i.verified.lock().unwrap() += 1;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "iss": i.issuer, "sub": format!("sub-{}", g.email), "aud": i.client_id,
        "iat": now, "exp": now + 300, "nonce": g.nonce,
        "email": g.email, "email_verified": true,
    });
    let signed = format!(
        "{}.{}",
        b64(br#"{"alg":"ES256","kid":"test-1","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let sig = i.key.sign(&SystemRandom::new(), signed.as_bytes()).unwrap();
    Json(json!({
        "access_token": "unused", "token_type": "Bearer", "expires_in": 300,
        "id_token": format!("{signed}.{}", b64(sig.as_ref())),
    }))
    .into_response()
}

async fn jwks(State(i): State<Arc<Inner>>) -> Json<Value> {
    let p = i.key.public_key().as_ref();
    Json(json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "test-1", "use": "sig", "alg": "ES256",
        "x": b64(&p[1..33]), "y": b64(&p[33..]),
    }]}))
}
