//! The SDKs' own test suites against a live fleet on loopback: redis-server, the mock
//! providers, the scheduler (allowing one loopback webhook receiver) and a worker. Python:
//! pytest in a venv with the SDK installed from `sdk/python`; its quick start runs as written.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::*;

struct LiveFleet {
    _redis: gantry_testkit::RedisServer,
    _mock: MockProvidersProcess,
    sched: SchedulerProcess,
    _worker: WorkerProcess,
    _dir: tempfile::TempDir,
    /// A port the scheduler may deliver webhooks to (on 127.0.0.1).
    webhook_port: u16,
}

fn live_fleet() -> LiveFleet {
    let redis = gantry_testkit::RedisServer::start().unwrap();
    let mock = MockProvidersProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("outputs");
    let out = out.to_str().unwrap();
    let webhook_port = gantry_testkit::free_port();
    let allow = format!("127.0.0.1:{webhook_port}");
    let sched = SchedulerProcess::start_with(
        &redis.url(),
        None,
        &["--outputs", out, "--webhook-allow", &allow],
        Some(&dir.path().join("scheduler.log")),
    );
    let worker = WorkerProcess::start(
        &redis.url(),
        "sdk",
        8,
        10.0,
        &["--gpus", "none", "--mock-providers", &mock.url(), "--outputs", out],
        dir.path(),
    );
    LiveFleet {
        _redis: redis,
        _mock: mock,
        sched,
        _worker: worker,
        _dir: dir,
        webhook_port,
    }
}

fn sdk_dir(lang: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk").join(lang)
}

#[test]
fn the_python_sdk_passes_its_suite_against_a_live_fleet() {
    let f = live_fleet();
    let sdk = sdk_dir("python");
    let spec = format!("{}[test]", sdk.display());
    let pytest = python_tool("sdk-python-venv", &["-e", &spec], "pytest");
    let base = format!("http://{}", f.sched.addr);
    let o = Command::new(&pytest)
        .arg("-q")
        .arg("-p")
        .arg("no:cacheprovider")
        .arg(sdk.join("tests"))
        .env("GANTRY_URL", &base)
        .env("GANTRY_WEBHOOK_PORT", f.webhook_port.to_string())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "pytest failed:\n{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let summary = out.lines().rev().find(|l| l.contains(" passed")).unwrap_or_default();
    eprintln!("python sdk: {summary}");
    assert!(!summary.contains("skipped"), "every test ran: {summary}");
    let passed: usize = summary
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 11, "{summary}");

    // The README's quick start, as written.
    let python = pytest.with_file_name("python");
    let cwd = tempfile::tempdir().unwrap();
    let o = Command::new(&python)
        .arg(sdk.join("examples/quickstart.py"))
        .current_dir(cwd.path())
        .env("GANTRY_URL", &base)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "quickstart: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.starts_with("succeeded "), "{out}");
    let png = std::fs::read(cwd.path().join("kite.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
}

/// `cmd` in `dir`, which must succeed; its stdout.
fn run_in(dir: &Path, cmd: &mut Command, what: &str) -> String {
    let o = cmd.current_dir(dir).output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{what} failed:\n{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

#[test]
fn the_typescript_sdk_passes_its_suite_against_a_live_fleet() {
    let f = live_fleet();
    let sdk = sdk_dir("typescript");
    // The pinned compiler from the lock file, then the package's own build.
    run_in(
        &sdk,
        Command::new("npm").args(["ci", "--no-audit", "--no-fund"]),
        "npm ci",
    );
    run_in(&sdk, Command::new("npm").args(["run", "build"]), "npm run build");
    let base = format!("http://{}", f.sched.addr);
    let out = run_in(
        &sdk,
        Command::new("node")
            .args(["--test", "--test-reporter=spec", "test/"])
            .env("GANTRY_URL", &base)
            .env("GANTRY_WEBHOOK_PORT", f.webhook_port.to_string()),
        "node --test",
    );
    let count = |label: &str| {
        out.lines()
            .find_map(|l| l.trim_start_matches(['ℹ', ' ', '#']).strip_prefix(label))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    };
    eprintln!("typescript sdk: {} passed", count("pass "));
    assert!(count("pass ") >= 10 && count("pass ") != usize::MAX, "{out}");
    assert_eq!((count("fail "), count("skipped ")), (0, 0), "{out}");

    // The README's quick start, as written (the package resolves itself by name).
    let cwd = tempfile::tempdir().unwrap();
    let out = run_in(
        cwd.path(),
        Command::new("node")
            .arg(sdk.join("examples/quickstart.mjs"))
            .env("GANTRY_URL", &base),
        "the quick start",
    );
    assert!(out.starts_with("succeeded "), "{out}");
    let png = std::fs::read(cwd.path().join("kite.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
}
