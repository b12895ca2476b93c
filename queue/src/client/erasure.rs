//! A user's erasure: every job of theirs in a pool, waiting, running or finished.

use redis::{FromRedisValue, ParsingError, Value};

use super::QueueClient;
use super::enqueue::check_text;
use crate::error::{During, QueueError};
use crate::keys::Pool;
use crate::scripts;

/// What one pass of [`QueueClient::erase_user`] did in one pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ErasureCounts {
    /// Waiting (queued, delayed, retry-scheduled) jobs cancelled, their credits refunded.
    pub cancelled: u64,
    /// Running jobs asked to stop; erased by a later pass once they have ended.
    pub running: u64,
    /// Job records deleted (with their results, history and sealed payloads).
    pub deleted: u64,
    /// Dead-letter entries removed.
    pub dead_letters: u64,
}

impl std::ops::AddAssign for ErasureCounts {
    fn add_assign(&mut self, o: Self) {
        self.cancelled += o.cancelled;
        self.running += o.running;
        self.deleted += o.deleted;
        self.dead_letters += o.dead_letters;
    }
}

impl QueueClient {
    /// Erases `user` of `tenant` from `pool`, through the user's index ([`crate::user_key`]):
    /// waiting jobs are cancelled and deleted, finished and dead-lettered ones deleted, and
    /// running ones asked to stop, to be deleted by a later pass once they have ended
    /// (`running` counts them). Idempotent and Cluster-safe; each script call handles a
    /// bounded page of the user's index, so a user with a million jobs never blocks Redis.
    pub async fn erase_user(&self, pool: &Pool, tenant: &str, user: &str) -> Result<ErasureCounts, QueueError> {
        const PAGE: usize = 500;
        check_text("tenant", tenant, 128)?;
        check_text("user", user, 128)?;
        let ukey = crate::user_key(tenant, user);
        // The user's day lists reach back as far as the index lives, and a day more.
        let days = self.cfg.user_index_ttl().as_secs().div_ceil(86_400) + 1;
        let mut total = ErasureCounts::default();
        let mut cursor = "0".to_owned();
        let mut c = self.conn.clone();
        loop {
            let mut inv = scripts::ERASE.prepare_invoke();
            inv.key(pool.prefix())
                .arg(&ukey)
                .arg(tenant)
                .arg(user)
                .arg(&cursor)
                .arg(PAGE)
                .arg(days);
            let page: ErasePage = inv.invoke_async(&mut c).await.during("erase", pool)?;
            total += page.counts;
            if page.cursor == "0" {
                return Ok(total);
            }
            cursor = page.cursor;
        }
    }
}

/// `erase.lua`'s reply: the page's counts and the next cursor.
struct ErasePage {
    counts: ErasureCounts,
    cursor: String,
}

impl FromRedisValue for ErasePage {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let (cancelled, running, deleted, dead_letters, cursor) = FromRedisValue::from_redis_value(v)
            .map_err(|e: ParsingError| ParsingError::from(format!("erase: expected 4 counts and a cursor: {e}")))?;
        Ok(Self {
            counts: ErasureCounts {
                cancelled,
                running,
                deleted,
                dead_letters,
            },
            cursor,
        })
    }
}
