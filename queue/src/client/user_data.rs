//! What a pool holds about one user, read through the user's index (the one an erasure walks,
//! [`crate::user_key`]): their job records and pipeline records, a bounded page at a time, for
//! an export of their data. Nothing is changed.
//!
//! The walk: the set a pre-v2 index is, then the day lists from the oldest the index can still
//! hold to today, each from its start. A list only grows at its end, so a position stays valid
//! between pages. An id is reported only if its record names the user's tenant and key; a
//! record that expired, or an id that leads nowhere, is passed over. An id indexed twice (a
//! replayed dead letter is indexed again on the day of the replay) is reported twice: callers
//! that must not repeat one keep the ids they have seen.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::enqueue::check_text;
use super::{QueueClient, parse_record};
use crate::error::QueueError;
use crate::fields::job as f;
use crate::job::{JobId, JobRecord};
use crate::keys::Pool;

/// A pipeline of the user's (its record, see [`crate::client::pipelines`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserPipeline {
    /// Its id.
    pub id: String,
    /// Created (Unix ms).
    pub created_at_ms: u64,
    /// `creating`, `created` or `cancelled`.
    pub state: String,
    /// Its steps as stored (JSON: name, job id, pool, kind, needs, ...).
    pub steps: serde_json::Value,
}

/// One entry of a user's index.
#[derive(Clone, Debug)]
pub enum UserItem {
    /// A job of theirs (its spec opened: the prompt readable, where the client has the keys).
    Job(Box<JobRecord>),
    /// A pipeline of theirs.
    Pipeline(UserPipeline),
}

/// Where a walk of a user's index stands: the day list (days since the Unix epoch; 0 is the
/// pre-v2 set, read whole) and the position in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCursor {
    /// The day.
    pub day: u64,
    /// The position in its list.
    pub pos: u64,
}

/// One page of a walk.
#[derive(Clone, Debug)]
pub struct UserPage {
    /// The user's records among the ids read.
    pub items: Vec<UserItem>,
    /// How many ids the page read (records found or not).
    pub read: usize,
    /// Where the next page starts; `None` once today's list has been read to its end.
    pub next: Option<UserCursor>,
}

impl QueueClient {
    /// How many ids `pool`'s index of `user` of `tenant` holds (records found or not): what a
    /// walk of it will read.
    pub async fn user_index_len(&self, pool: &Pool, tenant: &str, user: &str) -> Result<u64, QueueError> {
        check_text("tenant", tenant, 128)?;
        check_text("user", user, 128)?;
        let base = format!("{}user:{}", pool.prefix(), crate::user_key(tenant, user));
        let mut c = self.conn.clone();
        let (secs, _): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await?;
        let today = secs / 86_400;
        let first = today.saturating_sub(self.cfg.user_index_ttl().as_secs().div_ceil(86_400) + 1);
        let mut p = redis::pipe();
        p.cmd("SCARD").arg(&base);
        for day in first..=today {
            p.cmd("LLEN").arg(format!("{base}:{day}"));
        }
        let lens: Vec<u64> = p.query_async(&mut c).await?;
        Ok(lens.into_iter().sum())
    }

    /// A page of what `pool` holds about `user` of `tenant`, from `cursor` (`None`: the start),
    /// reading at most `n` ids of the index (see the module docs).
    pub async fn user_page(
        &self,
        pool: &Pool,
        tenant: &str,
        user: &str,
        cursor: Option<UserCursor>,
        n: usize,
    ) -> Result<UserPage, QueueError> {
        check_text("tenant", tenant, 128)?;
        check_text("user", user, 128)?;
        let n = n.clamp(1, 1000);
        let ukey = crate::user_key(tenant, user);
        let base = format!("{}user:{ukey}", pool.prefix());
        let mut c = self.conn.clone();
        let (secs, _): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await?;
        let today = secs / 86_400;
        // The oldest day list the index can still hold, and a day more.
        let first = today.saturating_sub(self.cfg.user_index_ttl().as_secs().div_ceil(86_400) + 1);
        let (ids, next): (Vec<String>, Option<UserCursor>) = match cursor {
            None => {
                let ids: Vec<String> = redis::cmd("SMEMBERS").arg(&base).query_async(&mut c).await?;
                (ids, Some(UserCursor { day: first, pos: 0 }))
            }
            Some(at) => {
                let day = at.day.max(first);
                let pos = if day == at.day { at.pos } else { 0 };
                let ids: Vec<String> = redis::cmd("LRANGE")
                    .arg(format!("{base}:{day}"))
                    .arg(pos)
                    .arg(pos + n as u64 - 1)
                    .query_async(&mut c)
                    .await?;
                let next = if ids.len() == n {
                    Some(UserCursor {
                        day,
                        pos: pos + n as u64,
                    })
                } else if day < today {
                    Some(UserCursor { day: day + 1, pos: 0 })
                } else {
                    None
                };
                (ids, next)
            }
        };
        let mut items = Vec::with_capacity(ids.len());
        if !ids.is_empty() {
            let mut p = redis::pipe();
            for id in &ids {
                let job = id.parse::<JobId>().map(|j| pool.job_key(j)).unwrap_or_default();
                p.cmd("HGETALL").arg(job);
                p.cmd("HGETALL").arg(Self::pipeline_key(pool, id));
            }
            let hashes: Vec<HashMap<String, Vec<u8>>> = p.query_async(&mut c).await?;
            for (id, pair) in ids.iter().zip(hashes.chunks(2)) {
                let (job, pl) = (&pair[0], &pair[1]);
                let text =
                    |h: &HashMap<String, Vec<u8>>, k: &str| h.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
                let mine = |h: &HashMap<String, Vec<u8>>| {
                    text(h, f::TENANT).as_deref() == Some(tenant) && text(h, f::USER_KEY).as_deref() == Some(&ukey)
                };
                if !job.is_empty() {
                    let Ok(jid) = id.parse::<JobId>() else { continue };
                    // A record from before `uk` existed is checked by its (opened) spec.
                    let legacy = !job.contains_key(f::USER_KEY);
                    if !legacy && !mine(job) {
                        continue;
                    }
                    let record = parse_record(jid, pool, job, self.keys.as_deref())?;
                    if record.spec.tenant == tenant && record.spec.user == user {
                        items.push(UserItem::Job(Box::new(record)));
                    }
                } else if !pl.is_empty() && mine(pl) {
                    use super::pipelines::fields as pf;
                    items.push(UserItem::Pipeline(UserPipeline {
                        id: id.clone(),
                        created_at_ms: text(pl, pf::CREATED).and_then(|v| v.parse().ok()).unwrap_or(0),
                        state: text(pl, pf::STATE).unwrap_or_default(),
                        steps: text(pl, pf::STEPS)
                            .and_then(|s| serde_json::from_str(&s).ok())
                            .unwrap_or(serde_json::Value::Null),
                    }));
                }
            }
        }
        Ok(UserPage {
            items,
            read: ids.len(),
            next,
        })
    }
}
