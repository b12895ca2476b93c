//! `gantry gpus`: this machine's GPU inventory as a worker would see it at start-up (NVML
//! readings and the NVENC probe), without Redis. The command that proves the GPU paths on real
//! hardware (`docs/gpu.md`).

use gantry_worker::gpu::{GpuMode, NvencStatus, discover};

#[derive(Debug, clap::Args)]
pub struct GpusArgs {
    /// `auto` (NVML; CPU-only without a driver), `none`, or `fake:SPEC`.
    #[arg(long, env = "GANTRY_GPUS", default_value = "auto")]
    gpus: String,
    /// Print the whole inventory as JSON (every NVML reading, the probe's verdict per GPU).
    #[arg(long)]
    json: bool,
}

pub async fn run(a: GpusArgs) -> anyhow::Result<()> {
    let mode = a.gpus.parse::<GpuMode>()?;
    let inv = tokio::task::spawn_blocking(move || discover(&mode)).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&inv)?);
    } else {
        println!("{}", inv.summary());
        for g in &inv.gpus {
            let nvenc = match &g.nvenc {
                NvencStatus::Proven => "proven (an encode session opened)".to_owned(),
                NvencStatus::Declared => "declared (fake)".to_owned(),
                NvencStatus::Unavailable { reason } => format!("unavailable: {reason}"),
                NvencStatus::NotProbed => "not probed".to_owned(),
            };
            println!(
                "  gpu {} {} {}: {}/{} MiB free, util {}, {}, {}, mig slices {}; nvenc {nvenc}",
                g.index,
                g.name,
                g.uuid,
                g.memory_free_bytes >> 20,
                g.memory_total_bytes >> 20,
                reading(g.utilization_ratio.map(|r| r * 100.0), "%"),
                reading(g.temperature_celsius, " C"),
                reading(g.power_watts, " W"),
                g.mig_devices.len()
            );
        }
    }
    Ok(())
}

fn reading(v: Option<f64>, unit: &str) -> String {
    v.map(|v| format!("{v:.0}{unit}"))
        .unwrap_or_else(|| format!("n/a{unit}"))
}
