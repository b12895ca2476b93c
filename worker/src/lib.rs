//! Gantry worker runtime: claims from the queues its executors can serve and runs each job kind
//! through its executor.

pub mod executors;
pub mod gpu;
pub mod http;
pub mod metrics;
pub mod outputs;
pub mod runtime;

pub use executors::{Executor, ExecutorSet};
pub use runtime::{WorkerConfig, WorkerError, run_worker};
