//! Gantry's Redis queue protocol (the job model itself is `gantry-core`, re-exported here): enqueue, claim with lease,
//! heartbeat, ack, retry, dead-letter, replay, cancel, delayed jobs; Cluster-safe Lua scripts.

pub mod client;
pub mod config;
pub mod conn;
pub mod consumer;
pub mod error;
pub mod events;
pub mod exposition;
pub mod fields;
pub mod fleet;
pub mod keys;
pub mod retention;
pub mod retry;
mod scripts;
pub mod seal;
pub mod slots;
pub mod trace;

pub use client::{
    Accounting, AckOutcome, CancelOutcome, ClaimBatch, ClaimCapacity, ClaimedJob, CreditBacklog, DeadAction,
    DeadFilter, DeadLetter, DeadLetterOutcome, Enqueued, ErasureCounts, FailOutcome, Failure, JobPage, JobQuery,
    JobSummary, LeaseRef, LeaseState, ProgressReport, QueueClient, QueueStats, ReapReport, ResealReport, StepLink,
    UserCursor, UserItem, UserPage, UserPipeline,
};
pub use config::{QueueConfig, RecordFormat};
pub use conn::{RedisConn, RedisTarget};
pub use consumer::{
    Consumer, ConsumerConfig, ConsumerEvents, ConsumerStats, GpuResource, HandlerFuture, JobContext, JobHandler,
    JobOutcome, LeaseSource, Leased, Leases, NoEvents, ProgressHandle, QUEUE_WAIT_BUCKETS, Resources, Settlement,
    Ticket, VramProbe, job_span,
};
pub use error::{QueueError, ValidationError};
pub use fleet::{FleetGpu, FleetMig, WorkerRecord};
pub use gantry_core::{
    Completion, CsamHashPayload, ErrorClass, ExportPayload, GeneratePayload, GpuRequirement, HistoryEvent, JobError,
    JobId, JobKind, JobRecord, JobSpec, JobStatus, NewJob, NoopPayload, Payload, Priority, Progress, Requirements,
    ResultRef, Stage, TranscodePayload, UpscaleMethod, UpscalePayload, Usage, user_key,
};
/// The job model lives in `gantry-core`; these paths keep `gantry_queue::job::…` working.
pub use gantry_core::{job, payload};
pub use keys::{Pool, QueueName, credit_entry_key};
pub use retention::RetentionPolicy;
pub use slots::ProviderSlots;
