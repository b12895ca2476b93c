//! Gantry's end-to-end tests, one binary: each module starts the real things (redis-server,
//! `gantry` processes, ffmpeg, Prometheus, Python tools from PyPI) on loopback. They need
//! those tools, so they build only with the `e2e` feature, which `./run test` (and so CI)
//! always turns on; plain `cargo test` runs the fast tier (unit tests) alone.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod common;

mod alerts;
mod cli;
mod cluster;
mod console;
mod console_browser;
mod console_pages;
mod crash_recovery;
mod credits;
mod csam_hash;
mod dashboards;
mod deletion_cost;
mod demo;
mod encryption;
mod erasure;
mod events;
mod exports;
mod fairness;
mod fleet;
mod generate;
mod hash_cli;
mod helm_chart;
mod logging;
mod metrics;
mod openapi_fuzz;
mod output_scan;
mod outputs;
mod pipelines;
mod placement;
mod redaction;
mod references;
mod residency;
mod retention;
mod review;
mod s3;
mod scheduler;
mod sdk;
mod security;
mod traces;
mod transcode;
mod upscale;
mod webhooks;
