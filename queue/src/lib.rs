//! Gantry's job model (serde types) and Redis queue protocol: enqueue, claim with lease,
//! heartbeat, ack, retry, dead-letter, replay, cancel, delayed jobs; Cluster-safe Lua scripts.

pub mod client;
pub mod config;
pub mod conn;
pub mod consumer;
pub mod error;
pub mod exposition;
pub mod fields;
pub mod fleet;
pub mod job;
pub mod keys;
pub mod payload;
pub mod retention;
pub mod retry;
mod scripts;
pub mod seal;
pub mod slots;

pub use client::{
    Accounting, AckOutcome, CancelOutcome, ClaimBatch, ClaimCapacity, ClaimedJob, DeadAction, DeadFilter, DeadLetter,
    DeadLetterOutcome, Enqueued, ErasureCounts, FailOutcome, Failure, LeaseRef, LeaseState, QueueClient, QueueStats,
    ReapReport, ResealReport,
};
pub use config::QueueConfig;
pub use conn::{RedisConn, RedisTarget};
pub use consumer::{
    Consumer, ConsumerConfig, ConsumerEvents, ConsumerStats, GpuResource, HandlerFuture, JobContext, JobHandler,
    JobOutcome, LeaseSource, Leased, Leases, NoEvents, Resources, Settlement, Ticket, job_span,
};
pub use error::{QueueError, ValidationError};
pub use fleet::{FleetGpu, WorkerRecord};
pub use job::{
    Completion, ErrorClass, GpuRequirement, HistoryEvent, JobError, JobId, JobKind, JobRecord, JobSpec, JobStatus,
    NewJob, Priority, Requirements, ResultRef, Usage,
};
pub use keys::{Pool, QueueName, user_key};
pub use payload::{CsamHashPayload, GeneratePayload, NoopPayload, Payload, TranscodePayload, UpscalePayload};
pub use retention::RetentionPolicy;
pub use slots::ProviderSlots;
