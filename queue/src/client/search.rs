//! Job search: a tenant's jobs (or every tenant's, for operators), newest first, filtered by
//! status, kind, user and creation time, a page at a time with an opaque cursor.
//!
//! Each pool keeps append-only day lists of job ids (`search.lua` and `common.lua` say which);
//! a page runs `search.lua` once per pool, at once, and merges the pools' matches by creation
//! time. An index entry is a hint, checked against the record when read: a job that changed
//! status since it was indexed is found by its status now; an expired or erased record is
//! skipped. Each pool's walk is bounded (`SCAN_BUDGET` entries a page), so a filter that
//! matches rarely answers a short (even empty) page with a cursor rather than a slow one.
//!
//! The cursor holds each pool's position and a digest of the filters; it is refused with
//! other filters. A pool's position only moves over entries whose matches were returned, so
//! a page never skips a job nor repeats one.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redis::{FromRedisValue, ParsingError, Value};

use super::QueueClient;
use super::wire::{int, text};
use crate::error::{During, QueueError, ValidationError};
use crate::job::{JobError, JobId, JobKind, JobStatus, Priority, ResultRef};
use crate::keys::Pool;
use crate::scripts;

/// Most jobs one page holds.
pub const MAX_PAGE: usize = 200;

/// Most index entries one page reads in one pool.
const SCAN_BUDGET: usize = 1000;

/// What a search selects. `tenant: None` searches every tenant (operators only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobQuery {
    /// Only this tenant's jobs.
    pub tenant: Option<String>,
    /// Only this user's. A user id is its tenant's own: without `tenant`, the user of that id
    /// in each of `user_tenants`.
    pub user: Option<String>,
    /// With `user` and no `tenant`: the tenants whose user of that id is meant.
    pub user_tenants: Vec<String>,
    /// Only this kind.
    pub kind: Option<JobKind>,
    /// Only jobs in this status now.
    pub status: Option<JobStatus>,
    /// Created at or after (Unix ms).
    pub created_after_ms: Option<u64>,
    /// Created before (Unix ms).
    pub created_before_ms: Option<u64>,
}

impl JobQuery {
    /// A digest of the filters, written into the cursor so that a cursor is only used with
    /// the search that made it.
    fn digest(&self) -> String {
        let text = format!(
            "{:?}\0{:?}\0{:?}\0{:?}\0{:?}\0{:?}\0{:?}",
            self.tenant,
            self.user,
            self.user_tenants,
            self.kind.map(JobKind::as_str),
            self.status.map(JobStatus::as_str),
            self.created_after_ms,
            self.created_before_ms
        );
        crate::keys::digest_hex(text.as_bytes())[..12].to_owned()
    }

    /// The user keys a record must name (empty: any user).
    fn user_keys(&self) -> Vec<String> {
        let Some(user) = &self.user else { return Vec::new() };
        match &self.tenant {
            Some(t) => vec![crate::user_key(t, user)],
            None => self.user_tenants.iter().map(|t| crate::user_key(t, user)).collect(),
        }
    }

    /// Whether no job can match, whatever is stored: an empty time window (nothing is created
    /// before the epoch, and an end at or before the start holds nothing).
    fn selects_nothing(&self) -> bool {
        self.created_before_ms == Some(0)
            || matches!((self.created_after_ms, self.created_before_ms), (Some(a), Some(b)) if a >= b)
    }

    fn validate(&self) -> Result<(), ValidationError> {
        let invalid = |field, reason: &str| ValidationError::InvalidField {
            field,
            reason: reason.into(),
        };
        if self.user.is_some() && self.tenant.is_none() && self.user_tenants.is_empty() {
            return Err(invalid("user", "a user filter needs the user's tenant"));
        }
        for (field, v) in [("tenant", &self.tenant), ("user", &self.user)] {
            if v.as_deref().is_some_and(str::is_empty) {
                return Err(invalid(field, "must not be empty"));
            }
        }
        Ok(())
    }
}

/// One job as a search lists it: what its record holds outside the sealed spec.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct JobSummary {
    /// The job.
    pub id: JobId,
    /// Its kind.
    pub kind: JobKind,
    /// The pool it runs in.
    pub pool: String,
    /// Its tenant.
    pub tenant: String,
    /// Its status now.
    pub status: JobStatus,
    /// Its priority.
    pub priority: Priority,
    /// Attempts started.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Enqueued (Unix ms, Redis's clock): its creation time.
    pub enqueued_at_ms: u64,
    /// Its last attempt started.
    pub started_at_ms: Option<u64>,
    /// It ended.
    pub finished_at_ms: Option<u64>,
    /// Its last error.
    pub error: Option<JobError>,
    /// Its result, once it succeeded.
    pub result: Option<ResultRef>,
    /// What it is doing, while it runs (its current attempt's last report).
    pub progress: Option<crate::Progress>,
}

impl JobSummary {
    /// A record as a search lists it (progress only while it runs).
    pub fn of(r: &crate::JobRecord) -> Self {
        Self {
            id: r.spec.id,
            kind: r.spec.kind(),
            pool: r.spec.pool.clone(),
            tenant: r.spec.tenant.clone(),
            status: r.status,
            priority: r.spec.priority,
            attempts: r.attempts,
            max_attempts: r.spec.max_attempts,
            enqueued_at_ms: r.enqueued_at_ms,
            started_at_ms: r.started_at_ms,
            finished_at_ms: r.finished_at_ms,
            error: r.error.clone(),
            result: r.result.clone(),
            progress: r.progress.filter(|_| r.status == JobStatus::Running),
        }
    }

    /// Whether it passes `q`'s filters (its user is checked by the caller, who knows it).
    pub fn matches(&self, q: &JobQuery) -> bool {
        q.tenant.as_ref().is_none_or(|t| *t == self.tenant)
            && q.kind.is_none_or(|k| k == self.kind)
            && q.status.is_none_or(|s| s == self.status)
            && q.created_after_ms.is_none_or(|a| self.enqueued_at_ms >= a)
            && q.created_before_ms.is_none_or(|b| self.enqueued_at_ms < b)
    }
}

/// A page of a search, newest first, and where the next one starts (`None`: none left).
#[derive(Clone, Debug, PartialEq)]
pub struct JobPage {
    /// The jobs.
    pub jobs: Vec<JobSummary>,
    /// The cursor of the next page; a page with fewer jobs than asked (even none) can have one.
    pub next_cursor: Option<String>,
}

/// Where a pool's walk stands: a day list and the position before which entries are unread
/// (`-1`: the list's end), or walked to the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    Start,
    At { day: i64, pos: i64 },
    Done,
}

/// The cursor: the filters' digest and each pool's position.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cursor {
    digest: String,
    pools: BTreeMap<String, Position>,
}

impl Cursor {
    /// `v1.<digest>.<pool>:<day>:<pos>,…` (a walked pool is left out), in base64url.
    fn encode(&self) -> String {
        let pools: Vec<String> = self
            .pools
            .iter()
            .filter_map(|(p, pos)| match pos {
                Position::Start => Some(format!("{p}:s")),
                Position::At { day, pos } => Some(format!("{p}:{day}:{pos}")),
                Position::Done => None,
            })
            .collect();
        URL_SAFE_NO_PAD.encode(format!("v1.{}.{}", self.digest, pools.join(",")))
    }

    fn decode(s: &str, digest: &str) -> Result<Self, QueueError> {
        let bad = QueueError::UnknownCursor;
        let raw = URL_SAFE_NO_PAD
            .decode(s)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(bad("not a cursor this API gave"))?;
        let mut parts = raw.splitn(3, '.');
        let (Some("v1"), Some(d), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("not a cursor this API gave"));
        };
        if d != digest {
            return Err(bad("the cursor belongs to a search with other filters"));
        }
        let mut pools = BTreeMap::new();
        for entry in rest.split(',').filter(|e| !e.is_empty()) {
            let mut f = entry.split(':');
            let pool = f.next().filter(|p| Pool::new(p).is_ok());
            let pos = match (f.next(), f.next(), f.next()) {
                (Some("s"), None, None) => Some(Position::Start),
                (Some(day), Some(pos), None) => match (day.parse(), pos.parse()) {
                    (Ok(day), Ok(pos)) if pos >= 0 => Some(Position::At { day, pos }),
                    _ => None,
                },
                _ => None,
            };
            match (pool, pos) {
                (Some(p), Some(pos)) => pools.insert(p.to_owned(), pos),
                _ => return Err(bad("not a cursor this API gave")),
            };
        }
        Ok(Self {
            digest: d.to_owned(),
            pools,
        })
    }
}

/// One pool's answer to `search.lua`.
struct PoolPage {
    start: (i64, i64),
    next: Option<(i64, i64)>,
    watermark: u64,
    matches: Vec<((i64, i64), JobSummary)>,
}

struct SearchReply {
    start: (i64, i64),
    next: (i64, i64),
    watermark: i64,
    rows: Vec<Vec<Value>>,
}

const ROW: usize = 18;

impl FromRedisValue for SearchReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let mut all = Vec::<Value>::from_redis_value(v)?;
        if all.len() < 5 || (all.len() - 5) % ROW != 0 {
            return Err(format!("search: a reply of {} values is not a header and whole rows", all.len()).into());
        }
        let rows_part = all.split_off(5);
        let h = |i: usize, what: &str| int(&all[i], what);
        let mut rows = Vec::with_capacity(rows_part.len() / ROW);
        let mut it = rows_part.into_iter();
        loop {
            let r: Vec<Value> = it.by_ref().take(ROW).collect();
            if r.is_empty() {
                break;
            }
            rows.push(r);
        }
        Ok(Self {
            start: (h(0, "start day")?, h(1, "start position")?),
            next: (h(2, "next day")?, h(3, "next position")?),
            watermark: h(4, "watermark")?,
            rows,
        })
    }
}

fn summary(pool: &Pool, r: &[Value]) -> Result<((i64, i64), JobSummary), QueueError> {
    let t = |i: usize, what: &str| text(&r[i], what).map_err(|e| QueueError::Protocol(format!("search: {e}")));
    let n = |i: usize, what: &str| -> Result<Option<u64>, QueueError> {
        let s = t(i, what)?;
        if s.is_empty() {
            return Ok(None);
        }
        s.parse()
            .map(Some)
            .map_err(|e| QueueError::Protocol(format!("search: {what} {s:?}: {e}")))
    };
    let protocol = |e: ValidationError| QueueError::Protocol(format!("search: {e}"));
    let at = (
        int(&r[0], "day").map_err(|e| QueueError::Protocol(e.to_string()))?,
        int(&r[1], "position").map_err(|e| QueueError::Protocol(e.to_string()))?,
    );
    let id: JobId = t(2, "id")?.parse().map_err(protocol)?;
    let class = t(12, "error class")?;
    let result = t(15, "result")?;
    let progress = t(16, "progress")?;
    let status = super::stored_status(&t(4, "status")?)?;
    let attempts = n(7, "attempts")?.unwrap_or(0) as u32;
    let progress = if status == JobStatus::Running && !progress.is_empty() {
        super::current_progress(&progress, n(17, "progress at")?, attempts)
    } else {
        None
    };
    let summary = JobSummary {
        id,
        kind: t(3, "kind")?.parse().map_err(protocol)?,
        pool: pool.as_str().to_owned(),
        status,
        priority: t(5, "priority")?.parse().map_err(protocol)?,
        tenant: t(6, "tenant")?,
        attempts,
        max_attempts: n(8, "max attempts")?.unwrap_or(0) as u32,
        enqueued_at_ms: n(9, "enqueued")?.unwrap_or(0),
        started_at_ms: n(10, "started")?,
        finished_at_ms: n(11, "finished")?,
        error: (!class.is_empty())
            .then(|| -> Result<JobError, QueueError> {
                Ok(JobError {
                    class,
                    message: t(13, "error message")?,
                    at_ms: n(14, "error at")?.unwrap_or(0),
                })
            })
            .transpose()?,
        result: if result.is_empty() {
            None
        } else {
            Some(
                serde_json::from_str(&result)
                    .map_err(|e| QueueError::Protocol(format!("job {id}: unreadable result: {e}")))?,
            )
        },
        progress,
    };
    Ok((at, summary))
}

impl QueueClient {
    /// One page of the jobs `query` selects, newest first: `limit` (1..=[`MAX_PAGE`]) at most,
    /// from `cursor` (a previous page's `next_cursor`; `None` for the first page).
    pub async fn search(&self, query: &JobQuery, limit: usize, cursor: Option<&str>) -> Result<JobPage, QueueError> {
        query.validate()?;
        if limit == 0 || limit > MAX_PAGE {
            return Err(ValidationError::InvalidField {
                field: "limit",
                reason: format!("must be 1..={MAX_PAGE}"),
            }
            .into());
        }
        if query.selects_nothing() {
            return Ok(JobPage {
                jobs: Vec::new(),
                next_cursor: None,
            });
        }
        let digest = query.digest();
        let pools = self.pools().await?;
        let mut positions: BTreeMap<String, Position> = match cursor {
            Some(c) => Cursor::decode(c, &digest)?.pools,
            None => pools.iter().map(|p| (p.as_str().to_owned(), Position::Start)).collect(),
        };
        let walk: Vec<(Pool, Position)> = pools
            .into_iter()
            .filter_map(|p| positions.get(p.as_str()).map(|pos| (p, *pos)))
            .filter(|(_, pos)| *pos != Position::Done)
            .collect();
        let pages = futures::future::try_join_all(
            walk.iter()
                .map(|(pool, pos)| self.search_pool(pool, *pos, query, limit)),
        )
        .await?;
        // A pool that stopped early still holds entries up to its watermark: no match older
        // than the highest such watermark may be listed before them.
        let threshold = pages
            .iter()
            .filter(|p| p.next.is_some())
            .map(|p| p.watermark)
            .max()
            .unwrap_or(0);
        let mut taken = vec![0usize; pages.len()];
        let mut jobs = Vec::with_capacity(limit);
        while jobs.len() < limit {
            let best = pages
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.matches.get(taken[i]).map(|(_, s)| (i, s)))
                .filter(|(_, s)| s.enqueued_at_ms >= threshold)
                .max_by(|(_, a), (_, b)| (a.enqueued_at_ms, a.id).cmp(&(b.enqueued_at_ms, b.id)));
            let Some((i, s)) = best else { break };
            jobs.push(s.clone());
            taken[i] += 1;
        }
        for ((pool, before), (page, took)) in walk.iter().zip(pages.iter().zip(&taken)) {
            let after = if *took == page.matches.len() {
                // Every match listed (or none found): on from where the walk stopped.
                match page.next {
                    Some((day, pos)) => Position::At { day, pos },
                    None => Position::Done,
                }
            } else if *took == 0 {
                // Matches, none listed yet (older than another pool's unread entries): walked
                // again next page from where this one started, with the first page's end
                // pinned (jobs newer than the first page are not this search's).
                match before {
                    Position::Start => Position::At {
                        day: page.start.0,
                        pos: page.start.1,
                    },
                    other => *other,
                }
            } else {
                let (day, pos) = page.matches[*took - 1].0;
                Position::At { day, pos }
            };
            positions.insert(pool.as_str().to_owned(), after);
        }
        let next_cursor = positions.values().any(|p| *p != Position::Done).then(|| {
            Cursor {
                digest,
                pools: positions,
            }
            .encode()
        });
        Ok(JobPage { jobs, next_cursor })
    }

    async fn search_pool(&self, pool: &Pool, at: Position, q: &JobQuery, limit: usize) -> Result<PoolPage, QueueError> {
        let user_keys = q.user_keys().join(",");
        let index = match (&q.tenant, &q.user, q.kind) {
            (Some(_), Some(_), _) => "u",
            (Some(_), None, Some(_)) => "k",
            (Some(_), None, None) => "t",
            (None, _, _) => "a",
        };
        let (day, pos) = match at {
            Position::At { day, pos } => (day.to_string(), pos),
            Position::Start | Position::Done => (String::new(), -1),
        };
        let days = self.cfg.user_index_ttl().as_secs().div_ceil(86_400);
        let mut inv = scripts::SEARCH.prepare_invoke();
        inv.key(pool.prefix())
            .arg(index)
            .arg(day)
            .arg(pos)
            .arg(days)
            .arg(q.tenant.as_deref().unwrap_or(""))
            .arg(q.kind.map_or("", JobKind::as_str))
            .arg(q.status.map_or("", JobStatus::as_str))
            .arg(user_keys)
            .arg(q.created_after_ms.unwrap_or(0))
            .arg(q.created_before_ms.unwrap_or(0))
            .arg(limit)
            .arg(SCAN_BUDGET);
        let mut c = self.conn.clone();
        let reply: SearchReply = inv.invoke_async(&mut c).await.during("search", pool)?;
        let matches = reply
            .rows
            .iter()
            .map(|r| summary(pool, r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PoolPage {
            start: reply.start,
            next: (reply.next.1 != -2).then_some(reply.next),
            watermark: u64::try_from(reply.watermark).unwrap_or(0),
            matches,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_is_refused_with_other_filters_or_garbled() {
        let c = Cursor {
            digest: "abc123abc123".into(),
            pools: [
                ("cpu".to_owned(), Position::At { day: 20_000, pos: 17 }),
                ("gpu".to_owned(), Position::Start),
            ]
            .into_iter()
            .collect(),
        };
        let s = c.encode();
        assert_eq!(Cursor::decode(&s, "abc123abc123").expect("decodes"), c);
        assert!(Cursor::decode(&s, "other0000000").is_err());
        for bad in [
            "",
            "!!",
            &URL_SAFE_NO_PAD.encode("v2.abc123abc123."),
            &URL_SAFE_NO_PAD.encode("v1.abc123abc123.CPU:1:2"),
            &URL_SAFE_NO_PAD.encode("v1.abc123abc123.cpu:1:-5"),
            &URL_SAFE_NO_PAD.encode("v1.abc123abc123.cpu:x:1"),
        ] {
            assert!(Cursor::decode(bad, "abc123abc123").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn filters_are_checked_and_change_the_digest() {
        let q = JobQuery {
            tenant: Some("t".into()),
            ..Default::default()
        };
        assert!(q.validate().is_ok());
        let other = JobQuery {
            kind: Some(JobKind::Upscale),
            ..q.clone()
        };
        assert_ne!(q.digest(), other.digest());
        let user_alone = JobQuery {
            user: Some("u".into()),
            ..Default::default()
        };
        assert!(user_alone.validate().is_err());
        let in_tenants = JobQuery {
            user_tenants: vec!["a".into(), "b".into()],
            ..user_alone
        };
        assert!(in_tenants.validate().is_ok());
        assert_eq!(
            in_tenants.user_keys(),
            vec![crate::user_key("a", "u"), crate::user_key("b", "u")]
        );
        let backwards = JobQuery {
            created_after_ms: Some(10),
            created_before_ms: Some(5),
            ..q
        };
        assert!(backwards.validate().is_ok() && backwards.selects_nothing());
    }
}
