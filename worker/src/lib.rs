//! Gantry worker runtime: an apalis 1.0 worker over Gantry's queue backend. It claims from the
//! queues its executors can serve, within what its GPUs and cores have free, and runs each job
//! kind through its executor and apalis's Tower layers.

pub mod backend;
pub mod deletion_cost;
pub mod executors;
pub mod gpu;
pub mod http;
pub mod layers;
pub mod metrics;
pub use gantry_store as outputs;
pub mod runtime;
pub mod scan;
pub mod steps;
pub mod super_resolution;

pub use backend::{QueueBackend, QueuedJob};
pub use executors::{Executor, ExecutorSet};
pub use layers::{JobFailure, KindTimeouts};
pub use runtime::{WorkerConfig, WorkerError, run_worker};
