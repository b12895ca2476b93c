//! Gantry scheduler: the HTTP API platform services submit jobs to, admission (credits, rate
//! limits, trust, residency) and placement onto pool queues.

pub mod admin;
pub mod admission;
pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod console;
pub mod console_feed;
pub mod console_session;
pub mod contract;
pub mod dead_letters;
pub mod erasure;
pub mod events;
pub mod exports;
pub mod extract;
pub mod handoff;
pub mod http;
pub mod job_search;
pub mod metrics;
pub mod oidc;
pub mod outputs;
pub mod percent;
pub mod pipeline_routes;
pub mod pipelines;
pub mod placement;
pub mod problem;
pub mod rate;
pub mod retention;
pub mod router;
pub mod safety_admin;
pub mod safety_cases;
pub mod server;
pub mod settler;
pub mod sse;
pub mod state;
mod stream_group;
pub mod users;
pub mod webhook_routes;
pub mod webhooks;

pub use config::SchedulerConfig;
pub use problem::ApiError;
pub use server::{Scheduler, ServeError};
