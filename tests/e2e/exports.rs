//! A user's data, exported on request, through real processes: a scheduler and a worker that
//! share data keys (so prompts are sealed in Redis), the mock providers, a directory store. A
//! user of `studio-42` generates an image, runs a generate→upscale pipeline and has a job that
//! dies; another user and another tenant's user of the same id have jobs beside theirs. The
//! export's archive must hold exactly the user's jobs, their released outputs, their
//! pipeline, their prompts *opened*, a manifest whose sizes and digests match every file;
//! another tenant cannot see it; every step is audited; an erasure deletes the archive, and an
//! export made after the erasure finds nothing and says so.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};
use sha2::Digest as _;

const USER: &str = "u-export-1";
const PROMPT: &str = "a lighthouse in fog, zq-export-canary";
const NEGATIVE: &str = "no boats, zq-export-negative";

fn call(addr: &str, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value, String) {
    let auth = format!("Bearer {key}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
        ("X-Request-Id", "req-export-7"),
    ];
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let (status, _, text) = http_request(addr, method, path, &headers, body.as_bytes());
    (status, serde_json::from_str(&text).unwrap_or(Value::Null), text)
}

/// The raw bytes of a GET (the archive).
fn download(addr: &str, key: &str, path: &str) -> (u16, Vec<u8>) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {key}\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding: chunked"),
        "{head}"
    );
    (status, raw[split + 4..].to_vec())
}

/// Waits for a job (or an export, by its route) to reach a final status.
async fn settled_at(addr: &str, key: &str, path: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (_, v, _) = call(addr, key, "GET", path, None);
        if matches!(
            v["status"].as_str(),
            Some("succeeded" | "dead" | "cancelled" | "blocked" | "failed")
        ) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{path} did not settle: {v}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Starts an export of `user` and waits for it; returns its view.
async fn export(addr: &str, key: &str, user: &str) -> Value {
    let (s, v, text) = call(addr, key, "POST", &format!("/v1/users/{user}/exports"), None);
    assert_eq!(s, 202, "{text}");
    let id = v["id"].as_str().unwrap().to_owned();
    settled_at(addr, key, &format!("/v1/users/{user}/exports/{id}")).await
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A Redis, a scheduler and a directory store, for the tests that bring their own workers.
struct Small {
    redis: gantry_testkit::RedisServer,
    dir: tempfile::TempDir,
    outputs: std::path::PathBuf,
    sched: SchedulerProcess,
}

impl Small {
    fn start() -> Self {
        let redis = gantry_testkit::RedisServer::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let outputs = dir.path().join("outputs");
        let sched = SchedulerProcess::start_with(&redis.url(), None, &["--outputs", outputs.to_str().unwrap()], None);
        Self {
            redis,
            dir,
            outputs,
            sched,
        }
    }

    fn store_dir(&self) -> &str {
        self.outputs.to_str().unwrap()
    }
}

/// Submits `n` no-op jobs of `user` (studio-42), each writing an output of `bytes`; their ids.
fn noops(addr: &str, user: &str, n: usize, bytes: u32) -> Vec<String> {
    (0..n)
        .map(|_| {
            let job = json!({"user": user, "kind": "noop", "payload": {"output_bytes": bytes}});
            let (s, j, text) = call(addr, "demo-studio-key", "POST", "/v1/jobs", Some(job));
            assert_eq!(s, 201, "{text}");
            j["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// The archive's files, by path, in order.
fn untar(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (path, data)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_data_is_exported_whole_opened_and_theirs_alone() {
    let redis = gantry_testkit::RedisServer::start().unwrap();
    let url = redis.url();
    let mock = MockProvidersProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let outputs = dir.path().join("outputs");
    let store_dir = outputs.to_str().unwrap();
    let keys = format!("k1={}", base64::engine::general_purpose::STANDARD.encode([9u8; 32]));
    let env = [("GANTRY_DATA_KEYS", keys.as_str())];
    let sched = SchedulerProcess::start_with_env(&url, None, &["--outputs", store_dir], None, &env);
    let _worker = WorkerProcess::start_in_env(
        &url,
        "cpu",
        "exporter",
        4,
        10.0,
        &[
            "--gpus",
            "none",
            "--mock-providers",
            &mock.url(),
            "--outputs",
            store_dir,
        ],
        dir.path(),
        &env,
    );
    let addr = sched.addr.as_str();
    let studio = "demo-studio-key";

    // The platform's uploads for the user: a reference image and a clip.
    let uploads = outputs.join("inputs/studio-42");
    std::fs::create_dir_all(&uploads).unwrap();
    let reference = gantry_mocks::media::MediaCache::default().image(64, 64, false, 9);
    std::fs::write(uploads.join("ref.png"), reference.as_slice()).unwrap();
    let st = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .args([
            "testsrc2=size=320x240:rate=15",
            "-t",
            "1",
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
        ])
        .arg(uploads.join("clip.webm"))
        .status()
        .unwrap();
    assert!(st.success());
    // A hash list that holds the mocks' flagged picture, so a job of the user's is blocked.
    let flagged = {
        use gantry_codecs::pdq::{Prescale, hash_dihedral, luma_from_image};
        let png =
            gantry_mocks::media::MediaCache::default().image(1024, 1024, false, gantry_mocks::media::FLAGGED_TINT);
        let img = image::load_from_memory(&png).unwrap();
        let (luma, w, h) = luma_from_image(&img, Prescale::None);
        hash_dihedral(&luma, w, h).0[0].to_string()
    };
    let (s, _, b) = http_request(
        &sched.addr,
        "PUT",
        "/v1/admin/hashlists/known-bad?category=csam",
        &[
            ("Authorization", "Bearer demo-admin-key"),
            ("Content-Type", "text/plain"),
        ],
        format!("pdq:{flagged}\n").as_bytes(),
    );
    assert_eq!(s, 200, "{b}");

    // The user's jobs: a generate with a stored reference, a generate→upscale pipeline, a
    // transcode, a job that dies, one that is blocked.
    let mut gen_job = generate(
        "openai",
        "gpt-image-1",
        &["US"],
        PROMPT,
        json!({"negative_prompt": NEGATIVE, "reference_images": ["inputs/studio-42/ref.png"]}),
    );
    gen_job["user"] = USER.into();
    let (s, g, text) = call(addr, studio, "POST", "/v1/jobs", Some(gen_job.clone()));
    assert_eq!(s, 201, "{text}");
    let gen_id = g["id"].as_str().unwrap().to_owned();
    let pipeline = json!({"steps": [
        {"name": "image", "user": USER, "kind": "generate", "allowed_regions": ["US"],
         "payload": {"provider": "openai", "model": "gpt-image-1", "prompt": PROMPT}},
        {"name": "big", "needs": ["image"], "user": USER, "kind": "upscale",
         "payload": {"input": "${steps.image.output}", "scale": 2}},
    ]});
    let (s, pl, text) = call(addr, studio, "POST", "/v1/pipelines", Some(pipeline));
    assert_eq!(s, 201, "{text}");
    let pipeline_id = pl["id"].as_str().unwrap().to_owned();
    let dies = json!({"user": USER, "kind": "noop", "max_attempts": 1,
                      "payload": {"fail_attempts": 1, "fail_class": "permanent"}});
    let (s, d, text) = call(addr, studio, "POST", "/v1/jobs", Some(dies));
    assert_eq!(s, 201, "{text}");
    let dead_id = d["id"].as_str().unwrap().to_owned();
    let clip = json!({"user": USER, "kind": "transcode", "payload": {"input": "inputs/studio-42/clip.webm"}});
    let (s, t, text) = call(addr, studio, "POST", "/v1/jobs", Some(clip));
    assert_eq!(s, 201, "{text}");
    let transcode_id = t["id"].as_str().unwrap().to_owned();
    let mut bad = generate("openai", "gpt-image-1", &["US"], "[mock:flagged] a portrait", json!({}));
    bad["user"] = USER.into();
    let (s, bl, text) = call(addr, studio, "POST", "/v1/jobs", Some(bad));
    assert_eq!(s, 201, "{text}");
    let blocked_id = bl["id"].as_str().unwrap().to_owned();
    // Beside them: another user's job, and another tenant's user of the same id.
    let mut other = gen_job.clone();
    other["user"] = "u-someone-else".into();
    let (s, o, _) = call(addr, studio, "POST", "/v1/jobs", Some(other));
    assert_eq!(s, 201);
    let other_id = o["id"].as_str().unwrap().to_owned();
    let (s, t, text) = call(
        addr,
        "demo-video-key",
        "POST",
        "/v1/jobs",
        Some(json!({"user": USER, "kind": "noop", "payload": {}})),
    );
    assert_eq!(s, 201, "{text}");
    let other_tenant_id = t["id"].as_str().unwrap().to_owned();
    for id in [&gen_id, &dead_id, &other_id, &transcode_id, &blocked_id] {
        settled_at(addr, studio, &format!("/v1/jobs/{id}")).await;
    }
    let (_, blocked, _) = call(addr, studio, "GET", &format!("/v1/jobs/{blocked_id}"), None);
    assert_eq!(blocked["status"], "blocked", "{blocked:#}");
    let (_, transcoded, _) = call(addr, studio, "GET", &format!("/v1/jobs/{transcode_id}"), None);
    assert_eq!(transcoded["status"], "succeeded", "{transcoded:#}");
    let p = settled_at(addr, studio, &format!("/v1/pipelines/{pipeline_id}")).await;
    assert_eq!(p["status"], "succeeded", "{p:#}");
    let steps: BTreeMap<String, String> = p["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["job_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();

    // Kind export is not a job a tenant submits.
    let (s, _, text) = call(
        addr,
        studio,
        "POST",
        "/v1/jobs",
        Some(json!({"user": USER, "kind": "export", "payload": {}})),
    );
    assert_eq!(s, 400, "{text}");
    assert!(text.contains("/exports"), "{text}");

    // The export.
    let v = export(addr, studio, USER).await;
    assert_eq!(v["status"], "succeeded", "{v:#}");
    assert_eq!(
        (v["includes"]["trust"].as_bool(), v["includes"]["moderation"].as_bool()),
        (Some(true), Some(false))
    );
    let export_id = v["id"].as_str().unwrap().to_owned();
    let link = v["archive"]["download"].as_str().unwrap().to_owned();
    assert_eq!(link, format!("/v1/jobs/{export_id}/outputs/export.tar"));
    assert!(v["archive"]["expires_at_ms"].as_u64().unwrap() > v["finished_at_ms"].as_u64().unwrap());
    let (s, bytes) = download(addr, studio, &link);
    assert_eq!(s, 200);
    assert_eq!(bytes.len() as u64, v["archive"]["size_bytes"].as_u64().unwrap());
    assert_eq!(
        hex(&sha2::Sha256::digest(&bytes)),
        v["archive"]["sha256"].as_str().unwrap()
    );
    let files = untar(&bytes);
    let (last, manifest) = files.last().unwrap();
    assert_eq!(last, "manifest.json", "the manifest comes last");
    let manifest: Value = serde_json::from_slice(manifest).unwrap();
    assert_eq!(manifest["format"], "gantry-export/1");
    assert_eq!(
        (
            manifest["tenant"].as_str(),
            manifest["user"].as_str(),
            manifest["request_id"].as_str()
        ),
        (Some("studio-42"), Some(USER), Some("req-export-7"))
    );
    assert_eq!(manifest["empty"], false);
    // Every file but the manifest is listed, with its size and digest, and nothing else is.
    let listed: BTreeMap<String, (u64, String)> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                (
                    f["size_bytes"].as_u64().unwrap(),
                    f["sha256"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    assert_eq!(listed.len(), files.len() - 1);
    for (path, data) in &files[..files.len() - 1] {
        let (size, sha) = listed
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not in the manifest"));
        assert_eq!(*size, data.len() as u64, "{path}");
        assert_eq!(sha, &hex(&sha2::Sha256::digest(data)), "{path}");
    }
    let file = |p: &str| -> &[u8] {
        &files
            .iter()
            .find(|(path, _)| path == p)
            .unwrap_or_else(|| panic!("no {p} in {:?}", files.iter().map(|f| &f.0).collect::<Vec<_>>()))
            .1
    };
    // Exactly the user's jobs: the generate, both steps, the dead one.
    let jobs: std::collections::BTreeSet<String> = files
        .iter()
        .filter_map(|(p, _)| p.strip_suffix("/job.json").and_then(|p| p.strip_prefix("jobs/")))
        .map(str::to_owned)
        .collect();
    let want: std::collections::BTreeSet<String> = [
        &gen_id,
        &steps["image"],
        &steps["big"],
        &dead_id,
        &transcode_id,
        &blocked_id,
    ]
    .into_iter()
    .cloned()
    .collect();
    assert_eq!(jobs, want);
    assert!(
        !files
            .iter()
            .any(|(p, _)| p.contains(&other_id) || p.contains(&other_tenant_id))
    );
    assert_eq!(manifest["counts"]["jobs"], 6);
    assert_eq!(manifest["counts"]["pipelines"], 1);
    // The prompts, opened (they are sealed in Redis).
    let job: Value = serde_json::from_slice(file(&format!("jobs/{gen_id}/job.json"))).unwrap();
    assert_eq!(job["request"]["payload"]["prompt"], PROMPT);
    assert_eq!(job["request"]["payload"]["negative_prompt"], NEGATIVE);
    assert_eq!(
        job["request"]["payload"]["provider"], "openai",
        "the provider as routed"
    );
    assert_eq!(job["status"], "succeeded");
    assert!(job["credits"]["charged"].as_i64().unwrap() > 0, "{job:#}");
    // Released outputs, byte for byte as the outputs route serves them.
    let out = job["outputs"][0]["path"].as_str().unwrap();
    let name = job["outputs"][0]["name"].as_str().unwrap();
    let (s, served) = download(addr, studio, &format!("/v1/jobs/{gen_id}/outputs/{name}"));
    assert_eq!(s, 200);
    assert_eq!(file(out), served.as_slice());
    let big: Value = serde_json::from_slice(file(&format!("jobs/{}/job.json", steps["big"]))).unwrap();
    assert_eq!(big["pipeline"]["id"], pipeline_id.as_str());
    assert_eq!(big["outputs"].as_array().unwrap().len(), 1);
    // The stored reference, byte for byte.
    assert_eq!(job["references"][0]["source"], "store");
    assert_eq!(
        file(job["references"][0]["path"].as_str().unwrap()),
        reference.as_slice()
    );
    // The transcode's renditions.
    let clip: Value = serde_json::from_slice(file(&format!("jobs/{transcode_id}/job.json"))).unwrap();
    assert_eq!(clip["kind"], "transcode");
    assert!(!clip["outputs"].as_array().unwrap().is_empty(), "{clip:#}");
    // A blocked job, and one that died: their records, none of their content.
    for (id, status) in [(&blocked_id, "blocked"), (&dead_id, "dead")] {
        let doc: Value = serde_json::from_slice(file(&format!("jobs/{id}/job.json"))).unwrap();
        assert_eq!(doc["status"], status);
        assert!(doc["outputs"].as_array().unwrap().is_empty(), "{doc:#}");
        let prefix = format!("jobs/{id}/outputs/");
        assert!(!files.iter().any(|(p, _)| p.starts_with(&prefix)), "{status}");
    }
    let pipeline: Value = serde_json::from_slice(file(&format!("pipelines/{pipeline_id}.json"))).unwrap();
    assert_eq!(pipeline["state"], "created");
    let trust: Value = serde_json::from_slice(file("trust.json")).unwrap();
    assert_eq!(trust["blocked"], false);
    assert!(
        !files.iter().any(|(p, _)| p == "moderation.json"),
        "moderation records are off by default"
    );

    // Another tenant sees neither the export nor its archive.
    let (s, _, _) = call(
        addr,
        "demo-video-key",
        "GET",
        &format!("/v1/users/{USER}/exports/{export_id}"),
        None,
    );
    assert_eq!(s, 404);
    assert_eq!(download(addr, "demo-video-key", &link).0, 404);
    // Nor does another user's path reach it.
    let (s, _, _) = call(
        addr,
        studio,
        "GET",
        &format!("/v1/users/u-someone-else/exports/{export_id}"),
        None,
    );
    assert_eq!(s, 404);
    // An operator may export for a tenant.
    let (s, _, text) = call(
        addr,
        "demo-admin-key",
        "GET",
        &format!("/v1/users/{USER}/exports/{export_id}?tenant=studio-42"),
        None,
    );
    assert_eq!(s, 200, "{text}");

    // Audited: who asked, and each download.
    let (_, audit, _) = call(addr, "demo-admin-key", "GET", "/v1/admin/audit?limit=100", None);
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"users.export"), "{audit:#}");
    assert!(actions.contains(&"users.export.download"), "{audit:#}");
    assert!(
        !audit.to_string().contains(USER),
        "the audit log names the user by key only"
    );

    // Operators export from the command line, through the same code: the same jobs, prompts
    // opened with the data keys from the environment, the moderation records when asked.
    let local = dir.path().join("cli-export.tar");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args([
            "users",
            "export",
            "--tenant",
            "studio-42",
            "--user",
            USER,
            "--outputs",
            store_dir,
        ])
        .arg("--moderation")
        .arg(&local)
        .env("REDIS_URL", &url)
        .env("GANTRY_DATA_KEYS", &keys)
        .env("USER", "sre-ann")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("6 jobs, 1 pipelines"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let cli_files = untar(&std::fs::read(&local).unwrap());
    let cli_manifest: Value = serde_json::from_slice(&cli_files.last().unwrap().1).unwrap();
    for k in ["jobs", "jobs_by_kind", "pipelines", "outputs", "references"] {
        assert_eq!(cli_manifest["counts"][k], manifest["counts"][k], "{k}");
    }
    // With --moderation: the blocked job's moderation record (category, action; no prompt).
    assert_eq!(cli_manifest["counts"]["moderation_events"], 1);
    let moderation: Value =
        serde_json::from_slice(&cli_files.iter().find(|(p, _)| p == "moderation.json").unwrap().1).unwrap();
    assert_eq!(moderation["events"][0]["job_id"], blocked_id.as_str(), "{moderation:#}");
    assert_eq!(moderation["events"][0]["category"], "csam");
    let cli_job: Value = serde_json::from_slice(
        &cli_files
            .iter()
            .find(|(p, _)| *p == format!("jobs/{gen_id}/job.json"))
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(cli_job["request"]["payload"]["prompt"], PROMPT);
    // It refuses to overwrite a file.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args([
            "users",
            "export",
            "--tenant",
            "studio-42",
            "--user",
            USER,
            "--outputs",
            store_dir,
        ])
        .arg(&local)
        .env("REDIS_URL", &url)
        .output()
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let (_, audit, _) = call(addr, "demo-admin-key", "GET", "/v1/admin/audit?limit=100", None);
    assert!(
        audit["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "users.export" && e["actor"] == "cli/sre-ann"),
        "{audit:#}"
    );

    // An erasure deletes the archive with everything else; an export after it finds nothing.
    let (s, _, text) = call(addr, studio, "DELETE", &format!("/v1/users/{USER}/data"), None);
    assert!(s == 200 || s == 202, "{text}");
    assert_eq!(download(addr, studio, &link).0, 404);
    let after = export(addr, studio, USER).await;
    assert_eq!(after["status"], "succeeded", "{after:#}");
    let (s, bytes) = download(addr, studio, after["archive"]["download"].as_str().unwrap());
    assert_eq!(s, 200);
    let files = untar(&bytes);
    let manifest: Value = serde_json::from_slice(&files.last().unwrap().1).unwrap();
    assert_eq!(manifest["empty"], true, "{manifest:#}");
    assert_eq!(manifest["counts"]["jobs"], 0);
    assert!(manifest["note"].as_str().unwrap().contains("erased"));
    // The other user's and the other tenant's jobs are untouched.
    let (s, _, _) = call(addr, studio, "GET", &format!("/v1/jobs/{other_id}"), None);
    assert_eq!(s, 200);
}

/// An export whose worker dies part-way is resumed by the next attempt from its last stored
/// part: the archive holds every job once, its manifest lists every file, and the parts and
/// the checkpoint are gone once the archive is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_whose_worker_dies_resumes_from_its_last_part() {
    let f = Small::start();
    let (url, dir, outputs, store_dir) = (f.redis.url(), &f.dir, &f.outputs, f.store_dir());
    let addr = f.sched.addr.as_str();
    let studio = "demo-studio-key";
    let user = "u-export-resume";
    let ids = noops(addr, user, 7, 64);
    // A worker that stores parts of two jobs and dies after the second part.
    let parts = ["--gpus", "none", "--outputs", store_dir, "--export-part-jobs", "2"];
    let dying = WorkerProcess::start_in_env(
        &url,
        "cpu",
        "dies",
        2,
        2.0,
        &parts,
        dir.path(),
        &[("GANTRY_TEST_ABORT_EXPORT_AFTER_PART", "1")],
    );
    for id in &ids {
        settled_at(addr, studio, &format!("/v1/jobs/{id}")).await;
    }
    let (s, v, text) = call(addr, studio, "POST", &format!("/v1/users/{user}/exports"), None);
    assert_eq!(s, 202, "{text}");
    let export_id = v["id"].as_str().unwrap().to_owned();
    // The first attempt stores two parts (four jobs), then its worker aborts.
    let log = dir.path().join("dies.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("aborting after storing a part")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never reached its fault point"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(dying);
    // Another worker takes the export up once the lease expires, from the third part.
    let _next = WorkerProcess::start_in(&url, "cpu", "resumes", 2, 2.0, &parts, dir.path());
    let done = settled_at(addr, studio, &format!("/v1/users/{user}/exports/{export_id}")).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let resumed = std::fs::read_to_string(dir.path().join("resumes.log")).unwrap();
    assert!(
        resumed.contains("resuming an export where its last attempt stopped"),
        "{resumed}"
    );
    let (s, bytes) = download(addr, studio, done["archive"]["download"].as_str().unwrap());
    assert_eq!(s, 200);
    assert_eq!(
        hex(&sha2::Sha256::digest(&bytes)),
        done["archive"]["sha256"].as_str().unwrap()
    );
    let files = untar(&bytes);
    let (last, manifest) = files.last().unwrap();
    assert_eq!(last, "manifest.json");
    let manifest: Value = serde_json::from_slice(manifest).unwrap();
    // Every job once, across the parts; every file listed with its size and digest.
    let jobs: Vec<&str> = files
        .iter()
        .filter_map(|(p, _)| p.strip_suffix("/job.json").and_then(|p| p.strip_prefix("jobs/")))
        .collect();
    let mut sorted = jobs.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), jobs.len(), "no job twice: {jobs:?}");
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(sorted, want);
    assert_eq!(manifest["counts"]["jobs"], 7, "{manifest:#}");
    assert_eq!(manifest["counts"]["outputs"], 7, "{manifest:#}");
    let listed = manifest["files"].as_array().unwrap();
    assert_eq!(listed.len(), files.len() - 1);
    for ((path, data), f) in files.iter().zip(listed) {
        assert_eq!(f["path"].as_str(), Some(path.as_str()));
        assert_eq!(f["size_bytes"].as_u64(), Some(data.len() as u64), "{path}");
        assert_eq!(
            f["sha256"].as_str(),
            Some(hex(&sha2::Sha256::digest(data)).as_str()),
            "{path}"
        );
    }
    // The parts served their turn: only the archive is left in the export's folder, and the
    // checkpoint is gone.
    let folder = std::fs::read_dir(outputs.join("jobs/studio-42"))
        .unwrap()
        .flatten()
        .map(|u| u.path().join(&export_id))
        .find(|p| p.exists())
        .unwrap();
    let left: Vec<String> = std::fs::read_dir(folder)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["export.tar"]);
    let q = client(&url).await;
    let mut c = q.connection();
    let checkpoint: Option<String> = redis::cmd("HGET")
        .arg(format!("gantry:{{cpu}}:job:{export_id}"))
        .arg("export_checkpoint")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(checkpoint, None);
}

/// An erasure stops a running export and takes its parts, its checkpoint and its record along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_stops_a_running_export_and_leaves_nothing_of_it() {
    let f = Small::start();
    let (url, dir, outputs, store_dir) = (f.redis.url(), &f.dir, &f.outputs, f.store_dir());
    let addr = f.sched.addr.as_str();
    let studio = "demo-studio-key";
    let user = "u-export-erased";
    // A slow export: a pause after each page of two jobs.
    let _w = WorkerProcess::start_in_env(
        &url,
        "cpu",
        "slow",
        2,
        1.5,
        &["--gpus", "none", "--outputs", store_dir, "--export-part-jobs", "2"],
        dir.path(),
        &[("GANTRY_TEST_EXPORT_PAGE_DELAY_MS", "400")],
    );
    for id in noops(addr, user, 12, 16) {
        settled_at(addr, studio, &format!("/v1/jobs/{id}")).await;
    }
    let (s, v, text) = call(addr, studio, "POST", &format!("/v1/users/{user}/exports"), None);
    assert_eq!(s, 202, "{text}");
    let id = v["id"].as_str().unwrap().to_owned();
    // Erase once it has stored a part.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, e, _) = call(addr, studio, "GET", &format!("/v1/users/{user}/exports/{id}"), None);
        if e["status"] == "running" && e["progress"].as_f64().is_some_and(|p| p >= 30.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the export never got going: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (s, receipt, text) = call(addr, studio, "DELETE", &format!("/v1/users/{user}/data"), None);
        assert!(s == 200 || s == 202, "{text}");
        if receipt["complete"] == true {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the erasure never completed: {receipt}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The export is gone: its record, its parts, its archive, its checkpoint.
    let (s, _, _) = call(addr, studio, "GET", &format!("/v1/users/{user}/exports/{id}"), None);
    assert_eq!(s, 404);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let left: Vec<_> = walkdir(&outputs.join("jobs/studio-42"));
    assert!(left.is_empty(), "{left:?}");
    let q = client(&url).await;
    let mut c = q.connection();
    let exists: bool = redis::cmd("EXISTS")
        .arg(format!("gantry:{{cpu}}:job:{id}"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!exists, "no record recreated by a late checkpoint");
}

/// Every file under `dir` (none if it does not exist).
fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
