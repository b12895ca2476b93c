//! Pipeline records (`gantry:{pool}:pl:<id>`): stored by `pipeline.lua` with the pipeline's id
//! in its user's index, so an erasure deletes it with the user's jobs; read and updated by the
//! scheduler's pipeline store.

use super::QueueClient;
use crate::error::{During, QueueError};
use crate::keys::Pool;
use crate::scripts;

/// The fields of a pipeline's record.
pub mod fields {
    /// The tenant.
    pub const TENANT: &str = "ten";
    /// The user's key (its index, for erasure).
    pub const USER_KEY: &str = "uk";
    /// Created (Unix ms, Redis's clock).
    pub const CREATED: &str = "at";
    /// `creating`, `created` or `cancelled`.
    pub const STATE: &str = "state";
    /// The steps (JSON).
    pub const STEPS: &str = "steps";
    /// Every field.
    pub const ALL: [&str; 5] = [TENANT, USER_KEY, CREATED, STATE, STEPS];
}

impl QueueClient {
    /// A pipeline record's key in `pool`.
    pub fn pipeline_key(pool: &Pool, id: &str) -> String {
        format!("{}pl:{id}", pool.prefix())
    }

    /// The ids of `pool`'s pipelines still being stored, by when they began (ms).
    pub fn pipelines_creating_key(pool: &Pool) -> String {
        format!("{}pl-creating", pool.prefix())
    }

    /// Stores a pipeline's record in `pool` (state `creating`, kept as long as the user's
    /// index) and puts its id in the user's index. Returns its creation time (ms).
    pub async fn store_pipeline(
        &self,
        pool: &Pool,
        id: &str,
        tenant: &str,
        user_key: &str,
        steps_json: &str,
    ) -> Result<u64, QueueError> {
        let mut inv = scripts::PIPELINE.prepare_invoke();
        inv.key(pool.prefix())
            .arg(id)
            .arg(user_key)
            .arg(self.cfg.user_index_ttl().as_secs())
            .arg(tenant)
            .arg("creating")
            .arg(steps_json);
        let mut c = self.conn.clone();
        inv.invoke_async(&mut c).await.during("pipeline", pool)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_script_writes_every_field_the_store_reads() {
        let lua = include_str!("../scripts/pipeline.lua");
        for f in super::fields::ALL {
            assert!(lua.contains(&format!("'{f}'")), "pipeline.lua writes no {f:?}");
        }
    }
}
