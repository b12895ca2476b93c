//! Redis key layout. Every key of a pool shares the hash tag `{pool}`, so every Lua script touches
//! one Cluster slot, and one claim can serve all the kinds (queues) a worker runs in that pool.
//!
//! ```text
//! gantry:{pool}:q:<kind>:<prio>[:<shape>]|t:<tenant>  list  a tenant's waiting ids (LPUSH in, RPOP out)
//! gantry:{pool}:q:<kind>:<prio>[:<shape>]|ring        zset  tenants with waiting jobs -> virtual time
//! gantry:{pool}:weights                      hash   tenant -> fair-share weight
//! gantry:{pool}:credits                      stream credit events of finished jobs with a reservation
//! gantry:{pool}:q:<kind>:delayed             zset   id -> due time (delays and retry backoff)
//! gantry:{pool}:q:<kind>:leases              zset   "<id>:<token>" -> lease deadline (fencing)
//! gantry:{pool}:lease-seq                    string lease token counter
//! gantry:{pool}:q:<kind>:dead                zset   id -> dead-lettered at
//! gantry:{pool}:q:<kind>:wake                list   wake tokens; idle workers BLPOP here
//! gantry:{pool}:job:<id>                     hash   spec, status, attempts, lease token, ...
//! gantry:{pool}:idem:<tenant>:<key sha256>   string first job id for an idempotency key
//! gantry:{pool}:user:<user key>              set    the user's job ids (erasure), see user_key
//! gantry:pools                               set    pools that ever had a job (job lookup by id)
//! ```

use crate::error::ValidationError;
use crate::job::{JobId, JobKind};

/// Set of every pool that has received a job; lets `job(id)` find a job without its pool.
pub const POOLS_KEY: &str = "gantry:pools";

pub use gantry_core::user::{digest_hex, user_key};

/// A validated pool name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pool(String);

impl Pool {
    /// Validates a pool name: 1..=64 of `a-z`, `0-9`, `-`, `_`.
    pub fn new(name: &str) -> Result<Self, ValidationError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(ValidationError::InvalidPool(name.chars().take(80).collect()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `gantry:{pool}:`, the prefix every script builds its keys from.
    pub fn prefix(&self) -> String {
        format!("gantry:{{{}}}:", self.0)
    }

    /// The job hash.
    pub fn job_key(&self, id: JobId) -> String {
        format!("gantry:{{{}}}:job:{id}", self.0)
    }

    /// A key of one of the pool's queues (`high`, `delayed`, `dead`, `wake`, ...).
    pub fn queue_key(&self, kind: JobKind, suffix: &str) -> String {
        format!("gantry:{{{}}}:q:{}:{suffix}", self.0, kind.as_str())
    }
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A queue: one (pool, kind).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName {
    /// The pool.
    pub pool: Pool,
    /// The kind.
    pub kind: JobKind,
}

impl QueueName {
    /// The queues of `pools` × `kind` (every kind when `None`): what a `--pool`/`--kind` filter
    /// selects, for the CLI and the admin API alike.
    pub fn across(pools: &[Pool], kind: Option<&str>) -> Result<Vec<QueueName>, ValidationError> {
        let kinds = match kind {
            Some(k) => vec![k.parse::<JobKind>()?],
            None => JobKind::ALL.to_vec(),
        };
        Ok(pools
            .iter()
            .flat_map(|p| {
                kinds.iter().map(|k| QueueName {
                    pool: p.clone(),
                    kind: *k,
                })
            })
            .collect())
    }
}

impl std::fmt::Display for QueueName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.pool, self.kind)
    }
}

/// The key of a job's entry in its tenant's credit ledger (the scheduler's): a hash of `state`
/// (`reserved`, then how it settled), `reserved` and `charged`.
pub fn credit_entry_key(tenant: &str, job: impl std::fmt::Display) -> String {
    format!("gantry:{{credits:{tenant}}}:job:{job}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_are_validated_and_keys_share_one_hash_tag() {
        let p = Pool::new("gpu-80g_a").expect("valid");
        assert_eq!(p.prefix(), "gantry:{gpu-80g_a}:");
        assert_eq!(
            p.queue_key(JobKind::CsamHash, "dead"),
            "gantry:{gpu-80g_a}:q:csam_hash:dead"
        );
        assert!(p.job_key(JobId::new()).starts_with("gantry:{gpu-80g_a}:job:"));
        for bad in ["", "GPU", "a b", "x{y}", &"a".repeat(65)] {
            assert!(Pool::new(bad).is_err(), "{bad:?}");
        }
    }
}
