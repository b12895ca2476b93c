//! `gantry queues stats|pause|resume`.

use gantry_queue::{JobKind, Pool, QueueError, QueueName};

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
    /// Stop workers claiming from a queue; it keeps taking jobs.
    Pause {
        #[command(flatten)]
        redis: super::RedisArgs,
        /// Pool.
        #[arg(long)]
        pool: String,
        /// Kind.
        #[arg(long)]
        kind: String,
    },
    /// Let workers claim from a paused queue again.
    Resume {
        #[command(flatten)]
        redis: super::RedisArgs,
        /// Pool.
        #[arg(long)]
        pool: String,
        /// Kind.
        #[arg(long)]
        kind: String,
    },
}

pub async fn run(c: QueuesCommand) -> anyhow::Result<()> {
    let (redis, pool, json) = match c {
        QueuesCommand::Stats { redis, pool, json } => (redis, pool, json),
        QueuesCommand::Pause { redis, pool, kind } => return set_paused(redis, &pool, &kind, true).await,
        QueuesCommand::Resume { redis, pool, kind } => return set_paused(redis, &pool, &kind, false).await,
    };
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
            if s.paused {
                println!("{:<24} (paused)", "");
            }
        }
    }
    Ok(())
}

async fn set_paused(redis: super::RedisArgs, pool: &str, kind: &str, paused: bool) -> anyhow::Result<()> {
    let client = redis.client().await?;
    let queue = QueueName {
        pool: Pool::new(pool).map_err(QueueError::from)?,
        kind: kind.parse::<JobKind>().map_err(QueueError::from)?,
    };
    let changed = client.set_paused(&queue, paused).await?;
    let word = if paused { "paused" } else { "resumed" };
    println!("{queue} {}{word}", if changed { "" } else { "was already " });
    let action = if paused { "queue.pause" } else { "queue.resume" };
    let target = format!("{}/{}", queue.pool, queue.kind);
    redis
        .audit(action, &target, serde_json::json!({ "changed": changed }))
        .await
}
