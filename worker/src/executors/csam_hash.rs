//! The `csam_hash` executor: streams the job's input (only the tenant's own objects) to a
//! scratch file, hashes it — MD5 and SHA-256 of the bytes; PDQ with its 8 dihedral variants for
//! an image, vPDQ (one frame a second) for a video — and matches it against the abuse hash
//! lists every worker shares (`gantry_safety`). A file that cannot be hashed fails; it is never
//! reported clean.
//!
//! On a match, at once: the input object and everything under the job's folder are deleted,
//! the user's trust score drops (and the user is blocked below the threshold), a moderation
//! record is written per matching list (category, list and version, distance, action, tenant,
//! user — no media, no prompt), `gantry_moderation_events_total{category,action}` counts it,
//! and the job ends `blocked`. Otherwise the job succeeds with a `report.json` of the hashes.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bytes::Bytes;
use gantry_codecs::pdq::video::{VpdqOptions, hash_video};
use gantry_codecs::pdq::{Hash256, MIN_QUALITY, Prescale, hash_dihedral, luma_from_image};
use gantry_codecs::video::VideoLimits;
use gantry_codecs::{ImageLimits, MediaError};
use gantry_queue::{
    ClaimedJob, Completion, CsamHashPayload, ErrorClass, HandlerFuture, JobContext, JobKind, JobOutcome, Payload, Usage,
};
use gantry_safety::{Match, MatchKind, Matcher, ModerationEvent, ModerationLog, SafetyError, TrustRegistry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::media_job::{download_input, run_blocking};
use super::{Executor, failed};
use crate::outputs::{OutputStore, hex};

/// What a match does to the user.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CsamPolicy {
    /// Largest PDQ distance that matches (the reference's 31).
    pub max_distance: u32,
    /// Trust taken off the user per matched job.
    pub trust_penalty: f64,
    /// Below this score the user is blocked (the scheduler refuses their jobs).
    pub block_below: f64,
    /// vPDQ: one frame every this many seconds.
    pub seconds_per_frame: f64,
}

impl Default for CsamPolicy {
    fn default() -> Self {
        Self {
            max_distance: 31,
            trust_penalty: 0.5,
            block_below: 0.3,
            seconds_per_frame: 1.0,
        }
    }
}

/// Labels of `gantry_moderation_events_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModerationLabels {
    /// Violation category (the list's).
    pub category: String,
    /// Action taken.
    pub action: String,
}

/// Runs `csam_hash` jobs.
#[derive(Clone, Debug)]
pub struct CsamHashExecutor {
    outputs: OutputStore,
    matcher: Matcher,
    log: ModerationLog,
    trust: TrustRegistry,
    policy: CsamPolicy,
    time_limit: Duration,
    events: Family<ModerationLabels, Counter>,
}

/// What hashing found.
#[derive(Debug, serde::Serialize)]
struct Hashes {
    media: &'static str,
    md5: String,
    sha256: String,
    /// Image: the 8 dihedral hashes (original first); video: one per sampled frame.
    pdq: Vec<String>,
    quality: Vec<u8>,
    #[serde(skip)]
    usable: Vec<Hash256>,
}

impl CsamHashExecutor {
    /// An executor reading inputs from `outputs`, matching through `matcher`.
    pub fn new(
        outputs: OutputStore,
        matcher: Matcher,
        log: ModerationLog,
        trust: TrustRegistry,
        policy: CsamPolicy,
    ) -> Self {
        Self {
            outputs,
            matcher,
            log,
            trust,
            policy,
            time_limit: Duration::from_secs(280),
            events: Family::default(),
        }
    }
}

impl Executor for CsamHashExecutor {
    fn kind(&self) -> JobKind {
        JobKind::CsamHash
    }

    fn run(&self, job: ClaimedJob, ctx: JobContext) -> HandlerFuture {
        let this = self.clone();
        Box::pin(async move {
            let Payload::CsamHash(p) = &job.spec.body else {
                return failed(ErrorClass::Permanent, "not a csam_hash payload");
            };
            tokio::select! {
                out = this.hash_and_match(&job, p) => out,
                _ = ctx.cancel.cancelled() => failed(ErrorClass::Cancelled, "stopped"),
            }
        })
    }

    fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "gantry_moderation_events",
            "Moderation actions taken on matched content, by category and action",
            self.events.clone(),
        );
    }
}

/// MD5 and SHA-256 of a file, read in 1 MiB pieces (a video is never held whole), and its
/// first bytes (to tell an image from a video).
fn digests(path: &Path) -> Result<(String, String, Vec<u8>), MediaError> {
    use md5::Digest as _;
    use std::io::Read as _;
    let scratch = |e: std::io::Error| MediaError::Internal(format!("scratch space: {e}"));
    let mut file = std::fs::File::open(path).map_err(scratch)?;
    let (mut md5, mut sha) = (md5::Md5::new(), <sha2::Sha256 as sha2::Digest>::new());
    let (mut buf, mut head) = (vec![0u8; 1 << 20], Vec::new());
    loop {
        let n = file.read(&mut buf).map_err(scratch)?;
        if n == 0 {
            break;
        }
        if head.len() < 64 {
            head.extend_from_slice(&buf[..n.min(64 - head.len())]);
        }
        md5.update(&buf[..n]);
        sha2::Digest::update(&mut sha, &buf[..n]);
    }
    Ok((hex(&md5.finalize()), hex(&sha2::Digest::finalize(sha)), head))
}

/// Hashes the file at `path` (blocking).
fn hash_file(path: &Path, media: Option<&str>, seconds_per_frame: f64) -> Result<Hashes, MediaError> {
    let (md5, sha256, head) = digests(path)?;
    let is_image = match media {
        Some("image") => true,
        Some("video") => false,
        Some(other) => {
            return Err(MediaError::InvalidRequest(format!(
                "media {other:?}: use image or video"
            )));
        }
        None => gantry_codecs::images::sniff(&head).is_ok(),
    };
    if is_image {
        let limits = ImageLimits::default();
        let scratch = |e: std::io::Error| MediaError::Internal(format!("scratch space: {e}"));
        let len = std::fs::metadata(path).map_err(scratch)?.len();
        if len > limits.max_input_bytes as u64 {
            return Err(MediaError::TooLarge {
                bytes: usize::try_from(len).unwrap_or(usize::MAX),
                max: limits.max_input_bytes,
            });
        }
        let bytes = std::fs::read(path).map_err(scratch)?;
        let img = gantry_codecs::images::decode_raw(&bytes, &limits)?;
        drop(bytes);
        let (luma, w, h) = luma_from_image(&img, Prescale::None);
        let (variants, quality) = hash_dihedral(&luma, w, h);
        Ok(Hashes {
            media: "image",
            md5,
            sha256,
            pdq: variants.iter().map(ToString::to_string).collect(),
            quality: vec![quality],
            usable: if quality >= MIN_QUALITY {
                variants.to_vec()
            } else {
                Vec::new()
            },
        })
    } else {
        let opts = VpdqOptions {
            seconds_per_hash: seconds_per_frame,
            downsample: None,
        };
        let frames = hash_video(path, &opts, &VideoLimits::default(), &AtomicBool::new(false), 0)?;
        Ok(Hashes {
            media: "video",
            md5,
            sha256,
            pdq: frames.iter().map(|f| f.hash.to_string()).collect(),
            quality: frames.iter().map(|f| f.quality).collect(),
            usable: frames
                .iter()
                .filter(|f| f.quality >= MIN_QUALITY)
                .map(|f| f.hash)
                .collect(),
        })
    }
}

impl CsamHashExecutor {
    async fn hash_and_match(&self, job: &ClaimedJob, p: &CsamHashPayload) -> JobOutcome {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => return failed(ErrorClass::Retryable, format!("scratch space: {e}")),
        };
        let src = dir.path().join("input");
        if let Err(out) = download_input(&self.outputs, &job.spec, &p.input, &src, 2 << 30).await {
            return out;
        }
        let (media, spf) = (p.media.clone(), self.policy.seconds_per_frame);
        let hashes = match run_blocking(self.time_limit, move || hash_file(&src, media.as_deref(), spf)).await {
            Ok(h) => h,
            // Unhashable media is never clean: the job fails with the reason.
            Err(out) => return out,
        };
        let lists = match self.matcher.lists(&p.lists).await {
            Ok(l) => l,
            Err(SafetyError::NotFound(n)) => return failed(ErrorClass::Permanent, format!("no hash list named {n:?}")),
            Err(e) => return failed(ErrorClass::Retryable, format!("hash lists: {e}")),
        };
        let mut matches: Vec<Match> = Vec::new();
        for l in &lists {
            matches.extend(l.match_digests(&hashes.md5, &hashes.sha256));
            let found = if hashes.media == "image" {
                l.match_pdq(&hashes.usable, self.policy.max_distance)
            } else {
                l.match_frames(&hashes.usable, self.policy.max_distance)
            };
            match found {
                Ok(m) => matches.extend(m),
                Err(e) => return failed(ErrorClass::Retryable, format!("matching {}: {e}", l.meta.name)),
            }
        }
        let checked: Vec<String> = lists
            .iter()
            .map(|l| format!("{}@v{}", l.meta.name, l.meta.version))
            .collect();
        if matches.is_empty() {
            return self.clean(job, &hashes, &checked).await;
        }
        self.block(job, &p.input, &matches).await
    }

    async fn clean(&self, job: &ClaimedJob, hashes: &Hashes, checked: &[String]) -> JobOutcome {
        let report = serde_json::json!({
            "verdict": "clean",
            "lists": checked,
            "hashes": hashes,
        });
        match self
            .outputs
            .put(
                &job.spec,
                "report.json",
                Bytes::from(report.to_string()),
                "application/json",
            )
            .await
        {
            Ok(mut r) => {
                r.details.insert("verdict".into(), "clean".into());
                r.details.insert("media".into(), hashes.media.into());
                r.details.insert("lists".into(), checked.join(","));
                if let Some(h) = hashes.pdq.first() {
                    r.details.insert("pdq".into(), h.clone());
                }
                if let Some(q) = hashes.quality.first() {
                    r.details.insert("quality".into(), q.to_string());
                }
                JobOutcome::Succeeded(Completion {
                    output: Some(r),
                    usage: Some(Usage {
                        outputs: Some(0),
                        ..Default::default()
                    }),
                })
            }
            Err(e) => failed(ErrorClass::Retryable, format!("storing the report: {e}")),
        }
    }

    /// Deletes, lowers trust, records, counts — then ends the job `blocked`. A step that fails
    /// makes the attempt retryable, so a retry finishes what this one began (every step is
    /// idempotent).
    async fn block(&self, job: &ClaimedJob, input: &str, matches: &[Match]) -> JobOutcome {
        let spec = &job.spec;
        let mut deleted = 0u32;
        match self.outputs.delete(input).await {
            Ok(true) => deleted += 1,
            Ok(false) => {}
            Err(e) => return failed(ErrorClass::Retryable, format!("deleting the matched input: {e}")),
        }
        match self.outputs.delete_job(spec).await {
            Ok(n) => deleted += n as u32,
            Err(e) => return failed(ErrorClass::Retryable, format!("deleting the job's files: {e}")),
        }
        let standing = match self
            .trust
            .penalize(
                &spec.tenant,
                &spec.user,
                self.policy.trust_penalty,
                self.policy.block_below,
            )
            .await
        {
            Ok(s) => s,
            Err(e) => return failed(ErrorClass::Retryable, format!("trust: {e}")),
        };
        let action = "blocked_deleted";
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // One record per matching list, at its nearest match.
        let mut seen = std::collections::BTreeSet::new();
        for m in matches {
            if !seen.insert(m.list.clone()) {
                continue;
            }
            let (kind, distance) = match &m.kind {
                MatchKind::Pdq { distance, .. } => ("pdq", Some(*distance)),
                MatchKind::Md5 => ("md5", None),
                MatchKind::Sha256 => ("sha256", None),
            };
            let event = ModerationEvent {
                id: format!("{}-{}", spec.id, m.list),
                at_ms: now,
                category: m.category.clone(),
                list: m.list.clone(),
                list_version: m.version,
                match_kind: kind.into(),
                distance,
                action: action.into(),
                objects_deleted: deleted,
                tenant: spec.tenant.clone(),
                user: spec.user.clone(),
                job_id: spec.id.to_string(),
                prompt_sha256: None,
                trust_score: standing.score,
                user_blocked: standing.blocked,
            };
            if let Err(e) = self.log.record(&event).await {
                return failed(ErrorClass::Retryable, format!("moderation log: {e}"));
            }
            self.events
                .get_or_create(&ModerationLabels {
                    category: m.category.clone(),
                    action: action.into(),
                })
                .inc();
        }
        let Some(first) = matches.first() else {
            return failed(ErrorClass::Retryable, "no match to act on");
        };
        let how = match &first.kind {
            MatchKind::Pdq { distance, .. } => format!("PDQ distance {distance}"),
            MatchKind::Md5 => "MD5".into(),
            MatchKind::Sha256 => "SHA-256".into(),
        };
        tracing::warn!(
            job_id = %spec.id,
            tenant = %spec.tenant,
            list = %first.list,
            category = %first.category,
            deleted,
            user_blocked = standing.blocked,
            "content matched an abuse hash list: blocked and deleted"
        );
        failed(
            ErrorClass::Blocked,
            format!(
                "blocked: matched list {} v{} ({}) by {how}; {deleted} object(s) deleted",
                first.list, first.version, first.category
            ),
        )
    }
}
