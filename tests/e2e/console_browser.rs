//! The console in a real browser: Debian's headless Chromium, driven through chromedriver
//! (WebDriver), against a real scheduler and redis-server. An operator types a tenant's key
//! and is refused, types theirs and lands on the overview, sees a new job appear in it live
//! (no reload), pauses a queue by filling in the reason and pressing the button, and signs out. Each page is captured as a screenshot under
//! the target directory; `GANTRY_SCREENSHOTS=docs/console` writes them there instead.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use gantry_testkit::RedisServer;
use serde_json::{Value, json};

/// `chromedriver` on a free port, stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian's chromium-driver; `./run setup` installs it)");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn browser(d: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium",
               "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"]}),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&d.url)
        .await
        .expect("a Chromium session")
}

/// Saves a screenshot of the page as `<name>.png`.
async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    let dir = std::env::var("GANTRY_SCREENSHOTS").map_or_else(
        |_| std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"),
        |d| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(d),
    );
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

fn config() -> String {
    format!(
        r#"
require_data_keys = false
[plans.big]
jobs_per_second = 1000
burst = 1000
[tenants.ops]
plan = "big"
operator = true
api_keys = [{{ sha256 = "{}", scopes = ["admin", "jobs:read"] }}]
[tenants.acme]
plan = "big"
initial_credits = 1000
api_keys = [{{ sha256 = "{}", scopes = ["jobs:write", "jobs:read"] }}]
[prices]
noop = 1
[pools.cpu]
kinds = ["noop", "upscale"]
"#,
        gantry_scheduler::auth::hash_key("key-ops"),
        gantry_scheduler::auth::hash_key("key-acme"),
    )
}

fn noop_paused(addr: &str) -> bool {
    let (_, _, body) = http_request(
        addr,
        "GET",
        "/v1/admin/queues",
        &[("Authorization", "Bearer key-ops")],
        b"",
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    v["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["kind"] == "noop" && q["paused"] == true)
}

/// The element `css` names once the page shows it (a navigation may still be under way).
async fn wait_for(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
}

async fn sign_in_as(c: &Client, base: &str, key: &str) {
    c.goto(&format!("{base}/console")).await.unwrap();
    assert!(c.current_url().await.unwrap().as_str().ends_with("/console/login"));
    let field = c.find(Locator::Css("input#key")).await.unwrap();
    field.send_keys(key).await.unwrap();
    c.find(Locator::Css("form[action='/console/login'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_and_pauses_a_queue_in_a_real_browser() {
    let redis = RedisServer::start().expect("redis");
    let sched = SchedulerProcess::with_config(&redis.url(), &config());
    let base = format!("http://{}", sched.addr);
    // Something waiting, so the overview has numbers.
    for _ in 0..3 {
        let (s, _, body) = http_request(
            &sched.addr,
            "POST",
            "/v1/jobs",
            &[
                ("Authorization", "Bearer key-acme"),
                ("Content-Type", "application/json"),
            ],
            br#"{"user": "u1", "kind": "noop", "payload": {}}"#,
        );
        assert_eq!(s, 201, "{body}");
    }
    let d = chromedriver();
    let c = browser(&d).await;

    // A tenant's key: refused, on the sign-in page, saying why.
    sign_in_as(&c, &base, "key-acme").await;
    let alert = wait_for(&c, "[role=alert]").await.text().await.unwrap();
    assert!(alert.contains("not an operator"), "{alert}");
    screenshot(&c, "sign-in-refused").await;

    // The operator's key: the overview.
    sign_in_as(&c, &base, "key-ops").await;
    let row = wait_for(&c, "tr[data-queue='cpu/noop']").await.text().await.unwrap();
    assert!(c.current_url().await.unwrap().as_str().ends_with("/console"));
    assert!(row.contains("noop") && row.contains('3'), "{row}");
    screenshot(&c, "overview").await;

    // Live: a job submitted now shows up in the open page without a reload.
    let (st, _, body) = http_request(
        &sched.addr,
        "POST",
        "/v1/jobs",
        &[
            ("Authorization", "Bearer key-acme"),
            ("Content-Type", "application/json"),
        ],
        br#"{"user": "u1", "kind": "noop", "payload": {}}"#,
    );
    assert_eq!(st, 201, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let normal = c
            .find(Locator::Css("tr[data-queue='cpu/noop'] [data-field='normal']"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if normal == "4" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the overview did not update live: {normal}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stamp = c.find(Locator::Css("#live-stamp")).await.unwrap().text().await.unwrap();
    assert!(stamp.starts_with("Live: updated"), "{stamp}");

    // Pause with a reason, as a person would: type it, press the button.
    c.find(Locator::Css("input#reason-cpu-noop"))
        .await
        .unwrap()
        .send_keys("draining node 7")
        .await
        .unwrap();
    c.find(Locator::Css("form[action='/console/queues/cpu/noop/pause'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let state = wait_for(&c, "tr[data-queue='cpu/noop'] .paused")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(state, "paused");
    assert!(noop_paused(&sched.addr));
    screenshot(&c, "overview-paused").await;

    // Sign out: back to the sign-in page, and the overview is closed again.
    c.find(Locator::Css("form[action='/console/logout'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&c, "input#key").await;
    assert!(c.current_url().await.unwrap().as_str().ends_with("/console/login"));
    c.goto(&format!("{base}/console")).await.unwrap();
    assert!(c.current_url().await.unwrap().as_str().ends_with("/console/login"));
    c.close().await.unwrap();
}
