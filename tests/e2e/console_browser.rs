//! The console in a real browser: Debian's headless Chromium, driven through chromedriver
//! (WebDriver), against a real scheduler and redis-server. An operator types a tenant's key
//! and is refused, types theirs and lands on the overview, sees a new job appear in it live
//! (no reload), pauses a queue by filling in the reason and pressing the button, and signs out. Each page is captured as a screenshot under
//! the target directory; `GANTRY_SCREENSHOTS=docs/console` writes them there instead.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::console::{audit_entries, config, dead_letter_count, noop_paused};
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use gantry_testkit::RedisServer;
use serde_json::{Value, json};

/// `chromedriver` on a free port, stopped on drop.
pub(crate) struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn chromedriver() -> Driver {
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

pub(crate) async fn browser(d: &Driver) -> Client {
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
pub(crate) async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    let dir = std::env::var("GANTRY_SCREENSHOTS").map_or_else(
        |_| std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"),
        |d| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(d),
    );
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// axe-core (Deque's accessibility rules, MPL-2.0), the copy the `axe-playwright-python`
/// wheel on PyPI ships, fetched once into the target directory (no Node.js).
fn axe_core() -> String {
    const WHEEL: &str = "axe-playwright-python==0.1.8";
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("axe-core");
    let js = dir.join("axe.min.js");
    if let Ok(s) = std::fs::read_to_string(&js) {
        return s;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let pip = python_tool("axe-venv", &["pip"], "pip");
    let o = Command::new(&pip)
        .args(["download", "-q", "--no-deps", "--only-binary=:all:", WHEEL, "-d"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "pip download {WHEEL}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let wheel = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .unwrap();
    let o = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('axe_playwright_python/axe.min.js'))",
        ])
        .arg(&wheel)
        .arg(&js)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "unzip axe.min.js: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read_to_string(&js).unwrap()
}

/// Runs axe-core's WCAG 2 A and AA rules on the page in the browser (contrast, labels, names,
/// landmarks…) and fails the test on any violation, naming the rule and the elements.
pub(crate) async fn assert_accessible(c: &Client, page: &str) {
    static AXE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let axe = AXE.get_or_init(axe_core);
    c.execute(&format!("{axe}\n;return true;"), vec![]).await.unwrap();
    let found = c
        .execute_async(
            r#"var done = arguments[arguments.length - 1];
               axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}})
                 .then(function (r) { done({passes: r.passes.length, violations: r.violations.map(function (v) {
                    return v.id + " (" + v.impact + "): " + v.nodes.map(function (n) { return n.target.join(" "); }).join(", ");
                 })}); })
                 .catch(function (e) { done({passes: 0, violations: ["axe failed: " + e]}); });"#,
            vec![],
        )
        .await
        .unwrap();
    let violations: Vec<String> = serde_json::from_value(found["violations"].clone()).unwrap();
    assert!(
        violations.is_empty(),
        "{page}: accessibility violations:\n{}",
        violations.join("\n")
    );
    // The rules ran (color-contrast, label, button-name… each passing is counted).
    assert!(
        found["passes"].as_u64().unwrap_or(0) >= 5,
        "{page}: axe checked too little: {found}"
    );
}

/// The element `css` names once the page shows it (a navigation may still be under way).
pub(crate) async fn wait_for(c: &Client, css: &str) -> fantoccini::elements::Element {
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
    assert_accessible(&c, "sign-in").await;

    // The operator's key: the overview.
    sign_in_as(&c, &base, "key-ops").await;
    let row = wait_for(&c, "tr[data-queue='cpu/noop']").await.text().await.unwrap();
    assert!(c.current_url().await.unwrap().as_str().ends_with("/console"));
    assert!(row.contains("noop") && row.contains('3'), "{row}");
    assert_accessible(&c, "overview").await;

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

    // A form whose CSRF token is gone (as a forged one would be): refused, nothing paused.
    c.execute(
        "document.querySelector(\"form[action='/console/queues/cpu/noop/pause'] input[name='csrf']\").remove(); return true;",
        vec![],
    )
    .await
    .unwrap();
    c.find(Locator::Css("input#reason-cpu-noop"))
        .await
        .unwrap()
        .send_keys("forged")
        .await
        .unwrap();
    click_css(&c, "form[action='/console/queues/cpu/noop/pause'] button").await;
    let alert = wait_text(&c, "[role=alert]", "403").await;
    assert!(alert.contains("CSRF"), "{alert}");
    assert!(!noop_paused(&sched.addr));
    c.goto(&format!("{base}/console")).await.unwrap();
    wait_for(&c, "tr[data-queue='cpu/noop']").await;

    // Pause with a reason, as a person would, with the keyboard alone: Tab to the reason
    // field, type it, Tab to the button, press Enter.
    let mut focused = false;
    for _ in 0..80 {
        let el = c.active_element().await.unwrap();
        if el.attr("id").await.unwrap().as_deref() == Some("reason-cpu-noop") {
            focused = true;
            break;
        }
        el.send_keys(&fantoccini::key::Key::Tab.to_string()).await.unwrap();
    }
    assert!(focused, "the reason field is reachable with Tab");
    let field = c.active_element().await.unwrap();
    field.send_keys("draining node 7").await.unwrap();
    field.send_keys(&fantoccini::key::Key::Tab.to_string()).await.unwrap();
    let button = c.active_element().await.unwrap();
    assert_eq!(
        button.text().await.unwrap(),
        "pause cpu/noop",
        "Tab moves on to the button"
    );
    button
        .send_keys(&fantoccini::key::Key::Enter.to_string())
        .await
        .unwrap();
    let state = wait_for(&c, "tr[data-queue='cpu/noop'] .paused")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(state, "paused");
    assert!(noop_paused(&sched.addr));
    assert_accessible(&c, "overview, paused").await;

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

async fn click_css(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
}

/// The text of the element `css` names, once it holds `want` (15 s at most).
async fn wait_text(c: &Client, css: &str, want: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(want) {
            return text;
        }
        assert!(std::time::Instant::now() < deadline, "{css}: {text:?}, not {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Through the operator's single sign-on: an identity provider on loopback (authorization code
/// + PKCE); an admin, a reader, and someone not listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_sign_in_through_openid_connect_in_a_real_browser() {
    use common::idp::Idp;
    let redis = RedisServer::start().expect("redis");
    let idp = Idp::start("gantry-console", "alice@example.com").await;
    let issuer = idp.url.clone();
    let sched = SchedulerProcess::with_config_for_addr(&redis.url(), |addr| {
        format!(
            r#"{}
[console.oidc]
issuer = "{issuer}"
client_id = "gantry-console"
redirect_url = "http://{addr}/console/oidc/callback"
tenant = "ops"
admins = ["alice@example.com"]
readers = ["bob@example.com"]
"#,
            config()
        )
    });
    let base = format!("http://{}", sched.addr);
    let d = chromedriver();
    let c = browser(&d).await;
    let via_sso = |who: &'static str| {
        let (c, base, idp) = (&c, &base, &idp);
        async move {
            idp.sign_in_as(who);
            c.goto(&format!("{base}/console/login")).await.unwrap();
            click_css(c, "a[href='/console/oidc/start']").await;
            // The provider's page: press its button.
            wait_for(c, "#approve").await;
            click_css(c, "#approve").await;
        }
    };

    via_sso("alice@example.com").await;
    let who = wait_text(&c, "header .who", "alice@example.com").await;
    assert_eq!(who, "ops/oidc:alice@example.com");
    assert!(c.current_url().await.unwrap().as_str().ends_with("/console"));
    assert_eq!(
        idp.token_requests(),
        (1, 0),
        "one code exchanged, with the PKCE verifier"
    );
    screenshot(&c, "sign-in-sso").await;
    let audit = audit_entries(&sched.addr);
    assert!(
        audit.iter().any(|e| e["action"] == "console.sign_in"
            && e["actor"] == "ops/oidc:alice@example.com"
            && e["details"]["with"] == "oidc"),
        "{audit:#?}"
    );
    click_css(&c, "form[action='/console/logout'] button").await;
    wait_for(&c, "input#key").await;

    // A reader: signed in, read-only.
    via_sso("bob@example.com").await;
    let who = wait_text(&c, "header .who", "bob@example.com").await;
    assert!(who.contains("(read-only)"), "{who}");
    // The read-only scope sees the queues and has nothing to act with.
    wait_for(&c, "tr[data-queue='cpu/noop']").await;
    assert!(c.find(Locator::Css("form[action$='/pause']")).await.is_err());
    c.goto(&format!("{base}/console/dead-letters")).await.unwrap();
    wait_for(&c, "#dead-total").await;
    assert!(
        c.find(Locator::Css("form[action='/console/dead-letters/preview']"))
            .await
            .is_err()
    );
    click_css(&c, "form[action='/console/logout'] button").await;
    wait_for(&c, "input#key").await;

    // Someone the provider knows but this console does not: refused, no session.
    via_sso("mallory@example.com").await;
    let alert = wait_text(&c, "[role=alert]", "not an operator").await;
    assert!(alert.contains("mallory@example.com"), "{alert}");
    c.goto(&format!("{base}/console")).await.unwrap();
    assert!(c.current_url().await.unwrap().as_str().ends_with("/console/login"));
    c.close().await.unwrap();

    // A return that did not begin in this browser (no state cookie), or a made-up state: refused.
    let (s, _, _) = http_request(&sched.addr, "GET", "/console/oidc/callback?code=x&state=y", &[], b"");
    assert_eq!(s, 403);
    let (s, _, _) = http_request(
        &sched.addr,
        "GET",
        "/console/oidc/callback?code=x&state=y",
        &[("Cookie", "gantry_console_oidc=y")],
        b"",
    );
    assert_eq!(s, 403, "a state that was never issued");
}

/// A person on call: finds a dead job by its error class, opens it, replays it and watches it
/// succeed on its page; then purges the rest of a filter after the dry-run count, following
/// the progress. Each page passes axe-core's checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_job_is_found_replayed_live_and_the_rest_purged_in_a_real_browser() {
    let redis = RedisServer::start().expect("redis");
    let sched = SchedulerProcess::with_config(&redis.url(), &config());
    let base = format!("http://{}", sched.addr);
    let logs = tempfile::tempdir().unwrap();
    let _w = WorkerProcess::start_in(&redis.url(), "cpu", "w-cpu", 4, 10.0, &["--gpus", "none"], logs.path());
    let until = now_ms() + 4_000;
    let submit = |class: &str| {
        let body = json!({"user": "u1", "kind": "noop", "max_attempts": 1,
            "payload": {"fail_until_unix_ms": until, "fail_class": class}});
        let (s, _, r) = http_request(
            &sched.addr,
            "POST",
            "/v1/jobs",
            &[
                ("Authorization", "Bearer key-acme"),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        );
        assert_eq!(s, 201, "{r}");
        serde_json::from_str::<Value>(&r).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let wanted = submit("permanent");
    let rest = [submit("retryable"), submit("retryable")];
    let dead = || dead_letter_count(&sched.addr);
    eventually("three dead letters", Duration::from_secs(20), || {
        let n = dead();
        async move { n == 3 }
    })
    .await;

    let d = chromedriver();
    let c = browser(&d).await;
    sign_in_as(&c, &base, "key-ops").await;
    wait_for(&c, "tr[data-queue='cpu/noop']").await;
    c.goto(&format!("{base}/console/dead-letters")).await.unwrap();
    wait_text(&c, "#dead-total", "3 dead letters match").await;
    // Filter by error class, as a person would: choose it, press Filter.
    c.find(Locator::Css("select#f-class"))
        .await
        .unwrap()
        .select_by_value("permanent")
        .await
        .unwrap();
    click_css(&c, "form.filters button").await;
    wait_text(&c, "#dead-total", "1 dead letters match").await;
    assert!(c.find(Locator::Css(&format!("tr[data-job='{wanted}']"))).await.is_ok());
    assert_accessible(&c, "dead letters").await;
    click_css(&c, &format!("tr[data-job='{wanted}'] a")).await;
    wait_text(&c, "#job-status", "dead").await;
    assert_accessible(&c, "job").await;

    // The outage is over: replay, and watch it succeed on the page it lands on.
    tokio::time::sleep(Duration::from_millis(until.saturating_sub(now_ms()) + 200)).await;
    click_css(&c, &format!("form[action='/console/jobs/{wanted}/replay'] button")).await;
    wait_text(&c, "#live-stamp", "Live").await;
    wait_text(&c, "#job-status", "succeeded").await;
    // Then (the page reloads itself once the job ends) the timeline shows the replay.
    wait_text(&c, "ol.timeline", "replayed").await;

    // The other two: all matching, the count first, then the confirmed purge and its progress.
    c.goto(&format!("{base}/console/dead-letters?class=retryable"))
        .await
        .unwrap();
    wait_text(&c, "#dead-total", "2 dead letters match").await;
    click_css(&c, "button[name='action'][value='purge']:not([form])").await;
    let would = wait_text(&c, "#would", "purge").await;
    assert!(would.contains("This would purge 2 dead letters"), "{would}");
    assert_eq!(dead(), 2, "the count changes nothing");
    assert_accessible(&c, "confirm").await;
    click_css(&c, "form[action='/console/dead-letters/act'] button").await;
    let done = wait_text(&c, "#bulk-state", "Done").await;
    assert!(done.contains("purge 2 of the 2 counted"), "{done}");
    assert_accessible(&c, "bulk progress").await;
    assert_eq!(dead(), 0);
    for id in &rest {
        let (s, _, _) = http_request(
            &sched.addr,
            "GET",
            &format!("/v1/jobs/{id}"),
            &[("Authorization", "Bearer key-acme")],
            b"",
        );
        assert_eq!(s, 404, "purged");
    }
    c.close().await.unwrap();
}

/// Every page of the console on a running fleet (the demo's): signs in through `sign_in_link`
/// (a one-time link), then opens each page as an operator would, checks it with axe-core and
/// saves a screenshot of it (`docs/console/` with `GANTRY_SCREENSHOTS=docs/console`).
/// `pipeline`: a pipeline whose step's page shows the graph; `tenant`: the tenant whose page
/// is shown.
pub(crate) async fn tour(sign_in_link: &str, pipeline: Option<&str>, tenant: &str) {
    let base = sign_in_link.split("/console").next().unwrap().to_owned();
    let d = chromedriver();
    let c = browser(&d).await;
    c.goto(sign_in_link).await.unwrap();
    wait_for(&c, "[data-live-overview]").await;
    wait_text(&c, "#live-stamp", "Live").await;
    let visit = |path: String, ready: &'static str, name: &'static str| {
        let (c, base) = (&c, &base);
        async move {
            c.goto(&format!("{base}{path}")).await.unwrap();
            wait_for(c, ready).await;
            assert_accessible(c, name).await;
            screenshot(c, name).await;
        }
    };
    visit("/console".into(), "tr[data-queue]", "overview").await;
    // Throughput and failure rate over the last hour, from the jobs the demo ran.
    let hour = wait_text(&c, "[data-pool-hour='cpu']", "succeeded").await;
    assert!(
        !hour.starts_with("0 finished") && !hour.contains(" 0 succeeded"),
        "{hour}"
    );
    assert!(hour.contains("% failed"), "{hour}");
    visit("/console/workers".into(), "tr[data-worker]", "workers").await;
    visit("/console/jobs".into(), "tr[data-job]", "jobs").await;
    if let Some(p) = pipeline {
        c.goto(&format!("{base}/console/jobs?pipeline={p}")).await.unwrap();
        // The last step listed is the newest: the pipeline's end.
        let link = wait_for(&c, "tr[data-job] a")
            .await
            .attr("href")
            .await
            .unwrap()
            .unwrap();
        visit(link, "figure.graph svg", "job-pipeline").await;
    }
    visit("/console/dead-letters".into(), "#dead-total", "dead-letters").await;
    visit("/console/safety".into(), "#hashlists", "safety").await;
    // A user whose content matched: their trust standing, from the moderation events.
    let trust = c
        .find(Locator::Css("tr[data-event] a[href^='/console/safety/trust']"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    visit(trust, "#trust-score", "trust").await;
    visit("/console/tenants".into(), "tr[data-tenant]", "tenants").await;
    visit(format!("/console/tenants/{tenant}"), "figure.chart svg", "tenant").await;
    visit("/console/audit".into(), "tr[data-action]", "audit").await;
    c.close().await.unwrap();
}
