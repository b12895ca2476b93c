//! `gantry queues stats`.

use gantry_queue::JobKind;

use super::time::fmt_ms;

#[derive(Debug, clap::Subcommand)]
pub enum QueuesCommand {
    /// Depth per priority, in flight, delayed, dead and oldest waiting age, per queue.
    Stats {
        #[command(flatten)]
        redis: super::RedisArgs,
        /// Only this pool.
        #[arg(long)]
        pool: Option<String>,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(c: QueuesCommand) -> anyhow::Result<()> {
    let QueuesCommand::Stats { redis, pool, json } = c;
    let client = redis.client().await?;
    let pools = super::pools_or_all(&client, pool.as_deref()).await?;
    if !json {
        println!(
            "{:<24} {:>8} {:>8} {:>8} {:>9} {:>8} {:>6} {:>8}",
            "queue", "high", "normal", "bulk", "in-flight", "delayed", "dead", "oldest"
        );
    }
    for p in pools {
        for s in client.stats(&p, &JobKind::ALL).await? {
            if json {
                println!("{}", serde_json::to_string(&s)?);
                continue;
            }
            if s.waiting_total() + s.in_flight + s.delayed + s.dead == 0 {
                continue;
            }
            println!(
                "{:<24} {:>8} {:>8} {:>8} {:>9} {:>8} {:>6} {:>8}",
                format!("{}/{}", s.pool, s.kind),
                s.waiting[0],
                s.waiting[1],
                s.waiting[2],
                s.in_flight,
                s.delayed,
                s.dead,
                s.oldest_waiting_ms.map(fmt_ms).unwrap_or_else(|| "-".into())
            );
        }
    }
    Ok(())
}
