//! The `export` executor: a user's data, on their request, as one tar archive in the store (the
//! export job's output `export.tar`, under the user's folder, so an erasure deletes it too).
//!
//! It walks the user's index in every pool ([`QueueClient::user_page`]) a page at a time and
//! writes, as it goes, to a scratch file — never the whole archive, nor a whole output, in
//! memory:
//! - `jobs/<id>/job.json` for each job: kind, status, times, attempts, the request as the
//!   scheduler admitted it (provider and model as routed, the prompt and negative prompt
//!   *opened*: the user's own data), its credits, its error, its pipeline step;
//! - `jobs/<id>/outputs/<name>`: every file a *succeeded* job released (a withheld or blocked
//!   job's files were deleted before release, and are never read);
//! - `jobs/<id>/references/<n>-<name>`: reference images the job took from the store (a
//!   reference by URL is named in `job.json`, never fetched again);
//! - `pipelines/<id>.json`: the user's pipelines;
//! - `trust.json` and `moderation.json`, only when the request asked (the tenant's policy);
//! - `manifest.json`, last: what is included, counts, and the size and SHA-256 of every file.
//!
//! Another export job of the user's is not exported (nor its archive). Its progress is the
//! share of the user's index read.
//!
//! **Resumable.** Every `--export-part-jobs` jobs (10,000; a part ends at a page's end), the
//! part written so far goes to the store (`export.part-NNNNN`, the tar without its end blocks,
//! and `export.part-NNNNN.files`, its files as the manifest lists them), then a checkpoint to
//! the export job's own record (field `export_checkpoint`: parts stored, the pool and cursor the
//! walk is at, the counts). An attempt that finds a checkpoint — its worker died, the lease
//! expired, the job came back — takes the parts up and walks on from there. Once the whole
//! archive is stored, the parts and the checkpoint are deleted. The parts live under the user's
//! folder and the checkpoint in the job's record, so an erasure takes both along (and a
//! checkpoint is never written to a record that is gone).

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::Path;

use gantry_queue::{
    ClaimedJob, Completion, ErrorClass, ExportPayload, HandlerFuture, JobContext, JobKind, JobOutcome, JobRecord,
    JobStatus, Payload, Pool, ProgressHandle, QueueClient, RedisConn, Stage, UserCursor, UserItem,
};
use gantry_safety::{ModerationLog, TrustRegistry};
use gantry_store::OutputStore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Executor, failed};

/// The archive's name among the export job's outputs.
pub const ARCHIVE: &str = "export.tar";
/// The manifest's format.
pub const FORMAT: &str = "gantry-export/1";
/// Ids of a user's index read per page.
const PAGE: usize = 500;
/// Jobs per stored part of an archive, unless configured.
pub const DEFAULT_PART_JOBS: u64 = 10_000;
/// The export job's record's field that holds its checkpoint.
const CHECKPOINT_FIELD: &str = "export_checkpoint";
/// Writes a checkpoint into a record that still exists (never recreates an erased one).
static SAVE_CHECKPOINT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end return -1",
    )
});
/// Largest output or reference copied into an archive.
const MAX_FILE_BYTES: u64 = 4 << 30;

/// Runs `export` jobs.
#[derive(Clone, Debug)]
pub struct ExportExecutor {
    queue: QueueClient,
    store: OutputStore,
    conn: RedisConn,
    trust: TrustRegistry,
    moderation: ModerationLog,
    /// Jobs per part: after each, the part goes to the store and the walk's position to Redis,
    /// so an attempt that dies is resumed from there.
    part_jobs: u64,
}

impl ExportExecutor {
    /// Reads records through `queue` (which must hold the data keys, to open prompts), outputs
    /// from and the archive to `store`, credits, trust and moderation records (kept as
    /// `retention` says) through `conn`.
    pub fn new(
        queue: QueueClient,
        store: OutputStore,
        conn: RedisConn,
        retention: &gantry_queue::RetentionPolicy,
    ) -> Self {
        Self {
            queue,
            store,
            trust: TrustRegistry::new(conn.clone()),
            moderation: ModerationLog::new(conn.clone(), retention.into()),
            conn,
            part_jobs: DEFAULT_PART_JOBS,
        }
    }

    /// Stores a part of the archive, and the walk's position, every `jobs` jobs (at least 1).
    pub fn with_part_jobs(mut self, jobs: u64) -> Self {
        self.part_jobs = jobs.max(1);
        self
    }
}

impl Executor for ExportExecutor {
    fn kind(&self) -> JobKind {
        JobKind::Export
    }

    fn run(&self, job: ClaimedJob, ctx: JobContext) -> HandlerFuture {
        let this = self.clone();
        Box::pin(async move {
            let Payload::Export(p) = &job.spec.body else {
                return failed(ErrorClass::Permanent, "not an export payload");
            };
            tokio::select! {
                out = this.export(&job, p, &ctx.progress) => out,
                _ = ctx.cancel.cancelled() => failed(ErrorClass::Cancelled, "stopped"),
            }
        })
    }
}

/// An error of one export attempt, with the class it fails as.
#[derive(Debug)]
pub struct Failed(pub ErrorClass, pub String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.1, self.0.as_str())
    }
}

impl std::error::Error for Failed {}

/// What an archive holds, in numbers.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ExportSummary {
    /// Jobs.
    pub jobs: u64,
    /// Pipelines.
    pub pipelines: u64,
    /// Outputs copied in.
    pub outputs: u64,
    /// Reference images copied in.
    pub references: u64,
    /// Files, the manifest included.
    pub files: u64,
}

impl<E: std::fmt::Display> From<(ErrorClass, &str, E)> for Failed {
    fn from((class, what, e): (ErrorClass, &str, E)) -> Self {
        Self(class, format!("{what}: {e}"))
    }
}

impl ExportExecutor {
    async fn export(&self, job: &ClaimedJob, p: &ExportPayload, progress: &ProgressHandle) -> JobOutcome {
        match self.build(job, p, progress).await {
            Ok(c) => JobOutcome::Succeeded(c),
            Err(Failed(class, m)) => failed(class, m),
        }
    }

    async fn build(
        &self,
        job: &ClaimedJob,
        p: &ExportPayload,
        progress: &ProgressHandle,
    ) -> Result<Completion, Failed> {
        let spec = &job.spec;
        let dir = tempfile::tempdir().map_err(|e| Failed::from((ErrorClass::Retryable, "scratch space", e)))?;
        let path = dir.path().join(ARCHIVE);
        let parts = Parts::new(spec, &job.pool);
        let counts = self
            .write_archive(
                &spec.tenant,
                &spec.user,
                &spec.id.to_string(),
                p,
                &path,
                progress,
                Some(&parts),
            )
            .await?;
        progress.report(Stage::Uploading, Some(99.0));
        let mut out = self
            .store
            .put_file(spec, ARCHIVE, &path, "application/x-tar")
            .await
            .map_err(|e| Failed::from((ErrorClass::Retryable, "storing the archive", e)))?;
        // Whole in the store: the parts and the checkpoint have served.
        parts.clean(&self.store, &self.conn).await?;
        out.details.insert("jobs".into(), counts.jobs.to_string());
        out.details.insert("pipelines".into(), counts.pipelines.to_string());
        out.details.insert("files".into(), counts.files.to_string());
        out.details.insert("outputs".into(), counts.outputs.to_string());
        out.details.insert("references".into(), counts.references.to_string());
        tracing::info!(
            jobs = counts.jobs,
            pipelines = counts.pipelines,
            files = counts.files,
            bytes = out.size_bytes,
            "user data exported"
        );
        Ok(Completion {
            output: Some(out),
            usage: None,
        })
    }

    /// Writes the archive of `user` of `tenant`'s data to `path` (the export `export_id`;
    /// see the module docs): what the job does before it stores the archive, and what
    /// `gantry users export` does to a local file. With `parts` (the job), the archive is also
    /// stored in parts as it grows, each with a checkpoint of the walk, and an earlier
    /// attempt's parts are taken up where it stopped.
    #[allow(clippy::too_many_arguments)]
    pub async fn write_archive(
        &self,
        tenant: &str,
        user: &str,
        export_id: &str,
        p: &ExportPayload,
        path: &Path,
        progress: &ProgressHandle,
        parts: Option<&Parts<'_>>,
    ) -> Result<ExportSummary, Failed> {
        use ErrorClass::Retryable;
        let scratch = tempfile::tempdir().map_err(|e| Failed::from((Retryable, "scratch space", e)))?;
        let mut pools = self
            .queue
            .pools()
            .await
            .map_err(|e| Failed::from((Retryable, "listing pools", e)))?;
        // Walked in name order, so a resumed attempt walks them as the first one did.
        pools.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        // The share of the user's index read is the progress.
        let mut total = 0u64;
        for pool in &pools {
            total += self
                .queue
                .user_index_len(pool, tenant, user)
                .await
                .map_err(|e| Failed::from((Retryable, "the user's index", e)))?;
        }
        // Where an earlier attempt stopped: its parts are the archive's start.
        let mut at = match parts {
            Some(pt) => pt.checkpoint(&self.conn).await?,
            None => None,
        }
        .unwrap_or_default();
        let mut lists = Vec::new();
        for n in 0..at.parts {
            let part = scratch.path().join("part");
            for (name, to) in [
                (pt_name(n), &part),
                (pt_list_name(n), &scratch.path().join(format!("files-{n}.jsonl"))),
            ] {
                let key = parts.map(|pt| pt.key(&name)).transpose()?.unwrap_or_default();
                self.store
                    .download(&key, to, u64::MAX)
                    .await
                    .map_err(|e| Failed::from((Retryable, "reading an earlier attempt's part", e)))?;
            }
            append_file(path, &part).map_err(|e| Failed::from((Retryable, "joining the archive's parts", e)))?;
            lists.push(scratch.path().join(format!("files-{n}.jsonl")));
        }
        if at.parts > 0 {
            tracing::info!(
                parts = at.parts,
                jobs = at.counts.jobs,
                "resuming an export where its last attempt stopped"
            );
        }
        let mut counts = std::mem::take(&mut at.counts);
        let mut read = at.read;
        let mut files = at.files;
        // The first part of a fresh archive is written in place; later ones beside it.
        let part_path = |n: u32| {
            if n == 0 {
                path.to_owned()
            } else {
                scratch.path().join(format!("part-{n}.tar"))
            }
        };
        let mut archive = Archive::create(
            &part_path(at.parts),
            &scratch.path().join(format!("files-{}.jsonl", at.parts)),
        )
        .map_err(|e| Failed::from((Retryable, "the archive", e)))?;
        let mut in_part = 0u64;
        // A part ends at a page's end: pages no longer than a part.
        let page_len = match parts {
            Some(_) => PAGE.min(usize::try_from(self.part_jobs).unwrap_or(PAGE)),
            None => PAGE,
        };
        progress.report(Stage::Working, Some(0.0));
        // Ids seen (16 bytes each): an id indexed twice is exported once (within an attempt).
        let mut seen: HashSet<gantry_queue::JobId> = HashSet::new();
        for pool in &pools {
            let mut cursor: Option<UserCursor> = None;
            if let Some(from) = &at.pool {
                match pool.as_str().cmp(from.as_str()) {
                    std::cmp::Ordering::Less => continue,
                    std::cmp::Ordering::Equal if at.next_pool => continue,
                    std::cmp::Ordering::Equal => cursor = at.cursor,
                    std::cmp::Ordering::Greater => {}
                }
            }
            loop {
                let page = self
                    .queue
                    .user_page(pool, tenant, user, cursor, page_len)
                    .await
                    .map_err(|e| Failed::from((Retryable, "reading the user's records", e)))?;
                read += page.read as u64;
                // The page's jobs' credits, in one round trip.
                let jobs: Vec<String> = page
                    .items
                    .iter()
                    .filter_map(|i| match i {
                        UserItem::Job(r) => Some(r.spec.id.to_string()),
                        UserItem::Pipeline(_) => None,
                    })
                    .collect();
                let mut credits = self.credits(tenant, &jobs).await?.into_iter();
                for item in page.items {
                    match item {
                        UserItem::Job(r) => {
                            let credits = credits.next().unwrap_or(Value::Null);
                            // Exports are not exported, this one least of all.
                            if r.spec.kind() == JobKind::Export || !seen.insert(r.spec.id) {
                                continue;
                            }
                            self.add_job(&mut archive, pool, &r, credits, scratch.path(), &mut counts)
                                .await?;
                            in_part += 1;
                        }
                        UserItem::Pipeline(pl) => {
                            if pl.id.parse().is_ok_and(|id| !seen.insert(id)) {
                                continue;
                            }
                            let doc = json!({
                                "id": pl.id,
                                "pool": pool.as_str(),
                                "created_at_ms": pl.created_at_ms,
                                "state": pl.state,
                                "steps": pl.steps,
                            });
                            archive.add_json(&format!("pipelines/{}.json", pl.id), &doc)?;
                            counts.pipelines += 1;
                            in_part += 1;
                        }
                    }
                }
                if total > 0 {
                    progress.report(Stage::Working, Some((read as f32 / total as f32 * 100.0).min(99.0)));
                }
                #[cfg(debug_assertions)]
                if let Some(ms) = std::env::var("GANTRY_TEST_EXPORT_PAGE_DELAY_MS")
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    // The tests' slow export (debug builds only): time to act while it runs.
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
                // A full part goes to the store, then where the walk stands, to Redis.
                if let Some(pt) = parts
                    && in_part >= self.part_jobs
                {
                    let n = at.parts;
                    files += archive.files;
                    let list = archive.listed_path.clone();
                    let tar = archive.tar_path.clone();
                    archive
                        .end_part()
                        .map_err(|e| Failed::from((Retryable, "closing a part", e)))?;
                    pt.store_part(&self.store, n, &tar, &list).await?;
                    if tar.as_path() != path {
                        append_file(path, &tar)
                            .map_err(|e| Failed::from((Retryable, "joining the archive's parts", e)))?;
                        let _ = std::fs::remove_file(&tar);
                    }
                    lists.push(list);
                    at = Checkpoint {
                        parts: n + 1,
                        pool: Some(pool.as_str().to_owned()),
                        cursor: page.next,
                        // A pool read to its end: the next one starts from its beginning.
                        next_pool: page.next.is_none(),
                        counts: Counts::default(),
                        read,
                        files,
                    };
                    at.counts = counts;
                    pt.save(&self.conn, &at).await?;
                    counts = std::mem::take(&mut at.counts);
                    #[cfg(debug_assertions)]
                    if std::env::var("GANTRY_TEST_ABORT_EXPORT_AFTER_PART").is_ok_and(|v| v == n.to_string()) {
                        // The crash tests' fault point (debug builds only).
                        tracing::error!(
                            part = n,
                            "GANTRY_TEST_ABORT_EXPORT_AFTER_PART: aborting after storing a part"
                        );
                        std::process::abort();
                    }
                    archive = Archive::create(
                        &part_path(n + 1),
                        &scratch.path().join(format!("files-{}.jsonl", n + 1)),
                    )
                    .map_err(|e| Failed::from((Retryable, "the archive", e)))?;
                    in_part = 0;
                }
                match page.next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
        }
        archive.files += files;
        if p.trust {
            let status = self
                .trust
                .status(tenant, user)
                .await
                .map_err(|e| Failed::from((Retryable, "trust standing", e)))?;
            let history = self
                .trust
                .history(tenant, user)
                .await
                .map_err(|e| Failed::from((Retryable, "trust history", e)))?;
            // Who changed it is the platform's business: an operator is named as one.
            let history: Vec<Value> = history
                .into_iter()
                .map(|h| {
                    let by = if h.by.starts_with("operator") {
                        "operator".to_owned()
                    } else {
                        h.by
                    };
                    json!({"at_ms": h.at_ms, "by": by, "action": h.action, "delta": h.delta,
                           "reason": h.reason, "score": h.score, "blocked": h.blocked})
                })
                .collect();
            archive.add_json(
                "trust.json",
                &json!({"score": status.score, "blocked": status.blocked, "history": history}),
            )?;
        }
        if p.moderation {
            let events = self
                .moderation
                .for_user(tenant, user)
                .await
                .map_err(|e| Failed::from((Retryable, "moderation records", e)))?;
            counts.moderation = events.len() as u64;
            let events: Vec<Value> = events
                .into_iter()
                .map(|e| {
                    json!({"at_ms": e.at_ms, "job_id": e.job_id, "category": e.category,
                           "action": e.action, "list": e.list})
                })
                .collect();
            archive.add_json("moderation.json", &json!({ "events": events }))?;
        }
        let manifest = json!({
            "format": FORMAT,
            "export_id": export_id,
            "request_id": p.request_id,
            "tenant": tenant,
            "user": user,
            "created_at_ms": gantry_core::time::now_ms(),
            "included": {
                "jobs": true, "outputs": "released outputs of succeeded jobs",
                "references": "reference images held in the store; URLs are named, not fetched",
                "pipelines": true, "trust": p.trust, "moderation": p.moderation,
            },
            "counts": counts.json(),
            "empty": counts.jobs == 0 && counts.pipelines == 0,
            "note": if counts.jobs == 0 && counts.pipelines == 0 {
                "the fleet holds no job or pipeline of this user (none was made, all have expired, or the user's data was erased)"
            } else {
                "every job and pipeline of this user the fleet still holds"
            },
        });
        let files = archive.files + 1;
        let last = archive.tar_path.clone();
        archive.finish(&manifest, &lists)?;
        if last.as_path() != path {
            // Parts came before it: the archive is them, then this one.
            append_file(path, &last).map_err(|e| Failed::from((Retryable, "joining the archive's parts", e)))?;
        }
        Ok(ExportSummary {
            jobs: counts.jobs,
            pipelines: counts.pipelines,
            outputs: counts.outputs,
            references: counts.references,
            files,
        })
    }

    /// One job's `job.json`, outputs and references.
    async fn add_job(
        &self,
        archive: &mut Archive,
        pool: &Pool,
        r: &JobRecord,
        credits: Value,
        scratch: &Path,
        counts: &mut Counts,
    ) -> Result<(), Failed> {
        use ErrorClass::Retryable;
        let id = r.spec.id.to_string();
        counts.jobs += 1;
        *counts.by_kind.entry(r.spec.kind().as_str().to_owned()).or_default() += 1;
        let mut outputs = Vec::new();
        if r.status == JobStatus::Succeeded {
            let listed = self
                .store
                .list_job(&r.spec)
                .await
                .map_err(|e| Failed::from((Retryable, "listing outputs", e)))?;
            for (key, _) in listed {
                let name = key.rsplit('/').next().unwrap_or("output").to_owned();
                // An earlier export's archive is not copied into this one.
                if name == ARCHIVE {
                    continue;
                }
                let at = format!("jobs/{id}/outputs/{name}");
                let file = scratch.join("copy");
                match self.store.download(&key, &file, MAX_FILE_BYTES).await {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(Failed::from((Retryable, "reading an output", e))),
                }
                archive.add_file(&at, &file)?;
                outputs.push(json!({"name": name, "path": at}));
                counts.outputs += 1;
            }
        }
        let mut references = Vec::new();
        if let Payload::Generate(g) = &r.spec.body {
            let own = format!("inputs/{}/", r.spec.tenant);
            for (n, reference) in g.reference_images.iter().enumerate() {
                if reference.starts_with(&own) && !reference.contains("..") {
                    let name = reference.rsplit('/').next().unwrap_or("reference");
                    let at = format!("jobs/{id}/references/{n}-{name}");
                    let file = scratch.join("copy");
                    match self.store.download(reference, &file, MAX_FILE_BYTES).await {
                        Ok(_) => {
                            archive.add_file(&at, &file)?;
                            references.push(json!({"source": "store", "object_key": reference, "path": at}));
                            counts.references += 1;
                        }
                        Err(e) if e.is_not_found() => {
                            references.push(json!({"source": "store", "object_key": reference, "path": null, "note": "no longer stored"}));
                        }
                        Err(e) => return Err(Failed::from((Retryable, "reading a reference", e))),
                    }
                } else if let Some(data) = reference.strip_prefix("data:") {
                    // Bytes the request carried inline: the user's own, written out as a file.
                    let decoded = data.split_once(";base64,").and_then(|(_, b64)| {
                        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).ok()
                    });
                    match decoded {
                        Some(bytes) => {
                            let at = format!("jobs/{id}/references/{n}-inline");
                            archive.append(&at, bytes.len() as u64, bytes.as_slice())?;
                            references.push(json!({"source": "inline", "path": at}));
                            counts.references += 1;
                        }
                        None => references.push(json!({"source": "inline", "path": null, "note": "not base64"})),
                    }
                } else if reference.contains("://") {
                    references.push(json!({"source": "url", "url": reference}));
                } else {
                    // Another object of the tenant's (a pipeline parent's output): that job's
                    // own entry holds it, if it is the user's.
                    references.push(json!({"source": "store", "object_key": reference, "path": null,
                                           "note": "another job's output"}));
                }
            }
        }
        let doc = json!({
            "id": id,
            "kind": r.spec.kind().as_str(),
            "pool": pool.as_str(),
            "status": r.status.as_str(),
            "priority": r.spec.priority.as_str(),
            "attempts": r.attempts,
            "enqueued_at_ms": r.enqueued_at_ms,
            "started_at_ms": r.started_at_ms,
            "finished_at_ms": r.finished_at_ms,
            // The request as admitted: a generate's provider and model as routed, its prompts
            // opened.
            "request": r.spec.body,
            "allowed_regions": r.spec.allowed_regions,
            "credits": credits,
            "usage": r.usage,
            "error": r.error,
            "result": r.result.as_ref().map(|res| json!({"content_type": res.content_type,
                "size_bytes": res.size_bytes, "sha256": res.sha256, "details": res.details})),
            "pipeline": r.step_of.as_ref().map(|(pl, step)| json!({"id": pl, "step": step})),
            "outputs": outputs,
            "references": references,
        });
        archive.add_json(&format!("jobs/{id}/job.json"), &doc)
    }

    /// A job's credits as the ledger holds them (`null` when it never held any).
    /// `jobs`' credits as the tenant's ledger holds them, in one round trip (`null` for a job
    /// that never held any).
    async fn credits(&self, tenant: &str, jobs: &[String]) -> Result<Vec<Value>, Failed> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn.clone();
        let mut p = redis::pipe();
        for job in jobs {
            p.cmd("HMGET")
                .arg(gantry_queue::credit_entry_key(tenant, job))
                .arg("state")
                .arg("reserved")
                .arg("charged");
        }
        type Entry = (Option<String>, Option<i64>, Option<i64>);
        let entries: Vec<Entry> = p
            .query_async(&mut c)
            .await
            .map_err(|e| Failed::from((ErrorClass::Retryable, "credits", e)))?;
        Ok(entries
            .into_iter()
            .map(|(state, reserved, charged)| match state {
                Some(state) => {
                    json!({"state": state, "reserved": reserved.unwrap_or(0), "charged": charged.unwrap_or(0)})
                }
                None => Value::Null,
            })
            .collect())
    }
}

/// What an archive holds.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Counts {
    jobs: u64,
    by_kind: BTreeMap<String, u64>,
    pipelines: u64,
    outputs: u64,
    references: u64,
    moderation: u64,
}

impl Counts {
    fn json(&self) -> Value {
        json!({
            "jobs": self.jobs, "jobs_by_kind": self.by_kind, "pipelines": self.pipelines,
            "outputs": self.outputs, "references": self.references, "moderation_events": self.moderation,
        })
    }
}

/// One file of the archive, as the manifest lists it.
#[derive(Debug, serde::Serialize)]
struct ArchivedFile {
    path: String,
    size_bytes: u64,
    sha256: String,
}

/// A tar archive written to a file as it is made, each entry digested as it is copied in. The
/// manifest's list of files goes to a scratch file as it grows (one JSON object a line), so a
/// user with a hundred thousand jobs costs no more memory than one with ten.
struct Archive {
    builder: tar::Builder<std::fs::File>,
    /// Where the tar goes.
    tar_path: std::path::PathBuf,
    /// The files so far, one JSON line each.
    listed: std::io::BufWriter<std::fs::File>,
    listed_path: std::path::PathBuf,
    files: u64,
    mtime: u64,
}

/// A reader that digests what is read through it.
struct Digesting<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> Read for Digesting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

impl Archive {
    /// An archive (or a part of one) written to `path`, its files listed in `list`.
    fn create(path: &Path, list: &Path) -> std::io::Result<Self> {
        let mut builder = tar::Builder::new(std::fs::File::create(path)?);
        builder.mode(tar::HeaderMode::Deterministic);
        let listed_path = list.to_owned();
        Ok(Self {
            builder,
            tar_path: path.to_owned(),
            listed: std::io::BufWriter::new(std::fs::File::create(&listed_path)?),
            listed_path,
            files: 0,
            mtime: gantry_core::time::now_ms() / 1000,
        })
    }

    /// Appends `len` bytes read from `from` as `path`; returns its digest.
    fn append(&mut self, path: &str, len: u64, from: impl Read) -> Result<(), Failed> {
        let mut header = tar::Header::new_gnu();
        header.set_size(len);
        header.set_mode(0o644);
        header.set_mtime(self.mtime);
        header.set_entry_type(tar::EntryType::Regular);
        let mut digesting = Digesting {
            inner: from,
            hasher: Sha256::new(),
            read: 0,
        };
        tokio::task::block_in_place(|| self.builder.append_data(&mut header, path, &mut digesting))
            .map_err(|e| Failed::from((ErrorClass::Retryable, "writing the archive", e)))?;
        let entry = ArchivedFile {
            path: path.to_owned(),
            size_bytes: digesting.read,
            sha256: gantry_store::hex(&digesting.hasher.finalize()),
        };
        let line = serde_json::to_vec(&entry).map_err(|e| Failed::from((ErrorClass::Permanent, "encoding", e)))?;
        std::io::Write::write_all(&mut self.listed, &line)
            .and_then(|()| std::io::Write::write_all(&mut self.listed, b"\n"))
            .map_err(|e| Failed::from((ErrorClass::Retryable, "listing the archive's files", e)))?;
        self.files += 1;
        Ok(())
    }

    fn add_json(&mut self, path: &str, doc: &Value) -> Result<(), Failed> {
        let bytes = serde_json::to_vec_pretty(doc).map_err(|e| Failed::from((ErrorClass::Permanent, "encoding", e)))?;
        self.append(path, bytes.len() as u64, bytes.as_slice())
    }

    fn add_file(&mut self, path: &str, file: &Path) -> Result<(), Failed> {
        let f = std::fs::File::open(file).map_err(|e| Failed::from((ErrorClass::Retryable, "a copied file", e)))?;
        let len = f
            .metadata()
            .map_err(|e| Failed::from((ErrorClass::Retryable, "a copied file", e)))?
            .len();
        self.append(path, len, f)
    }

    /// Closes a part: the tar without its end-of-archive blocks (the next part follows it),
    /// its list flushed.
    fn end_part(mut self) -> std::io::Result<()> {
        use std::io::Write;
        self.listed.flush()?;
        let file = tokio::task::block_in_place(|| self.builder.into_inner())?;
        let len = file.metadata()?.len();
        // `into_inner` ends the archive with two zero blocks; the next part continues it.
        file.set_len(len.saturating_sub(1024))?;
        file.sync_all()
    }

    /// Writes the manifest, last — `head` with the list of every file as `files`: the earlier
    /// parts' (`prior`), then this one's — and closes the archive. The manifest is written to
    /// a scratch file first, the lists streamed into it.
    fn finish(mut self, head: &Value, prior: &[std::path::PathBuf]) -> Result<(), Failed> {
        use std::io::{BufRead, Write};
        let io = |e: std::io::Error| Failed::from((ErrorClass::Retryable, "writing the manifest", e));
        let mut text =
            serde_json::to_string_pretty(head).map_err(|e| Failed::from((ErrorClass::Permanent, "encoding", e)))?;
        // `head` is an object: reopen it to add the list.
        text.truncate(text.trim_end().trim_end_matches('}').trim_end().len());
        let manifest_path = self.listed_path.with_file_name("manifest-out.json");
        tokio::task::block_in_place(|| -> Result<(), std::io::Error> {
            self.listed.flush()?;
            let mut out = std::io::BufWriter::new(std::fs::File::create(&manifest_path)?);
            out.write_all(text.as_bytes())?;
            out.write_all(b",\n  \"files\": [")?;
            let mut first = true;
            for list in prior.iter().chain([&self.listed_path]) {
                let listed = std::io::BufReader::new(std::fs::File::open(list)?);
                for line in listed.lines() {
                    out.write_all(if first { b"\n    " } else { b",\n    " })?;
                    first = false;
                    out.write_all(line?.as_bytes())?;
                }
            }
            out.write_all(b"\n  ]\n}\n")?;
            out.flush()
        })
        .map_err(io)?;
        let f = std::fs::File::open(&manifest_path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        let mut header = tar::Header::new_gnu();
        header.set_size(len);
        header.set_mode(0o644);
        header.set_mtime(self.mtime);
        header.set_entry_type(tar::EntryType::Regular);
        tokio::task::block_in_place(|| {
            self.builder.append_data(&mut header, "manifest.json", f)?;
            self.builder.into_inner().and_then(|f| f.sync_all())
        })
        .map_err(|e| Failed::from((ErrorClass::Retryable, "writing the archive", e)))
    }
}

/// Appends the file `from` to the file `to` (created if need be).
fn append_file(to: &Path, from: &Path) -> std::io::Result<u64> {
    tokio::task::block_in_place(|| {
        let mut out = std::fs::OpenOptions::new().create(true).append(true).open(to)?;
        let mut src = std::fs::File::open(from)?;
        let n = std::io::copy(&mut src, &mut out)?;
        out.sync_all()?;
        Ok(n)
    })
}

/// A part's name among the export job's outputs.
fn pt_name(n: u32) -> String {
    format!("export.part-{n:05}")
}

/// Its file list's name.
fn pt_list_name(n: u32) -> String {
    format!("export.part-{n:05}.files")
}

/// Where a walk stands after its stored parts (kept in Redis by the export job's pool).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    /// Parts stored.
    parts: u32,
    /// The pool the walk was in, and where in its index the next page starts.
    pool: Option<String>,
    cursor: Option<UserCursor>,
    /// That pool was read to its end.
    next_pool: bool,
    /// What the stored parts hold.
    counts: Counts,
    /// Index entries read.
    read: u64,
    /// Files in the stored parts.
    files: u64,
}

/// The export job's stored parts and checkpoint: what lets a later attempt resume.
#[derive(Debug)]
pub struct Parts<'a> {
    spec: &'a gantry_queue::JobSpec,
    key: String,
}

impl<'a> Parts<'a> {
    /// The parts of export job `spec`, in `pool` (its checkpoint in the job's record).
    pub fn new(spec: &'a gantry_queue::JobSpec, pool: &Pool) -> Self {
        Self {
            spec,
            key: pool.job_key(spec.id),
        }
    }

    /// A part's object key.
    fn key(&self, name: &str) -> Result<String, Failed> {
        OutputStore::key(self.spec, name)
            .map(|k| k.to_string())
            .map_err(|e| Failed::from((ErrorClass::Permanent, "a part's name", e)))
    }

    async fn checkpoint(&self, conn: &RedisConn) -> Result<Option<Checkpoint>, Failed> {
        let mut c = conn.clone();
        let raw: Option<String> = redis::cmd("HGET")
            .arg(&self.key)
            .arg(CHECKPOINT_FIELD)
            .query_async(&mut c)
            .await
            .map_err(|e| Failed::from((ErrorClass::Retryable, "reading the export's checkpoint", e)))?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    async fn save(&self, conn: &RedisConn, at: &Checkpoint) -> Result<(), Failed> {
        let json = serde_json::to_string(at).map_err(|e| Failed::from((ErrorClass::Permanent, "encoding", e)))?;
        let mut c = conn.clone();
        let wrote: i64 = SAVE_CHECKPOINT
            .key(&self.key)
            .arg(CHECKPOINT_FIELD)
            .arg(json)
            .invoke_async(&mut c)
            .await
            .map_err(|e| Failed::from((ErrorClass::Retryable, "writing the export's checkpoint", e)))?;
        if wrote < 0 {
            // The record is gone (the user's data was erased): nothing is left to export to.
            return Err(Failed(ErrorClass::Cancelled, "the export's job record is gone".into()));
        }
        Ok(())
    }

    async fn store_part(&self, store: &OutputStore, n: u32, tar: &Path, list: &Path) -> Result<(), Failed> {
        for (name, file) in [(pt_name(n), tar), (pt_list_name(n), list)] {
            store
                .put_file(self.spec, &name, file, "application/octet-stream")
                .await
                .map_err(|e| Failed::from((ErrorClass::Retryable, "storing a part", e)))?;
        }
        Ok(())
    }

    /// Deletes the stored parts and the checkpoint (the archive is whole in the store).
    async fn clean(&self, store: &OutputStore, conn: &RedisConn) -> Result<(), Failed> {
        if let Some(at) = self.checkpoint(conn).await? {
            for n in 0..at.parts {
                for name in [pt_name(n), pt_list_name(n)] {
                    let key = self.key(&name)?;
                    store
                        .delete(&key)
                        .await
                        .map_err(|e| Failed::from((ErrorClass::Retryable, "deleting a part", e)))?;
                }
            }
        }
        let mut c = conn.clone();
        redis::cmd("HDEL")
            .arg(&self.key)
            .arg(CHECKPOINT_FIELD)
            .query_async::<()>(&mut c)
            .await
            .map_err(|e| Failed::from((ErrorClass::Retryable, "deleting the export's checkpoint", e)))
    }
}
