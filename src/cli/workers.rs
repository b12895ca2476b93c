//! `gantry workers list`.

use super::time::{fmt_ms, now_ms};

#[derive(Debug, clap::Subcommand)]
pub enum WorkersCommand {
    /// Live workers: pool, kinds, jobs in flight, GPUs, last heartbeat.
    List {
        #[command(flatten)]
        redis: super::RedisArgs,
        /// Only this pool (default: every pool that has had a job or a worker).
        #[arg(long)]
        pool: Option<String>,
        /// JSON lines.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(c: WorkersCommand) -> anyhow::Result<()> {
    let WorkersCommand::List { redis, pool, json } = c;
    let client = redis.client().await?;
    let pools = super::pools_or_all(&client, pool.as_deref()).await?;
    if !json {
        println!(
            "{:<24} {:<10} {:<22} {:>9} {:<40} {:>6}",
            "worker", "pool", "kinds", "in-flight", "gpus", "seen"
        );
    }
    for p in pools {
        for w in client.workers(&p).await? {
            if json {
                println!("{}", serde_json::to_string(&w)?);
                continue;
            }
            let kinds: Vec<&str> = w.kinds.iter().map(|k| k.as_str()).collect();
            let gpus = if w.gpus.is_empty() {
                "cpu-only".to_owned()
            } else {
                let list: Vec<String> = w
                    .gpus
                    .iter()
                    .map(|g| {
                        format!(
                            "{}:{:.0}/{:.0}GiB{}",
                            g.index,
                            g.memory_free_bytes as f64 / (1u64 << 30) as f64,
                            g.memory_total_bytes as f64 / (1u64 << 30) as f64,
                            if g.nvenc { "+nvenc" } else { "" }
                        )
                    })
                    .collect();
                format!(
                    "{}{}",
                    if w.gpu_source == "fake" { "FAKE " } else { "" },
                    list.join(" ")
                )
            };
            println!(
                "{:<24} {:<10} {:<22} {:>9} {:<40} {:>6}{}",
                w.id,
                w.pool,
                kinds.join(","),
                format!("{}/{}", w.in_flight, w.concurrency),
                gpus,
                fmt_ms(now_ms().saturating_sub(w.last_seen_ms)),
                if w.draining { " draining" } else { "" }
            );
        }
    }
    Ok(())
}
