//! Schemathesis (from PyPI) fuzzes the scheduler from its own `/openapi.json` with every check
//! (`--checks all`), once with an operator's key and once with an ordinary tenant's: every
//! operation, with generated valid and invalid input, must answer without a 5xx, with a
//! documented status code, content type and body; a request the document allows must be
//! accepted (or refused only as `scheduler/schemathesis.toml` says: 402, 413, 422), one it does
//! not must be refused; a 405 must say `Allow`; the stateful phase follows the document's links.
//! Real redis-server, the scheduler as a process; schemathesis is installed into a venv under
//! the cargo target directory on first use.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use gantry_testkit::RedisServer;

const SCHEMATHESIS: &str = "schemathesis==4.32.5";

fn config(outputs: &std::path::Path) -> String {
    format!(
        r#"
outputs = "{}"
# a test's development configuration: no data keys
require_data_keys = false
[plans.big]
jobs_per_second = 100000
burst = 100000
[tenants.ops]
plan = "big"
operator = true
initial_credits = 1000000000
api_keys = [{{ sha256 = "{}", scopes = ["admin", "jobs:write", "jobs:read", "safety:review", "safety:evidence"] }}]
[tenants.acme]
plan = "big"
initial_credits = 1000000000
api_keys = [{{ sha256 = "{}", scopes = ["jobs:write", "jobs:read"] }}]
[prices]
noop = 1
[providers.openai]
jurisdictions = ["US"]
models."gpt-image-1" = {{ class = "image", price = {{ per = "image", credits = 40 }} }}
[pools.cpu]
kinds = ["noop", "generate", "upscale", "transcode", "csam_hash"]
"#,
        outputs.display(),
        gantry_scheduler::auth::hash_key("key-ops"),
        gantry_scheduler::auth::hash_key("key-acme")
    )
}

/// `st` from a venv under the target directory, installed on first use.
fn schemathesis() -> PathBuf {
    python_tool("tools-venv", &[SCHEMATHESIS], "st")
}

#[test]
fn schemathesis_with_every_check_finds_nothing_for_an_operator_or_a_tenant() {
    let st = schemathesis();
    let redis = RedisServer::start().expect("redis");
    // An output store, so the erasure route runs for real (on user ids that own nothing).
    let outputs = tempfile::tempdir().expect("tmp");
    let sched = SchedulerProcess::with_config(&redis.url(), &config(outputs.path()));
    let base = format!("http://{}", sched.addr);
    // 30 examples an operation in CI; `GANTRY_FUZZ_EXAMPLES=500` for a deeper search by hand.
    let examples = std::env::var("GANTRY_FUZZ_EXAMPLES").unwrap_or_else(|_| "30".into());
    // A fixed seed in CI, so a run is repeatable; `GANTRY_FUZZ_SEED` for another search.
    let seed = std::env::var("GANTRY_FUZZ_SEED").unwrap_or_else(|_| "20261207".into());
    let settings = concat!(env!("CARGO_MANIFEST_DIR"), "/scheduler/schemathesis.toml");
    for key in ["key-ops", "key-acme"] {
        let o = Command::new(&st)
            .args(["--config-file", settings])
            .args(["run", &format!("{base}/openapi.json"), "--url", &base])
            .args(["--header", &format!("Authorization: Bearer {key}")])
            .args(["--checks", "all"])
            .args(["--max-examples", &examples, "--request-timeout", "10", "--seed", &seed])
            // The two event streams never end by themselves (Server-Sent Events): a fuzzer's
            // request to them would only time out. tests/e2e/events.rs covers them.
            .args([
                "--exclude-operation-id",
                "streamEvents",
                "--exclude-operation-id",
                "streamJobEvents",
            ])
            .env("NO_COLOR", "1")
            // Its crash cache (`.schemathesis/`) goes to the test's own directory, not the checkout.
            .current_dir(outputs.path())
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "schemathesis found problems with {key}:\n{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let summary = out.lines().find(|l| l.contains(" generated, ")).unwrap_or_default();
        eprintln!("schemathesis ({key}): {}", summary.trim());
        // 32: /metrics left the API for the metrics listener; output downloads, trust
        // administration (two operations), the event streams (two, not fuzzed), webhooks (nine)
        // job search (two), pipelines (three), users' data exports (two) and trust and safety's
        // cases (twelve: reviews, reports, evidence, category policies) joined.
        assert!(
            out.contains("Selected: 47/49"),
            "every operation but the streams was tested:\n{out}"
        );
    }
}
