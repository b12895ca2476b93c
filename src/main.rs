//! `gantry`: one binary for the fleet — worker, operator CLI, demo and benchmarks.

mod cli;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    let telemetry = match cli::Telemetry::init(args.verbose, args.log_format, args.trace_export()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let code = match cli::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(cli::exit_code(&e))
        }
    };
    // The exporter's last batch is sent from its own thread; wait for it off the runtime.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    code
}
