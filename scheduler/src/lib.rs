//! Gantry scheduler: the HTTP API platform services submit jobs to, admission (credits, rate
//! limits, trust, residency) and placement onto pool queues.

pub mod admin;
pub mod admission;
pub mod api;
pub mod auth;
pub mod config;
pub mod erasure;
pub mod http;
pub mod metrics;
pub mod placement;
pub mod problem;
pub mod retention;
pub mod safety_admin;
pub mod server;
pub mod settler;

pub use config::SchedulerConfig;
pub use problem::ApiError;
pub use server::{Scheduler, ServeError};
