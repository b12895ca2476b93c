//! The release gate (`executors::scanned`) around an executor that writes given files as a
//! job's outputs, against a real Redis: clean outputs are released with the scan's details; an
//! output on a hash list ends the job `blocked` with every file gone, the input deleted, a
//! moderation record carrying the prompt's SHA-256 (never the prompt) and the user's trust
//! lowered; an output that cannot be hashed is never released; a tenant that turned scanning
//! off gets its result untouched.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use gantry_codecs::ImageLimits;
use gantry_codecs::pdq::{Prescale, hash_dihedral, luma_from_image};
use gantry_queue::{
    ClaimedJob, Completion, ErrorClass, GeneratePayload, HandlerFuture, JobContext, JobId, JobKind, JobOutcome,
    JobSpec, LeaseRef, Payload, Pool, Priority, RedisConn, RedisTarget, Requirements, UpscalePayload,
};
use gantry_safety::{HashList, HashListStore, Matcher, ModerationLog, Retention, TrustRegistry};
use gantry_testkit::RedisServer;
use gantry_worker::Executor;
use gantry_worker::executors::scanned::Scanned;
use gantry_worker::outputs::OutputStore;
use gantry_worker::scan::{CsamPolicy, Scanner};
use prometheus_client::registry::Registry;

fn data(p: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../codecs/tests/data/pdq/pdq/data/reg-test-input")
        .join(p);
    std::fs::read(path).unwrap()
}

fn pdq_of(bytes: &[u8]) -> String {
    let img = gantry_codecs::images::decode_raw(bytes, &ImageLimits::default()).unwrap();
    let (luma, w, h) = luma_from_image(&img, Prescale::None);
    hash_dihedral(&luma, w, h).0[0].to_string()
}

/// Writes its files as the job's outputs and succeeds with the first as the result.
#[derive(Clone)]
struct Writes {
    outputs: OutputStore,
    files: Vec<(&'static str, Vec<u8>, &'static str)>,
}

impl Executor for Writes {
    fn kind(&self) -> JobKind {
        JobKind::Generate
    }

    fn run(&self, job: ClaimedJob, _ctx: JobContext) -> HandlerFuture {
        let this = self.clone();
        Box::pin(async move {
            let mut first = None;
            for (name, bytes, ct) in this.files {
                let r = this.outputs.put(&job.spec, name, Bytes::from(bytes), ct).await.unwrap();
                first.get_or_insert(r);
            }
            JobOutcome::Succeeded(Completion {
                output: first,
                usage: None,
            })
        })
    }
}

fn claimed(body: Payload, scan: bool) -> ClaimedJob {
    let id = JobId::new();
    ClaimedJob {
        lease: LeaseRef {
            id,
            kind: body.kind(),
            token: 1,
        },
        pool: Pool::new("cpu").unwrap(),
        attempt: 1,
        max_attempts: 3,
        spec: JobSpec {
            id,
            pool: "cpu".into(),
            tenant: "studio".into(),
            user: "u-1".into(),
            priority: Priority::Normal,
            requirements: Requirements::default(),
            allowed_regions: vec![],
            idempotency_key: None,
            max_attempts: 3,
            timeout_secs: 60,
            scan_outputs: scan,
            traceparent: None,
            body,
        },
        gpu: None,
        gpus: Vec::new(),
        waited: std::time::Duration::ZERO,
    }
}

fn generate(prompt: &str) -> Payload {
    Payload::Generate(GeneratePayload {
        provider: "openai".into(),
        model: "gpt-image-1".into(),
        prompt: prompt.into(),
        ..Default::default()
    })
}

fn ctx() -> JobContext {
    JobContext::default()
}

struct Rig {
    _redis: RedisServer,
    _dir: tempfile::TempDir,
    root: PathBuf,
    conn: RedisConn,
    outputs: OutputStore,
    scanner: Scanner,
}

async fn rig() -> Rig {
    let redis = RedisServer::start().unwrap();
    let conn = RedisConn::connect(&RedisTarget::parse(&redis.url()).unwrap(), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let outputs = OutputStore::open(root.to_str().unwrap()).unwrap();
    let scanner = Scanner::new(
        conn.clone(),
        outputs.clone(),
        Matcher::new(HashListStore::new(conn.clone()), Duration::ZERO),
        (
            ModerationLog::new(conn.clone(), Retention::default()),
            TrustRegistry::new(conn.clone()),
        ),
        CsamPolicy::default(),
    );
    Rig {
        _redis: redis,
        _dir: dir,
        root,
        conn,
        outputs,
        scanner,
    }
}

fn files_of(root: &std::path::Path, spec: &JobSpec) -> usize {
    let d = root
        .join("jobs")
        .join(&spec.tenant)
        .join(gantry_queue::user_key(&spec.tenant, &spec.user))
        .join(spec.id.to_string());
    std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_are_released_only_after_a_clean_scan() {
    let r = rig().await;
    let bridge = data("dih/bridge-1-original.jpg");
    let street = data("labelme-subset/q0003.jpg");
    let list = HashList::parse(&format!("pdq:{}\n", pdq_of(&bridge))).unwrap();
    HashListStore::new(r.conn.clone())
        .publish("known-bad", "csam", &list)
        .await
        .unwrap();
    let mut registry = Registry::default();
    let gate = |files: Vec<(&'static str, Vec<u8>, &'static str)>| {
        Scanned::new(
            Writes {
                outputs: r.outputs.clone(),
                files,
            },
            r.scanner.clone(),
        )
    };

    // Clean: released, with what was scanned against which list versions; the manifest is
    // not media and is not hashed.
    let clean = gate(vec![
        ("output-0.jpg", street.clone(), "image/jpeg"),
        ("manifest.json", b"{}".to_vec(), "application/json"),
    ]);
    clean.register_metrics(&mut registry);
    let job = claimed(generate("a quiet street at dusk"), true);
    let spec = job.spec.clone();
    let JobOutcome::Succeeded(done) = clean.run(job, ctx()).await else {
        panic!("a clean output is released")
    };
    let d = &done.output.unwrap().details;
    assert_eq!(d["scan"], "clean");
    assert_eq!(d["scanned_files"], "1");
    assert_eq!(d["scan_lists"], "known-bad@v1");
    assert_eq!(files_of(&r.root, &spec), 2);

    // Matched (the second of two outputs): blocked, every file of the job gone, the record
    // holds the prompt's SHA-256 and not the prompt.
    let prompt = "a bridge over a river, photorealistic";
    let bad = gate(vec![
        ("output-0.jpg", street.clone(), "image/jpeg"),
        ("output-1.jpg", bridge.clone(), "image/jpeg"),
    ]);
    let job = claimed(generate(prompt), true);
    let spec = job.spec.clone();
    match bad.run(job, ctx()).await {
        JobOutcome::Failed { class, message } => {
            assert_eq!(class, ErrorClass::Blocked);
            assert!(message.contains("known-bad v1 (csam)"), "{message}");
            assert!(message.contains("2 object(s) deleted"), "{message}");
        }
        other => panic!("expected blocked, got {other:?}"),
    }
    assert_eq!(files_of(&r.root, &spec), 0, "nothing of the job is left to release");
    let log = ModerationLog::new(r.conn.clone(), Retention::default());
    let e = log.get(&format!("{}-known-bad", spec.id)).await.unwrap().unwrap();
    let sha = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(prompt.as_bytes()));
    let sha: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(e.prompt_sha256.as_deref(), Some(sha.as_str()));
    assert_eq!((e.user.as_str(), e.action.as_str()), ("u-1", "blocked_deleted"));
    let raw = serde_json::to_string(&e).unwrap();
    assert!(!raw.contains("bridge over"), "no prompt text in {raw}");
    let trust = TrustRegistry::new(r.conn.clone())
        .status("studio", "u-1")
        .await
        .unwrap();
    assert!(trust.score < 1.0, "{trust:?}");

    // An upscale whose output matches: its input is deleted with it.
    let input = "inputs/studio/photo.jpg";
    std::fs::create_dir_all(r.root.join("inputs/studio")).unwrap();
    std::fs::write(r.root.join(input), &bridge).unwrap();
    let job = claimed(
        Payload::Upscale(UpscalePayload {
            input: input.into(),
            ..Default::default()
        }),
        true,
    );
    let out = gate(vec![("output.jpg", bridge.clone(), "image/jpeg")])
        .run(job, ctx())
        .await;
    assert!(
        matches!(
            out,
            JobOutcome::Failed {
                class: ErrorClass::Blocked,
                ..
            }
        ),
        "{out:?}"
    );
    assert!(
        !r.root.join(input).exists(),
        "the input the output came from is deleted"
    );

    // Unhashable: never released as clean; its files are withheld (deleted).
    let job = claimed(generate("anything"), true);
    let spec = job.spec.clone();
    match gate(vec![(
        "output-0.png",
        b"\x89PNG\r\n\x1a\n truncated".to_vec(),
        "image/png",
    )])
    .run(job, ctx())
    .await
    {
        JobOutcome::Failed { class, message } => {
            assert_eq!(class, ErrorClass::Permanent, "{message}");
            assert!(
                message.contains("output-0.png could not be hashed, so it is not released"),
                "{message}"
            );
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(files_of(&r.root, &spec), 0);

    // A tenant that turned scanning off: the result as the executor made it.
    let job = claimed(generate("anything"), false);
    let JobOutcome::Succeeded(done) = gate(vec![("output-0.jpg", bridge.clone(), "image/jpeg")])
        .run(job, ctx())
        .await
    else {
        panic!("unscanned results are released as they are")
    };
    assert!(!done.output.unwrap().details.contains_key("scan"));

    // The gate's counters.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for series in [
        r#"gantry_output_scans_total{kind="generate",verdict="clean"} 1"#,
        r#"gantry_output_scans_total{kind="generate",verdict="blocked"} 1"#,
        r#"gantry_output_scans_total{kind="upscale",verdict="blocked"} 1"#,
        r#"gantry_output_scans_total{kind="generate",verdict="unhashable"} 1"#,
        r#"gantry_moderation_events_total{category="csam",action="blocked_deleted"} 2"#,
    ] {
        assert!(text.contains(series), "{series} missing from\n{text}");
    }
}

/// `block` with no match deletes nothing and lowers no trust (it used to act first and check
/// after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_without_a_match_touches_nothing() {
    let r = rig().await;
    let input = "inputs/studio/photo.jpg";
    std::fs::create_dir_all(r.root.join("inputs/studio")).unwrap();
    std::fs::write(r.root.join(input), b"bytes").unwrap();
    let job = claimed(generate("a harmless prompt"), true);
    r.outputs
        .put(
            &job.spec,
            "output-0.png",
            bytes::Bytes::from_static(b"img"),
            "image/png",
        )
        .await
        .unwrap();
    match r.scanner.block(&job.spec, Some(input), &[]).await {
        JobOutcome::Failed { class, message } => {
            assert_eq!(class, ErrorClass::Retryable);
            assert!(message.contains("no match"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(r.root.join(input).exists(), "the input was deleted");
    assert_eq!(files_of(&r.root, &job.spec), 1, "the job's files were deleted");
    let trust = TrustRegistry::new(r.conn.clone())
        .status("studio", "u-1")
        .await
        .unwrap();
    assert_eq!(trust.score, 1.0, "trust was lowered");
}

/// A category's policy decides what a match does: `log` records it and releases the output;
/// `review` holds even a sure match for a person (an item in the queue, the job `withheld`, the
/// files kept); `block` with a review band holds a near match, unless a reviewer put the same
/// bytes on the allow list, and still blocks a sure one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn category_policies_log_hold_or_block_and_the_allow_list_releases_cleared_bytes() {
    use gantry_safety::review::ReviewQueue;
    use gantry_safety::{CategoryAction, CategoryPolicy, Policies};
    let r = rig().await;
    let bridge = data("dih/bridge-1-original.jpg");
    let street = data("labelme-subset/q2821.jpg");
    let lists = HashListStore::new(r.conn.clone());
    let policies = Policies::new(r.conn.clone());
    let gate = |files: Vec<(&'static str, Vec<u8>, &'static str)>| {
        Scanned::new(
            Writes {
                outputs: r.outputs.clone(),
                files,
            },
            r.scanner.clone(),
        )
    };

    // A signal list: matched, recorded, released.
    lists
        .publish(
            "signals",
            "spam",
            &HashList::parse(&format!("pdq:{}\n", pdq_of(&street))).unwrap(),
        )
        .await
        .unwrap();
    let mut log_only = CategoryPolicy::default_for("spam");
    log_only.action = CategoryAction::Log;
    policies.set("spam", &log_only).await.unwrap();
    let job = claimed(generate("a street"), true);
    let spec = job.spec.clone();
    let JobOutcome::Succeeded(_) = gate(vec![("output-0.jpg", street.clone(), "image/jpeg")])
        .run(job, ctx())
        .await
    else {
        panic!("a log-only category releases")
    };
    let log = ModerationLog::new(r.conn.clone(), Retention::default());
    let e = log.get(&format!("{}-signals-log", spec.id)).await.unwrap().unwrap();
    assert_eq!((e.category.as_str(), e.action.as_str()), ("spam", "logged"));

    // A review category: even an exact match is held, nothing deleted.
    lists
        .publish(
            "escalate",
            "grooming",
            &HashList::parse(&format!("pdq:{}\n", pdq_of(&bridge))).unwrap(),
        )
        .await
        .unwrap();
    let mut review_all = CategoryPolicy::default_for("grooming");
    review_all.action = CategoryAction::Review;
    policies.set("grooming", &review_all).await.unwrap();
    let job = claimed(generate("a bridge"), true);
    let spec = job.spec.clone();
    match gate(vec![("output-0.jpg", bridge.clone(), "image/jpeg")])
        .run(job, ctx())
        .await
    {
        JobOutcome::Failed { class, message } => {
            assert_eq!(class, ErrorClass::Withheld, "{message}");
            assert!(message.contains("withheld for review"), "{message}");
        }
        other => panic!("expected a hold, got {other:?}"),
    }
    assert_eq!(files_of(&r.root, &spec), 1, "held, not deleted");
    let reviews = ReviewQueue::new(r.conn.clone());
    let item = reviews.get(&spec.id.to_string()).await.unwrap().unwrap();
    assert_eq!((item.category.as_str(), item.files.len()), ("grooming", 1));
    assert!(item.held.output.is_some(), "the result a clear releases");
    assert_eq!(
        TrustRegistry::new(r.conn.clone())
            .status("studio", "u-1")
            .await
            .unwrap()
            .score,
        1.0
    );

    // Cleared bytes on the allow list are not held again; a sure match of a block category
    // still blocks them.
    reviews.allow(&[item.files[0].sha256.clone()]).await.unwrap();
    let job = claimed(generate("a bridge again"), true);
    let JobOutcome::Succeeded(_) = gate(vec![("output-0.jpg", bridge.clone(), "image/jpeg")])
        .run(job, ctx())
        .await
    else {
        panic!("allow-listed bytes are released")
    };
    lists
        .publish(
            "known-bad",
            "csam",
            &HashList::parse(&format!("pdq:{}\n", pdq_of(&bridge))).unwrap(),
        )
        .await
        .unwrap();
    let job = claimed(generate("a bridge, third time"), true);
    let out = gate(vec![("output-0.jpg", bridge.clone(), "image/jpeg")])
        .run(job, ctx())
        .await;
    assert!(
        matches!(
            out,
            JobOutcome::Failed {
                class: ErrorClass::Blocked,
                ..
            }
        ),
        "a sure match blocks whatever the allow list says: {out:?}"
    );
}
