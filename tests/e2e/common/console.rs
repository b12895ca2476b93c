//! The operator console over HTTP as a browser talks to it: a configuration with an operator
//! (`key-ops`, `admin`), a read-only operator (`key-ro`) and a tenant (`key-acme`); requests
//! with the session cookie and the page's own origin; sign-in; the CSRF token of a page.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use super::http_request;

/// The scheduler's configuration for console tests.
pub fn config() -> String {
    format!(
        r#"
require_data_keys = false
[plans.big]
jobs_per_second = 1000
burst = 1000
[tenants.ops]
plan = "big"
operator = true
api_keys = [
  {{ sha256 = "{}", scopes = ["admin", "jobs:read"] }},
  {{ sha256 = "{}", scopes = ["admin:read"] }},
]
[tenants.acme]
plan = "big"
initial_credits = 1000
api_keys = [{{ sha256 = "{}", scopes = ["jobs:write", "jobs:read"] }}]
[pools.cpu]
kinds = ["noop", "upscale"]
"#,
        gantry_scheduler::auth::hash_key("key-ops"),
        gantry_scheduler::auth::hash_key("key-ro"),
        gantry_scheduler::auth::hash_key("key-acme"),
    )
}

/// A browser-like request: `cookie` and a same-origin `Origin` on POSTs (`origin` overrides).
pub fn send(
    addr: &str,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: &str,
    origin: Option<&str>,
) -> (u16, String, String) {
    let own = format!("http://{addr}");
    let mut headers: Vec<(&str, String)> = vec![("Content-Type", "application/x-www-form-urlencoded".into())];
    if let Some(c) = cookie {
        headers.push(("Cookie", format!("gantry_console={c}")));
    }
    if method == "POST" {
        headers.push(("Origin", origin.unwrap_or(&own).to_owned()));
    }
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    http_request(addr, method, path, &h, form.as_bytes())
}

pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// Signs in with `key`; the session token.
pub fn sign_in(addr: &str, key: &str) -> String {
    let (s, head, body) = send(addr, "POST", "/console/login", None, &format!("key={key}"), None);
    assert_eq!(s, 303, "{head}\n{body}");
    let cookie = header(&head, "set-cookie").unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned()
}

pub fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().unwrap().to_owned()
}

/// Whether the `cpu/noop` queue is paused, as the admin API says.
pub fn noop_paused(addr: &str) -> bool {
    let (_, _, body) = http_request(
        addr,
        "GET",
        "/v1/admin/queues",
        &[("Authorization", "Bearer key-ops")],
        b"",
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["pool"] == "cpu" && q["kind"] == "noop" && q["paused"] == true)
}

/// How many dead letters the admin API lists (its first page).
pub fn dead_letter_count(addr: &str) -> usize {
    let (_, _, body) = http_request(
        addr,
        "GET",
        "/v1/admin/dead-letters",
        &[("Authorization", "Bearer key-ops")],
        b"",
    );
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["dead_letters"]
        .as_array()
        .unwrap()
        .len()
}

/// The audit log's newest entries, as the admin API lists them.
pub fn audit_entries(addr: &str) -> Vec<serde_json::Value> {
    let (_, _, body) = http_request(
        addr,
        "GET",
        "/v1/admin/audit",
        &[("Authorization", "Bearer key-ops")],
        b"",
    );
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["audit"]
        .as_array()
        .unwrap()
        .clone()
}
