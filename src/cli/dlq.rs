//! `gantry dlq list|show|replay`.

use gantry_queue::{DeadFilter, ErrorClass, JobId, QueueClient, QueueName};
use indicatif::{ProgressBar, ProgressStyle};

use super::time::parse_when;

#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    /// Pool (default: every pool).
    #[arg(long)]
    pool: Option<String>,
    /// Kind (default: every kind).
    #[arg(long)]
    kind: Option<String>,
    /// Error class: retryable, permanent, cancelled, timed_out.
    #[arg(long)]
    class: Option<String>,
    /// Dead-lettered at or after: Unix ms or an age (15m, 6h, 2d).
    #[arg(long)]
    since: Option<String>,
    /// Dead-lettered at or before: Unix ms or an age.
    #[arg(long)]
    until: Option<String>,
}

impl FilterArgs {
    async fn resolve(&self, client: &QueueClient) -> anyhow::Result<(Vec<QueueName>, DeadFilter)> {
        let pools = super::pools_or_all(client, self.pool.as_deref()).await?;
        let queues = QueueName::across(&pools, self.kind.as_deref()).map_err(gantry_queue::QueueError::from)?;
        let filter = DeadFilter {
            class: self
                .class
                .as_deref()
                .map(str::parse::<ErrorClass>)
                .transpose()
                .map_err(gantry_queue::QueueError::from)?,
            since_ms: self.since.as_deref().map(parse_when).transpose()?,
            until_ms: self.until.as_deref().map(parse_when).transpose()?,
        };
        Ok((queues, filter))
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead-lettered jobs, oldest first.
    List {
        #[command(flatten)]
        redis: super::RedisArgs,
        #[command(flatten)]
        filter: FilterArgs,
        /// Most rows per queue.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead-lettered job.
    Show {
        #[command(flatten)]
        redis: super::RedisArgs,
        /// Job id.
        id: String,
    },
    /// Replay one job by id, or every job the filters select (`--all`), attempts reset.
    Replay {
        #[command(flatten)]
        redis: super::RedisArgs,
        /// Job id (or use --all with filters).
        id: Option<String>,
        /// Replay every dead-lettered job the filters select.
        #[arg(long, conflicts_with = "id")]
        all: bool,
        #[command(flatten)]
        filter: FilterArgs,
        /// Count what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run(c: DlqCommand) -> anyhow::Result<()> {
    match c {
        DlqCommand::List {
            redis,
            filter,
            limit,
            json,
        } => {
            let client = redis.client().await?;
            let (queues, f) = filter.resolve(&client).await?;
            for q in queues {
                for d in client.dead_letters(&q, &f, 0, limit).await? {
                    if json {
                        println!("{}", serde_json::to_string(&d)?);
                    } else {
                        println!(
                            "{}  {:<18} {:<10} attempts={} {}",
                            d.id,
                            q.to_string(),
                            d.class,
                            d.attempts,
                            d.message
                        );
                    }
                }
            }
        }
        DlqCommand::Show { redis, id } => {
            let id: JobId = id.parse().map_err(gantry_queue::QueueError::from)?;
            let rec = redis.client().await?.job(id).await?;
            super::jobs::print_record(&rec);
        }
        DlqCommand::Replay {
            redis,
            id,
            all,
            filter,
            dry_run,
        } => {
            let client = redis.client().await?;
            if let Some(id) = id {
                let id: JobId = id.parse().map_err(gantry_queue::QueueError::from)?;
                if dry_run {
                    let rec = client.job(id).await?;
                    println!(
                        "{id} is {:?}; would {}replay",
                        rec.status,
                        if rec.status == gantry_queue::JobStatus::Dead {
                            ""
                        } else {
                            "not "
                        }
                    );
                } else {
                    client.replay_one(id).await?;
                    println!("{id} replayed");
                }
                return Ok(());
            }
            if !all {
                anyhow::bail!("give a job id, or --all with filters (--pool, --kind, --class, --since, --until)");
            }
            replay_all(&client, &filter, dry_run).await?;
        }
    }
    Ok(())
}

async fn replay_all(client: &QueueClient, filter: &FilterArgs, dry_run: bool) -> anyhow::Result<()> {
    let (queues, f) = filter.resolve(client).await?;
    // Count first, so the progress bar has a length.
    let mut total = 0u64;
    for q in &queues {
        total += client.count_dead(q, &f).await?;
    }
    if dry_run {
        println!("would replay {total} job(s)");
        return Ok(());
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} replayed {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut replayed = 0u64;
    for q in &queues {
        replayed += client.replay_matching(q, &f, |n| bar.inc(n)).await?;
    }
    bar.finish_with_message("done");
    println!("replayed {replayed} job(s)");
    Ok(())
}
