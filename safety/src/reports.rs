//! Reports to the authority (NCMEC's CyberTipline) for confirmed cases of a category whose
//! policy reports (CSAM by default), and the queue that submits them.
//!
//! A report is made for every confirmed case: what matched (list, version, entry, distance),
//! when, the account as the platform names it (tenant, user id), and the preserved evidence
//! it points at. A reviewer's confirmation queues it; a case blocked automatically waits
//! (`awaiting_confirmation`) for a reviewer to submit it, unless its category's policy says
//! `auto_submit`. The [`Submitter`] takes due reports one at a time across the fleet (a lock
//! in Redis), runs the steps — submit, upload and describe each file, finish — saving after
//! each, so a retry resumes where the last attempt stopped; failures are retried with backoff
//! (2ⁿ seconds, at most an hour) up to [`MAX_ATTEMPTS`], then the report is `failed` for an
//! operator to retry.
//!
//! Keys: `gantry:{safety}:report:{id}` (JSON), `gantry:{safety}:reports` (ids by time),
//! `gantry:{safety}:reports:due` (queued ids by next attempt, ms), and `…:awaiting` and
//! `…:failed` (ids waiting for a reviewer, and failed, by time: the gauges and alerts read them).

use std::time::Duration;

use gantry_queue::RedisConn;
use redis::AsyncCommands;

use crate::cybertipline::{CyberTipline, FileDocument, ReportDocument, TiplineError};
use crate::error::SafetyError;
use crate::evidence::Vault;

const ALL: &str = "gantry:{safety}:reports";
const DUE: &str = "gantry:{safety}:reports:due";
/// Reports waiting for a reviewer's confirmation, by time.
const AWAITING: &str = "gantry:{safety}:reports:awaiting";
/// Reports that failed, by time.
const FAILED: &str = "gantry:{safety}:reports:failed";
const LOCK: &str = "gantry:{safety}:reports:lock";
/// Attempts before a report is `failed`.
pub const MAX_ATTEMPTS: u32 = 12;
/// How long a record is kept (seven years, as critical moderation records).
const KEEP_SECS: u64 = (7 * 365 + 2) * 86_400;

fn report_key(id: &str) -> String {
    format!("gantry:{{safety}}:report:{id}")
}

/// Where a report stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    /// Made by an automatic block: waits for a reviewer to submit it.
    AwaitingConfirmation,
    /// Queued for submission (or between attempts).
    Queued,
    /// The authority has it, finished.
    Submitted,
    /// Refused, or out of attempts: an operator retries it.
    Failed,
}

impl ReportStatus {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingConfirmation => "awaiting_confirmation",
            Self::Queued => "queued",
            Self::Submitted => "submitted",
            Self::Failed => "failed",
        }
    }
}

/// What matched, as reported.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct ReportedMatch {
    /// The list.
    pub list: String,
    /// Its version.
    pub list_version: u64,
    /// `pdq`, `md5` or `sha256`.
    pub match_kind: String,
    /// PDQ distance.
    pub distance: Option<u32>,
    /// The list entry matched.
    pub entry: String,
}

/// A step of a report's life.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct ReportEvent {
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// What happened.
    pub event: String,
}

/// A report.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Report {
    /// Its id (the case's: the job's id).
    pub id: String,
    /// When it was made, ms since the epoch.
    pub created_at_ms: u64,
    /// Where it stands.
    pub status: ReportStatus,
    /// The category.
    pub category: String,
    /// When the content was found, ms since the epoch.
    pub incident_at_ms: u64,
    /// Tenant (the platform's service).
    pub tenant: String,
    /// The platform's id of the account.
    pub user: String,
    /// The job.
    pub job_id: String,
    /// What matched.
    pub matches: Vec<ReportedMatch>,
    /// The preserved evidence it points at (its files are what is uploaded).
    pub evidence_id: Option<String>,
    /// Whether a person at the platform looked at the content (a reviewer confirmed it).
    pub viewed_by_reviewer: bool,
    /// Who confirmed or submitted it.
    pub confirmed_by: Option<String>,
    /// The authority's report id, once opened.
    pub authority_report_id: Option<String>,
    /// The evidence files uploaded and described: (index in the evidence record, the
    /// authority's file id).
    pub uploaded: Vec<(usize, String)>,
    /// Attempts so far.
    pub attempts: u32,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it was finished at the authority.
    pub submitted_at_ms: Option<u64>,
    /// Its history.
    pub history: Vec<ReportEvent>,
}

impl Report {
    fn note(&mut self, event: impl Into<String>) {
        self.history.push(ReportEvent {
            at_ms: crate::trust::now_ms(),
            event: event.into(),
        });
        if self.history.len() > 100 {
            self.history.remove(0);
        }
    }
}

/// The reports, in Redis.
#[derive(Clone, Debug)]
pub struct Reports {
    conn: RedisConn,
}

fn decode(json: &str) -> Result<Report, SafetyError> {
    serde_json::from_str(json).map_err(|source| SafetyError::Json { what: "report", source })
}

impl Reports {
    /// The reports on `conn`.
    pub fn new(conn: RedisConn) -> Self {
        Self { conn }
    }

    /// Records a new report (queued at once when its status is `queued`). One report per
    /// case: a case already reported keeps its report, which is returned.
    pub async fn create(&self, mut report: Report) -> Result<Report, SafetyError> {
        if let Some(old) = self.get(&report.id).await? {
            return Ok(old);
        }
        report.note(format!("made ({})", report.status.as_str()));
        let json = serde_json::to_string(&report).map_err(|source| SafetyError::Json { what: "report", source })?;
        let mut c = self.conn.clone();
        let created: bool = redis::cmd("SET")
            .arg(report_key(&report.id))
            .arg(json)
            .arg("NX")
            .arg("EX")
            .arg(KEEP_SECS)
            .query_async::<Option<String>>(&mut c)
            .await?
            .is_some();
        if !created {
            return self.get(&report.id).await?.ok_or_else(|| SafetyError::NoRecord {
                what: "report",
                id: report.id.clone(),
            });
        }
        let mut p = redis::pipe();
        p.zadd(ALL, &report.id, report.created_at_ms);
        match report.status {
            ReportStatus::Queued => {
                p.zadd(DUE, &report.id, report.created_at_ms);
            }
            ReportStatus::AwaitingConfirmation => {
                p.zadd(AWAITING, &report.id, report.created_at_ms);
            }
            ReportStatus::Submitted | ReportStatus::Failed => {}
        }
        let _: () = p.query_async(&mut c).await?;
        Ok(report)
    }

    /// A report.
    pub async fn get(&self, id: &str) -> Result<Option<Report>, SafetyError> {
        let mut c = self.conn.clone();
        let raw: Option<String> = c.get(report_key(id)).await?;
        raw.as_deref().map(decode).transpose()
    }

    /// The newest reports, at most `limit`.
    pub async fn list(&self, limit: usize) -> Result<Vec<Report>, SafetyError> {
        let mut c = self.conn.clone();
        let ids: Vec<String> = c.zrevrange(ALL, 0, limit.max(1) as isize - 1).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.get(&id).await? {
                Some(r) => out.push(r),
                None => {
                    let _: () = c.zrem(ALL, &id).await?;
                }
            }
        }
        Ok(out)
    }

    async fn save(&self, r: &Report) -> Result<(), SafetyError> {
        let json = serde_json::to_string(r).map_err(|source| SafetyError::Json { what: "report", source })?;
        let mut c = self.conn.clone();
        let _: () = c.set_ex(report_key(&r.id), json, KEEP_SECS).await?;
        Ok(())
    }

    /// Queues a report awaiting confirmation (a reviewer submits it), or a failed one again
    /// (an operator retries it). `by` is who.
    pub async fn queue(&self, id: &str, by: &str) -> Result<Report, SafetyError> {
        let mut r = self.get(id).await?.ok_or_else(|| SafetyError::NoRecord {
            what: "report",
            id: id.to_owned(),
        })?;
        match r.status {
            ReportStatus::AwaitingConfirmation => {
                r.confirmed_by = Some(by.to_owned());
                r.note(format!("submission confirmed by {by}"));
            }
            ReportStatus::Failed => {
                r.attempts = 0;
                r.note(format!("retried by {by}"));
            }
            ReportStatus::Queued | ReportStatus::Submitted => {
                return Err(SafetyError::Conflict(format!(
                    "report {id} is {}: nothing to submit",
                    r.status.as_str()
                )));
            }
        }
        r.status = ReportStatus::Queued;
        self.save(&r).await?;
        let mut c = self.conn.clone();
        let _: () = redis::pipe()
            .zadd(DUE, id, crate::trust::now_ms())
            .zrem(AWAITING, id)
            .zrem(FAILED, id)
            .query_async(&mut c)
            .await?;
        Ok(r)
    }

    /// Reports due at `now_ms`, at most `limit`.
    async fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<String>, SafetyError> {
        crate::due_by_score(&self.conn, DUE, now_ms, limit).await
    }

    /// How many wait to be submitted (queued) — a gauge for alerts.
    pub async fn queued_count(&self) -> Result<u64, SafetyError> {
        let mut c = self.conn.clone();
        Ok(c.zcard(DUE).await?)
    }

    /// Per status that needs someone (`queued`, `awaiting_confirmation`, `failed`): how many,
    /// and when the oldest was made or last queued (ms), for the gauges and alerts.
    pub async fn backlog(&self) -> Result<Vec<(ReportStatus, u64, Option<u64>)>, SafetyError> {
        let mut c = self.conn.clone();
        let mut out = Vec::new();
        for (status, key) in [
            (ReportStatus::Queued, DUE),
            (ReportStatus::AwaitingConfirmation, AWAITING),
            (ReportStatus::Failed, FAILED),
        ] {
            let n: u64 = c.zcard(key).await?;
            let oldest: Vec<(String, f64)> = c.zrange_withscores(key, 0, 0).await?;
            out.push((status, n, oldest.first().map(|(_, s)| *s as u64)));
        }
        Ok(out)
    }
}

/// What one pass of the submitter did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubmitPass {
    /// Reports finished at the authority.
    pub submitted: u32,
    /// Attempts that failed and will be retried.
    pub retried: u32,
    /// Reports that ended `failed`.
    pub failed: u32,
}

/// Submits queued reports to the CyberTipline.
#[derive(Clone, Debug)]
pub struct Submitter {
    reports: Reports,
    vault: Vault,
    tipline: CyberTipline,
    conn: RedisConn,
}

/// NCMEC's incident type for apparent child sexual abuse material.
pub const CSAM_INCIDENT: &str = "Child Pornography (possession, manufacture, and distribution)";

fn rfc3339(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Submitter {
    /// A submitter of `reports` with files from `vault` to `tipline`.
    pub fn new(conn: RedisConn, reports: Reports, vault: Vault, tipline: CyberTipline) -> Self {
        Self {
            reports,
            vault,
            tipline,
            conn,
        }
    }

    /// Submits what is due, if no other process is (a lock held for `hold`). Returns what it
    /// did.
    pub async fn pass(&self, hold: Duration) -> Result<SubmitPass, SafetyError> {
        let mut c = self.conn.clone();
        let token = format!("{:x}", rand::random::<u64>());
        let locked: Option<String> = redis::cmd("SET")
            .arg(LOCK)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(hold.as_millis() as u64)
            .query_async(&mut c)
            .await?;
        if locked.is_none() {
            return Ok(SubmitPass::default());
        }
        let mut pass = SubmitPass::default();
        let due = self.reports.due(crate::trust::now_ms(), 10).await;
        for id in due.unwrap_or_default() {
            match self.one(&id).await {
                Ok(ReportStatus::Submitted) => pass.submitted += 1,
                Ok(ReportStatus::Failed) => pass.failed += 1,
                Ok(_) => pass.retried += 1,
                Err(e) => {
                    tracing::error!(report = %id, error = %e, "report submission could not be recorded");
                    pass.retried += 1;
                }
            }
        }
        let _: () = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        )
        .key(LOCK)
        .arg(&token)
        .invoke_async::<i64>(&mut c)
        .await
        .map(|_| ())?;
        Ok(pass)
    }

    /// One attempt at report `id`; where it stands after.
    async fn one(&self, id: &str) -> Result<ReportStatus, SafetyError> {
        let mut c = self.conn.clone();
        let Some(mut r) = self.reports.get(id).await? else {
            let _: () = c.zrem(DUE, id).await?;
            return Ok(ReportStatus::Failed);
        };
        if r.status != ReportStatus::Queued {
            let _: () = c.zrem(DUE, id).await?;
            return Ok(r.status);
        }
        r.attempts += 1;
        let outcome = self.steps(&mut r).await;
        match outcome {
            Ok(()) => {
                r.status = ReportStatus::Submitted;
                r.submitted_at_ms = Some(crate::trust::now_ms());
                r.last_error = None;
                let authority = r.authority_report_id.clone().unwrap_or_default();
                r.note(format!("finished at the authority as report {authority}"));
                tracing::info!(report = %r.id, authority_report = %authority, "report submitted");
                self.reports.save(&r).await?;
                let _: () = c.zrem(DUE, id).await?;
            }
            Err(e) => {
                let refused = matches!(e, TiplineError::Refused(_));
                if let TiplineError::UnknownReport(_) = e {
                    // Opened again from the start on the next attempt.
                    r.authority_report_id = None;
                    r.uploaded.clear();
                }
                r.last_error = Some(e.to_string());
                if refused || r.attempts >= MAX_ATTEMPTS {
                    r.status = ReportStatus::Failed;
                    r.note(format!("failed: {e}"));
                    tracing::error!(report = %r.id, error = %e, "report failed; an operator must retry it");
                    self.reports.save(&r).await?;
                    let _: () = redis::pipe()
                        .zrem(DUE, id)
                        .zadd(FAILED, id, crate::trust::now_ms())
                        .query_async(&mut c)
                        .await?;
                } else {
                    let delay = 1000u64 << r.attempts.min(12);
                    r.note(format!("attempt {} failed: {e}", r.attempts));
                    tracing::warn!(report = %r.id, attempt = r.attempts, error = %e, "report attempt failed; retrying");
                    self.reports.save(&r).await?;
                    let _: () = c.zadd(DUE, id, crate::trust::now_ms() + delay.min(3_600_000)).await?;
                }
            }
        }
        Ok(r.status)
    }

    /// The steps still to do, saving after each.
    async fn steps(&self, r: &mut Report) -> Result<(), TiplineError> {
        let save = |r: &Report| {
            let reports = self.reports.clone();
            let r = r.clone();
            async move {
                reports
                    .save(&r)
                    .await
                    .map_err(|e| TiplineError::Transient(format!("saving the report's progress: {e}")))
            }
        };
        let evidence = match &r.evidence_id {
            Some(e) => self
                .vault
                .get(e)
                .await
                .map_err(|e| TiplineError::Transient(format!("evidence: {e}")))?,
            None => None,
        };
        let summary = r
            .matches
            .iter()
            .map(|m| {
                format!(
                    "hash list {} v{} ({}{})",
                    m.list,
                    m.list_version,
                    m.match_kind,
                    m.distance.map(|d| format!(", distance {d}")).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let report_id = match r.authority_report_id.clone() {
            Some(id) => id,
            None => {
                let xml = self.tipline.report_xml(&ReportDocument {
                    incident_type: CSAM_INCIDENT,
                    incident_at: rfc3339(r.incident_at_ms),
                    esp_service: &r.tenant,
                    esp_identifier: &r.user,
                    additional_info: format!(
                        "Content generated or uploaded for job {} matched {summary}.{}",
                        r.job_id,
                        if r.viewed_by_reviewer {
                            " A reviewer confirmed the match."
                        } else {
                            ""
                        }
                    ),
                });
                let id = self.tipline.submit(xml).await?;
                r.authority_report_id = Some(id.clone());
                r.note(format!("opened at the authority as report {id}"));
                save(r).await?;
                id
            }
        };
        if let Some(ev) = evidence {
            let dir = tempfile::tempdir().map_err(|e| TiplineError::Transient(format!("scratch space: {e}")))?;
            // The media: what matched. Manifests and reports stay in the preserved case.
            let media = ev.files.iter().enumerate().filter(|(_, f)| {
                let ext = f.name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
                !matches!(ext.as_deref(), Some("json" | "txt"))
            });
            for (i, f) in media {
                if r.uploaded.iter().any(|(done, _)| *done == i) {
                    continue;
                }
                let path = dir.path().join(format!("file-{i}"));
                self.vault
                    .open_file(&ev.id, i, &path)
                    .await
                    .map_err(|e| TiplineError::Transient(format!("evidence file {i}: {e}")))?;
                let bytes = tokio::fs::read(&path)
                    .await
                    .map_err(|e| TiplineError::Transient(format!("scratch space: {e}")))?;
                let _ = tokio::fs::remove_file(&path).await;
                let file_id = self.tipline.upload(&report_id, &f.name, bytes).await?;
                self.tipline
                    .file_info(CyberTipline::file_xml(&FileDocument {
                        report_id: &report_id,
                        file_id: &file_id,
                        name: &f.name,
                        viewed_by_esp: r.viewed_by_reviewer,
                        md5: &f.md5,
                        additional_info: format!("Matched {summary}."),
                    }))
                    .await?;
                r.uploaded.push((i, file_id));
                save(r).await?;
            }
        }
        self.tipline.finish(&report_id).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_796_601_600_000), "2026-12-07T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400_000 + 3_723_000), "2000-02-29T01:02:03Z");
    }
}
