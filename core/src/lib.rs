//! Gantry's shared vocabulary, with no I/O: job ids, kinds, priorities, payloads, statuses,
//! error classes, usage and result references, and the user's pseudonymous key.
//!
//! Everything that talks to Redis lives in `gantry-queue`, which re-exports these types; crates
//! that only need to *name* a job or its usage (the model providers, the object store) depend on
//! this crate alone, the way `apalis-core` holds the types and the backends live elsewhere.

pub mod error;
pub mod job;
pub mod key_wrap;
pub mod payload;
pub mod payload_rules;
pub mod progress;
pub mod step_ref;
pub mod time;
pub mod trace;
pub mod user;

pub use error::ValidationError;
pub use job::{
    Completion, ErrorClass, GpuRequirement, HistoryEvent, JobError, JobId, JobKind, JobRecord, JobSpec, JobStatus,
    NewJob, Priority, Requirements, ResultRef, Usage,
};
pub use key_wrap::KeyWrap;
pub use payload::{
    CsamHashPayload, ExportPayload, GeneratePayload, MAX_REFERENCE_IMAGES, NoopPayload, Payload, PayloadContent,
    TranscodePayload, UpscaleMethod, UpscalePayload,
};
pub use progress::{Progress, Stage};
pub use user::user_key;
