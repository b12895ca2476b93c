//! The abuse-hash scanner every worker shares: it hashes a media file — MD5 and SHA-256 of the
//! bytes; PDQ with its 8 dihedral variants for an image, vPDQ (one frame a second) for a
//! video — matches the hashes against the hash lists in Redis (`gantry_safety`), and on a match
//! takes the actions the platforms promise, at once: the job's files (and its input) are
//! deleted from the object store, the user's trust score drops (blocked below the threshold),
//! a moderation record is written per matching list (category, list and version, distance,
//! action, tenant, user, the prompt's SHA-256 — never media, never the prompt),
//! `gantry_moderation_events_total{category,action}` counts it, and the job ends `blocked`.
//!
//! Two callers: the `csam_hash` executor (a platform asks for one file to be checked) and
//! [`crate::executors::scanned`], which checks every output of a generate, upscale or
//! transcode job before its result is released. A file that cannot be hashed is never clean.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use gantry_codecs::pdq::video::{VpdqOptions, hash_video_watched};
use gantry_codecs::pdq::{Hash256, MIN_QUALITY, Prescale, hash_dihedral, luma_from_image};
use gantry_codecs::video::VideoLimits;
use gantry_codecs::{ImageLimits, MediaError};
use gantry_queue::{ErrorClass, JobOutcome, JobSpec};
use gantry_safety::review::{ReviewFile, ReviewItem, ReviewMatch, ReviewQueue, ReviewStatus};
use gantry_safety::{
    CategoryAction, Enforcer, Match, MatchKind, Matcher, ModerationEvent, ModerationLog, Penalty, Policies, Reports,
    SafetyError, Severity, Takedown, TrustRegistry, Vault,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::executors::failed;
use crate::executors::media_job::run_blocking;
use crate::outputs::{OutputStore, hex};

/// What a match does to the user.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CsamPolicy {
    /// Largest PDQ distance that matches (the reference's 31).
    pub max_distance: u32,
    /// Trust taken off the user per matched job.
    pub trust_penalty: f64,
    /// Trust taken off the user per generation a provider's safety system refused (a weaker
    /// signal than a hash match: providers refuse on their own, broader policies).
    pub refusal_penalty: f64,
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
            refusal_penalty: 0.1,
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

/// Labels of `gantry_output_scans_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScanLabels {
    /// The job kind whose outputs were scanned.
    pub kind: String,
    /// `clean`, `blocked` or `unhashable`.
    pub verdict: String,
}

/// Labels of `gantry_output_scan_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The job kind.
    pub kind: String,
}

/// The scanner's metrics (registered once however many executors share it).
#[derive(Clone, Debug)]
struct Metrics {
    events: Family<ModerationLabels, Counter>,
    scans: Family<ScanLabels, Counter>,
    scan_seconds: Family<KindLabel, Histogram>,
    registered: Arc<AtomicBool>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            events: Family::default(),
            scans: Family::default(),
            scan_seconds: Family::new_with_constructor(|| {
                gantry_queue::exposition::histogram([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
            }),
            registered: Arc::default(),
        }
    }
}

/// What hashing one file found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Hashes {
    /// `image` or `video`.
    pub media: &'static str,
    /// Hex MD5 of the bytes.
    pub md5: String,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// Image: the 8 dihedral hashes (original first); video: one per sampled frame.
    pub pdq: Vec<String>,
    /// PDQ quality of each hash (one for an image).
    pub quality: Vec<u8>,
    #[serde(skip)]
    usable: Vec<Hash256>,
}

/// What matching found.
#[derive(Debug)]
pub struct Verdict {
    /// Every match, across lists, with the index of the file it matched.
    pub matches: Vec<(usize, Match)>,
    /// The lists checked, as `name@vN`.
    pub checked: Vec<String>,
}

/// What the matches, by their lists' thresholds and their categories' policies, ask for.
#[derive(Debug, PartialEq)]
pub enum Disposition {
    /// No match: release.
    Clean,
    /// Matches of log-only categories: record them, release.
    Log(Vec<ReviewMatch>),
    /// Near-matches (none sure): withhold for a reviewer.
    Review(Vec<ReviewMatch>),
    /// A sure match: take down at once (the sure matches first).
    Block(Vec<ReviewMatch>),
}

/// A scanned file: its object key and its hashes.
pub type Scanned<'a> = (&'a str, &'a Hashes);

/// Hashes files, matches them, acts on matches.
#[derive(Clone, Debug)]
pub struct Scanner {
    outputs: OutputStore,
    matcher: Matcher,
    log: ModerationLog,
    trust: TrustRegistry,
    enforcer: Enforcer,
    reviews: ReviewQueue,
    policy: CsamPolicy,
    time_limit: Duration,
    metrics: Metrics,
    cache: Arc<std::sync::Mutex<HashCache>>,
}

/// Perceptual hashes of recently hashed bytes, by SHA-256: identical bytes (a retried job's
/// outputs, a provider returning the same image twice) are decoded and hashed once. Only the
/// hashes are kept — every file is still matched against the lists as they are now.
#[derive(Debug, Default)]
struct HashCache {
    by_sha: std::collections::HashMap<String, Hashes>,
    order: std::collections::VecDeque<String>,
}

impl HashCache {
    const CAPACITY: usize = 512;

    fn get(&self, sha256: &str, md5: &str) -> Option<Hashes> {
        self.by_sha.get(sha256).filter(|h| h.md5 == md5).cloned()
    }

    fn put(&mut self, h: &Hashes) {
        if self.by_sha.insert(h.sha256.clone(), h.clone()).is_none() {
            self.order.push_back(h.sha256.clone());
        }
        while self.order.len() > Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.by_sha.remove(&old);
            }
        }
    }
}

impl Scanner {
    /// A scanner over the objects of `outputs`, matching through `matcher`, with the safety
    /// records (policies, reviews, reports) on `conn`. Evidence goes to the quarantine prefix
    /// of `outputs`, and cannot be sealed until [`Scanner::with_vault`] gives it keys.
    pub fn new(
        conn: gantry_queue::RedisConn,
        outputs: OutputStore,
        matcher: Matcher,
        (log, trust): (ModerationLog, TrustRegistry),
        policy: CsamPolicy,
    ) -> Self {
        let vault = Vault::new(conn.clone(), outputs.quarantine_within(), None);
        let enforcer = Enforcer::new(
            outputs.clone(),
            vault,
            (
                Policies::new(conn.clone()),
                log.clone(),
                trust.clone(),
                Reports::new(conn.clone()),
            ),
            Penalty {
                amount: policy.trust_penalty,
                block_below: policy.block_below,
            },
        );
        Self {
            outputs,
            matcher,
            log,
            trust,
            enforcer,
            reviews: ReviewQueue::new(conn),
            policy,
            time_limit: Duration::from_secs(280),
            metrics: Metrics::default(),
            cache: Arc::default(),
        }
    }

    /// The same scanner preserving evidence in `vault` (its quarantine and keys).
    pub fn with_vault(mut self, vault: Vault) -> Self {
        self.enforcer = self.enforcer.with_vault(vault);
        self
    }

    /// The object store it reads and deletes in.
    pub fn outputs(&self) -> &OutputStore {
        &self.outputs
    }

    /// The takedown path it acts through.
    pub fn enforcer(&self) -> &Enforcer {
        &self.enforcer
    }

    /// Registers the scanner's metrics (the first call only: executors share one scanner).
    pub fn register_metrics(&self, registry: &mut Registry) {
        if self.metrics.registered.swap(true, Ordering::SeqCst) {
            return;
        }
        registry.register(
            "gantry_moderation_events",
            "Moderation actions taken on matched content, by category and action",
            self.metrics.events.clone(),
        );
        registry.register(
            "gantry_output_scans",
            "Job outputs scanned against the abuse hash lists before release, by kind and verdict",
            self.metrics.scans.clone(),
        );
        registry.register(
            "gantry_output_scan_duration_seconds",
            "Time to hash and match all of one job's outputs, by kind",
            self.metrics.scan_seconds.clone(),
        );
    }

    /// Counts one job's output scan.
    pub(crate) fn count_scan(&self, kind: &str, verdict: &str, took: Duration) {
        self.metrics
            .scans
            .get_or_create(&ScanLabels {
                kind: kind.into(),
                verdict: verdict.into(),
            })
            .inc();
        self.metrics
            .scan_seconds
            .get_or_create(&KindLabel { kind: kind.into() })
            .observe(took.as_secs_f64());
    }

    /// Hashes the file at `path` (`media` is `image`, `video`, or sniffed when absent). An
    /// unhashable file fails: the input's fault is `permanent`, ours `retryable`.
    #[tracing::instrument(name = "scan.hash", skip_all)]
    pub async fn hash(&self, path: &Path, media: Option<&str>) -> Result<Hashes, JobOutcome> {
        self.hash_watched(path, media, Arc::default()).await
    }

    /// [`Scanner::hash`], keeping `done` at how far along a video's hashing is (thousandths of
    /// its duration), for progress reports.
    pub async fn hash_watched(
        &self,
        path: &Path,
        media: Option<&str>,
        done: Arc<AtomicU32>,
    ) -> Result<Hashes, JobOutcome> {
        let (path, media, spf) = (path.to_owned(), media.map(str::to_owned), self.policy.seconds_per_frame);
        let cache = self.cache.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, limit_secs) = (stop.clone(), self.time_limit.as_secs().max(1));
        let out = run_blocking(self.time_limit, move || {
            let (md5, sha256, head) = digests(&path)?;
            let cached = cache.lock().ok().and_then(|c| c.get(&sha256, &md5));
            if let Some(h) = cached.filter(|h| media.as_deref().is_none_or(|m| m == h.media)) {
                return Ok(h);
            }
            let h = hash_file(
                &path,
                media.as_deref(),
                spf,
                (md5, sha256, head),
                (&flag, limit_secs, &done),
            )?;
            if let Ok(mut c) = cache.lock() {
                c.put(&h);
            }
            Ok(h)
        })
        .await;
        // A timed-out attempt returns while its thread still decodes: this ends the frame loop
        // at its next frame instead of letting it run on.
        stop.store(true, Ordering::Relaxed);
        out
    }

    /// Matches `hashes` against the named lists (every list when `lists` is empty). A named
    /// list that does not exist fails the job: nothing passes against a list it never saw.
    #[tracing::instrument(name = "scan.match", skip_all, fields(files = hashes.len()))]
    pub async fn check(&self, hashes: &[Scanned<'_>], lists: &[String]) -> Result<Verdict, JobOutcome> {
        let loaded = match self.matcher.lists(lists).await {
            Ok(l) => l,
            Err(SafetyError::NotFound(n)) => {
                return Err(failed(ErrorClass::Permanent, format!("no hash list named {n:?}")));
            }
            Err(e) => return Err(failed(ErrorClass::Retryable, format!("hash lists: {e}"))),
        };
        let mut matches: Vec<(usize, Match)> = Vec::new();
        for l in &loaded {
            for (i, (_, h)) in hashes.iter().enumerate() {
                matches.extend(l.match_digests(&h.md5, &h.sha256).into_iter().map(|m| (i, m)));
                let found = if h.media == "image" {
                    l.match_pdq(&h.usable, self.policy.max_distance)
                } else {
                    l.match_frames(&h.usable, self.policy.max_distance)
                };
                match found {
                    Ok(m) => matches.extend(m.into_iter().map(|m| (i, m))),
                    Err(e) => return Err(failed(ErrorClass::Retryable, format!("matching {}: {e}", l.meta.name))),
                }
            }
        }
        let checked = loaded
            .iter()
            .map(|l| format!("{}@v{}", l.meta.name, l.meta.version))
            .collect();
        Ok(Verdict { matches, checked })
    }

    /// What `verdict` asks for, by each match's severity and its category's policy. Near
    /// matches of bytes a reviewer cleared before (the allow list) are dropped; sure ones never.
    pub async fn dispose(&self, verdict: &Verdict, files: &[Scanned<'_>]) -> Result<Disposition, JobOutcome> {
        if verdict.matches.is_empty() {
            return Ok(Disposition::Clean);
        }
        let retry = |e: SafetyError| failed(ErrorClass::Retryable, format!("safety policy: {e}"));
        let mut policies = std::collections::HashMap::new();
        let (mut block, mut review, mut log) = (Vec::new(), Vec::new(), Vec::new());
        for (file, m) in &verdict.matches {
            let action = match policies.get(&m.category) {
                Some(a) => *a,
                None => {
                    let a = self.enforcer.policies().get(&m.category).await.map_err(retry)?.action;
                    policies.insert(m.category.clone(), a);
                    a
                }
            };
            let rm = review_match(*file, m);
            match (action, m.severity) {
                (CategoryAction::Log, _) => log.push(rm),
                (CategoryAction::Block, Severity::Block) => block.push(rm),
                (CategoryAction::Block | CategoryAction::Review, _) => {
                    let sha = files.get(*file).map(|(_, h)| h.sha256.as_str()).unwrap_or_default();
                    if !self.reviews.is_allowed(sha).await.map_err(retry)? {
                        review.push(rm);
                    }
                }
            }
        }
        Ok(if !block.is_empty() {
            block.extend(review);
            Disposition::Block(block)
        } else if !review.is_empty() {
            Disposition::Review(review)
        } else if !log.is_empty() {
            Disposition::Log(log)
        } else {
            Disposition::Clean
        })
    }

    /// Takes the job's content down for `matches` (the first a sure one): its files and
    /// `input` (if any) preserved where the category says, deleted, the user's trust lowered,
    /// events recorded and counted, a report made where the category reports — then the job
    /// ends `blocked`. A step that fails makes the attempt retryable, so a retry finishes what
    /// this one began (every step is idempotent).
    pub async fn block(&self, spec: &JobSpec, input: Option<&str>, matches: &[ReviewMatch]) -> JobOutcome {
        // Nothing is deleted and no trust is lowered without a match to act on.
        let Some(first) = matches.first() else {
            return failed(ErrorClass::Retryable, "no match to act on");
        };
        let job_id = spec.id.to_string();
        let takedown = Takedown {
            job_id: &job_id,
            tenant: &spec.tenant,
            user: &spec.user,
            prompt_sha256: prompt_digest(spec),
            input,
            matches,
            reviewer: None,
        };
        let done = match self.enforcer.take_down(&takedown).await {
            Ok(d) => d,
            Err(e) => return failed(ErrorClass::Retryable, format!("taking the content down: {e}")),
        };
        for category in &done.categories {
            self.count_event(category, done.action);
        }
        let how = match first.distance {
            Some(d) => format!("PDQ distance {d}"),
            None => first.match_kind.to_uppercase(),
        };
        tracing::warn!(
            job_id = %spec.id,
            kind = %spec.kind(),
            tenant = %spec.tenant,
            list = %first.list,
            category = %first.category,
            deleted = done.deleted,
            preserved = done.evidence_id.is_some(),
            reported = done.report.is_some(),
            user_blocked = done.standing.blocked,
            "content matched an abuse hash list: blocked and deleted"
        );
        failed(
            ErrorClass::Blocked,
            format!(
                "blocked: matched list {} v{} ({}) by {how}; {} object(s) deleted",
                first.list, first.list_version, first.category, done.deleted
            ),
        )
    }

    /// Withholds the job's outputs for a reviewer: an item in the review queue (the files, the
    /// matches, and `held`, the result released if the reviewer clears it), a moderation event
    /// per list (`withheld_for_review`), and the job held in status `review`.
    pub async fn hold(
        &self,
        spec: &JobSpec,
        input: Option<&str>,
        files: &[Scanned<'_>],
        matches: &[ReviewMatch],
        held: gantry_queue::Completion,
    ) -> JobOutcome {
        let Some(first) = matches.first() else {
            return failed(ErrorClass::Retryable, "no match to hold for");
        };
        let job_id = spec.id.to_string();
        let item = ReviewItem {
            id: job_id.clone(),
            created_at_ms: gantry_safety::trust::now_ms(),
            status: ReviewStatus::Pending,
            category: first.category.clone(),
            tenant: spec.tenant.clone(),
            user: spec.user.clone(),
            user_key: gantry_queue::user_key(&spec.tenant, &spec.user),
            kind: spec.kind().as_str().to_owned(),
            prompt_sha256: prompt_digest(spec),
            input: input.map(str::to_owned),
            files: files
                .iter()
                .map(|(key, h)| ReviewFile {
                    name: name_of(key).to_owned(),
                    object: (*key).to_owned(),
                    sha256: h.sha256.clone(),
                    md5: h.md5.clone(),
                })
                .collect(),
            matches: matches.to_vec(),
            held,
            decision: None,
            evidence_id: None,
            report_id: None,
        };
        let recorded = async {
            self.reviews.open(&item).await?;
            let standing = self.enforcer.standing(&spec.tenant, &spec.user).await?;
            let takedown = Takedown {
                job_id: &job_id,
                tenant: &spec.tenant,
                user: &spec.user,
                prompt_sha256: item.prompt_sha256.clone(),
                input: None,
                matches,
                reviewer: None,
            };
            self.enforcer
                .record_events(&takedown, "withheld_for_review", 0, standing, "-review")
                .await
        };
        let categories = match recorded.await {
            Ok(c) => c,
            Err(SafetyError::Conflict(why)) => return failed(ErrorClass::Permanent, why),
            Err(e) => return failed(ErrorClass::Retryable, format!("review queue: {e}")),
        };
        for category in &categories {
            self.count_event(category, "withheld_for_review");
        }
        tracing::warn!(
            job_id = %spec.id,
            kind = %spec.kind(),
            tenant = %spec.tenant,
            list = %first.list,
            category = %first.category,
            distance = first.distance,
            "content came close to an abuse hash: withheld for review"
        );
        failed(
            ErrorClass::Withheld,
            format!(
                "withheld for review: close to list {} v{} ({}){}",
                first.list,
                first.list_version,
                first.category,
                first
                    .distance
                    .map(|d| format!(" at PDQ distance {d}"))
                    .unwrap_or_default()
            ),
        )
    }

    /// Records log-only matches (the content is released).
    pub async fn log_matches(&self, spec: &JobSpec, matches: &[ReviewMatch]) -> Result<(), JobOutcome> {
        let job_id = spec.id.to_string();
        let t = Takedown {
            job_id: &job_id,
            tenant: &spec.tenant,
            user: &spec.user,
            prompt_sha256: prompt_digest(spec),
            input: None,
            matches,
            reviewer: None,
        };
        let recorded = async {
            let standing = self.enforcer.standing(&spec.tenant, &spec.user).await?;
            self.enforcer.record_events(&t, "logged", 0, standing, "-log").await
        };
        match recorded.await {
            Ok(categories) => {
                for c in &categories {
                    self.count_event(c, "logged");
                }
                Ok(())
            }
            Err(e) => Err(failed(ErrorClass::Retryable, format!("moderation log: {e}"))),
        }
    }

    fn count_event(&self, category: &str, action: &str) {
        self.metrics
            .events
            .get_or_create(&ModerationLabels {
                category: category.into(),
                action: action.into(),
            })
            .inc();
    }
}

/// A matcher's match as the review queue, the takedown and the reports record it.
fn review_match(file: usize, m: &Match) -> ReviewMatch {
    let (kind, distance) = match_kind(m);
    ReviewMatch {
        file,
        list: m.list.clone(),
        list_version: m.version,
        category: m.category.clone(),
        match_kind: kind.into(),
        distance,
        entry: m.entry.clone(),
    }
}

fn name_of(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

impl Scanner {
    /// Records a provider's safety refusal of a generation as a moderation event and lowers the
    /// user's trust by [`CsamPolicy::refusal_penalty`]. The category says what was refused
    /// (`unsafe_prompt`, or `unsafe_output` when the provider's code says the output was), the
    /// list `provider:<name>`, the match kind the provider's own code; the prompt only by its
    /// SHA-256. One event per job (a retry overwrites it). Failures are logged: the job fails
    /// permanently either way, and the provider is not called again to record it.
    pub async fn provider_refusal(&self, spec: &JobSpec, provider: &str, code: Option<&str>) {
        let standing = match self
            .trust
            .penalize(
                &spec.tenant,
                &spec.user,
                self.policy.refusal_penalty,
                self.policy.block_below,
                (
                    "provider_refusal",
                    &format!(
                        "job {}: {provider} refused it for safety ({})",
                        spec.id,
                        code.unwrap_or("moderated")
                    ),
                ),
            )
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(job_id = %spec.id, error = %e, "lowering trust after a provider refusal failed");
                return;
            }
        };
        let category = refusal_category(code);
        let action = "refused_by_provider";
        let prompt_sha256 = prompt_digest(spec);
        let event = ModerationEvent {
            id: format!("{}-provider", spec.id),
            at_ms: gantry_safety::trust::now_ms(),
            category: category.into(),
            list: format!("provider:{provider}"),
            list_version: 0,
            match_kind: code.unwrap_or("moderated").chars().take(64).collect(),
            distance: None,
            action: action.into(),
            objects_deleted: 0,
            tenant: spec.tenant.clone(),
            user: spec.user.clone(),
            job_id: spec.id.to_string(),
            prompt_sha256,
            trust_score: standing.score,
            user_blocked: standing.blocked,
        };
        if let Err(e) = self.log.record(&event).await {
            tracing::error!(job_id = %spec.id, error = %e, "recording a provider refusal failed");
            return;
        }
        self.count_event(category, action);
        tracing::warn!(
            job_id = %spec.id,
            tenant = %spec.tenant,
            provider,
            category,
            user_blocked = standing.blocked,
            "the provider refused the generation for safety"
        );
    }
}

/// A generate job's prompt as moderation records keep it: its SHA-256, never the text.
fn prompt_digest(spec: &JobSpec) -> Option<String> {
    match &spec.body {
        gantry_queue::Payload::Generate(g) => Some(crate::outputs::sha256_hex(g.prompt.as_bytes())),
        _ => None,
    }
}

/// What a provider's refusal code says was refused: the output when the code names it (Ark's
/// `Output…SensitiveContentDetected`, Gemini's `IMAGE_SAFETY`, BFL's `Content Moderated`),
/// else the prompt.
fn refusal_category(code: Option<&str>) -> &'static str {
    let c = code.unwrap_or_default();
    if c.starts_with("Output") || c == "IMAGE_SAFETY" || c.eq_ignore_ascii_case("content moderated") {
        "unsafe_output"
    } else {
        "unsafe_prompt"
    }
}

fn match_kind(m: &Match) -> (&'static str, Option<u32>) {
    match &m.kind {
        MatchKind::Pdq { distance, .. } => ("pdq", Some(*distance)),
        MatchKind::Md5 => ("md5", None),
        MatchKind::Sha256 => ("sha256", None),
    }
}

/// MD5 and SHA-256 of a file, read in 1 MiB pieces (a video is never held whole), and its
/// first bytes (to tell an image from a video).
fn digests(path: &Path) -> Result<(String, String, Vec<u8>), MediaError> {
    use md5::Digest as _;
    use std::io::Read as _;
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

fn scratch(e: std::io::Error) -> MediaError {
    MediaError::Internal(format!("scratch space: {e}"))
}

/// Hashes the file at `path` (blocking).
fn hash_file(
    path: &Path,
    media: Option<&str>,
    seconds_per_frame: f64,
    (md5, sha256, head): (String, String, Vec<u8>),
    (stop, limit_secs, done): (&AtomicBool, u64, &AtomicU32),
) -> Result<Hashes, MediaError> {
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
        let frames = hash_video_watched(path, &opts, &VideoLimits::default(), stop, limit_secs, done)?;
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

#[cfg(test)]
mod tests {
    use super::refusal_category;

    #[test]
    fn a_refusal_names_the_output_only_when_the_provider_says_so() {
        for output in [
            "OutputImageSensitiveContentDetected",
            "OutputVideoSensitiveContentDetected",
            "IMAGE_SAFETY",
            "Content Moderated",
        ] {
            assert_eq!(refusal_category(Some(output)), "unsafe_output", "{output}");
        }
        for prompt in [
            Some("moderation_blocked"),
            Some("InputTextSensitiveContentDetected"),
            Some("SAFETY"),
            Some("Request Moderated"),
            Some("1301"),
            None,
        ] {
            assert_eq!(refusal_category(prompt), "unsafe_prompt", "{prompt:?}");
        }
    }
}
