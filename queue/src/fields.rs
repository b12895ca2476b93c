//! The names of the fields the Lua scripts write and Rust reads: a job's hash
//! (`gantry:{pool}:job:<id>`) and a pool's credit events (`gantry:{pool}:credits`). Rust code
//! names them through these constants, and a unit test checks that every one is written by
//! the scripts, so a rename on one side fails the build's tests instead of reading as absent.

/// Fields of a job's hash.
pub mod job {
    /// The stored spec (JSON, sensitive fields sealed).
    pub const SPEC: &str = "spec";
    /// `queued`, `running`, `succeeded`, …
    pub const STATUS: &str = "status";
    /// Attempts started.
    pub const ATTEMPTS: &str = "attempts";
    /// Enqueued at (Unix ms).
    pub const ENQUEUED_AT: &str = "enq";
    /// Started running (Unix ms).
    pub const STARTED_AT: &str = "started";
    /// Finished (Unix ms).
    pub const FINISHED_AT: &str = "fin";
    /// Due again (a delayed job or a retry), Unix ms.
    pub const DUE_AT: &str = "due";
    /// Made ready to run again (promoted from delayed, requeued, released, replayed), Unix ms;
    /// absent while it has waited since it was enqueued. A claim reports the wait from it.
    pub const READY_AT: &str = "ready";
    /// The worker that holds it.
    pub const WORKER: &str = "worker";
    /// Set when a cancel was asked of a running job.
    pub const CANCEL: &str = "cancel";
    /// The last error's class.
    pub const ERROR_CLASS: &str = "eclass";
    /// The last error's message (operator-safe).
    pub const ERROR_MESSAGE: &str = "emsg";
    /// When the last error happened (Unix ms).
    pub const ERROR_AT: &str = "eat";
    /// The result reference (JSON).
    pub const RESULT: &str = "result";
    /// The usage the worker reported (JSON).
    pub const USAGE: &str = "usage";
    /// The attempt history, one JSON event per line.
    pub const HISTORY: &str = "hist";
    /// Credits reserved at admission.
    pub const CREDITS_RESERVED: &str = "cr";
    /// The tenant.
    pub const TENANT: &str = "ten";
    /// The price rule locked at admission (JSON).
    pub const PRICE_RULE: &str = "pr";
    /// The user's pseudonymous key (its index, for erasure).
    pub const USER_KEY: &str = "uk";
    /// The job kind.
    pub const KIND: &str = "kind";
    /// The priority.
    pub const PRIORITY: &str = "prio";
    /// Attempts allowed.
    pub const MAX_ATTEMPTS: &str = "max";
    /// Present when the tenant subscribes to events: the final outcome leaves a job event.
    pub const EVENTS: &str = "ev";
    /// The last progress its worker reported (JSON: stage, percent, attempt).
    pub const PROGRESS: &str = "prog";
    /// When that progress was stored (Unix ms).
    pub const PROGRESS_AT: &str = "pat";
    /// A pipeline step's pipeline id.
    pub const PIPELINE: &str = "pl";
    /// A pipeline step's name.
    pub const STEP: &str = "step";
    /// A pipeline step's children (JSON `[[pool, id], ...]`).
    pub const KIDS: &str = "kids";
    /// A waiting pipeline step's parents still to succeed.
    pub const NEED: &str = "need";
    /// Present when a pipeline step's failure does not fail its pipeline.
    pub const OPTIONAL: &str = "opt";

    /// Every field above.
    pub const ALL: [&str; 31] = [
        SPEC,
        STATUS,
        ATTEMPTS,
        ENQUEUED_AT,
        STARTED_AT,
        FINISHED_AT,
        DUE_AT,
        READY_AT,
        WORKER,
        CANCEL,
        ERROR_CLASS,
        ERROR_MESSAGE,
        ERROR_AT,
        RESULT,
        USAGE,
        HISTORY,
        CREDITS_RESERVED,
        TENANT,
        PRICE_RULE,
        USER_KEY,
        KIND,
        PRIORITY,
        MAX_ATTEMPTS,
        EVENTS,
        PROGRESS,
        PROGRESS_AT,
        PIPELINE,
        STEP,
        KIDS,
        NEED,
        OPTIONAL,
    ];
}

/// Fields of a credit event (the pool's `credits` stream), written with a job's final outcome.
pub mod credit_event {
    /// The job id.
    pub const JOB: &str = "id";
    /// The tenant.
    pub const TENANT: &str = "ten";
    /// The outcome: `succeeded`, `dead`, `cancelled`, …
    pub const OUTCOME: &str = "out";
    /// Credits reserved.
    pub const RESERVED: &str = "cr";
    /// The locked price rule (JSON).
    pub const PRICE_RULE: &str = "pr";
    /// The usage the worker reported (JSON).
    pub const USAGE: &str = "usage";

    /// Every field above.
    pub const ALL: [&str; 6] = [JOB, TENANT, OUTCOME, RESERVED, PRICE_RULE, USAGE];
}

/// Fields of a job event (the pool's `events` stream), written with a subscribed tenant's
/// job's final outcome.
pub mod job_event {
    /// The job id.
    pub const JOB: &str = "id";
    /// The tenant.
    pub const TENANT: &str = "ten";
    /// The job's kind.
    pub const KIND: &str = "kind";
    /// The event type: `job.succeeded`, `job.dead`, `job.blocked`, `job.cancelled`.
    pub const TYPE: &str = "type";
    /// When it happened (ms since the Unix epoch, Redis's clock).
    pub const AT: &str = "at";
    /// The result (JSON), for a success that reported one.
    pub const RESULT: &str = "result";
    /// The error class, for the others.
    pub const ERROR_CLASS: &str = "ec";
    /// The error message, for the others.
    pub const ERROR_MESSAGE: &str = "em";
    /// The W3C traceparent of the span that enqueued the job, when it was traced.
    pub const TRACEPARENT: &str = "tp";

    /// Every field above.
    pub const ALL: [&str; 9] = [
        JOB,
        TENANT,
        KIND,
        TYPE,
        AT,
        RESULT,
        ERROR_CLASS,
        ERROR_MESSAGE,
        TRACEPARENT,
    ];
}

#[cfg(test)]
mod tests {
    /// Every script, as the protocol runs it.
    fn scripts() -> String {
        [
            include_str!("scripts/common.lua"),
            include_str!("scripts/enqueue.lua"),
            include_str!("scripts/claim.lua"),
            include_str!("scripts/heartbeat.lua"),
            include_str!("scripts/ack.lua"),
            include_str!("scripts/fail.lua"),
            include_str!("scripts/release.lua"),
            include_str!("scripts/reap.lua"),
            include_str!("scripts/cancel.lua"),
            include_str!("scripts/erase.lua"),
            include_str!("scripts/dead_letters.lua"),
            include_str!("scripts/stats.lua"),
            include_str!("scripts/register.lua"),
            include_str!("scripts/pause.lua"),
            include_str!("scripts/slots.lua"),
            include_str!("scripts/search.lua"),
            include_str!("scripts/progress.lua"),
            include_str!("scripts/handoff.lua"),
        ]
        .concat()
    }

    #[test]
    fn every_field_rust_reads_is_one_the_scripts_write() {
        let lua = scripts();
        for f in super::job::ALL
            .iter()
            .chain(&super::credit_event::ALL)
            .chain(&super::job_event::ALL)
        {
            assert!(lua.contains(&format!("'{f}'")), "no script names the field {f:?}");
        }
        // The credit event is written in one XADD, with every field in it.
        let xadd = lua
            .lines()
            .skip_while(|l| !l.contains("'XADD'"))
            .take(2)
            .collect::<String>();
        for f in super::credit_event::ALL {
            assert!(xadd.contains(&format!("'{f}'")), "the credit event lacks {f:?}: {xadd}");
        }
    }
}
