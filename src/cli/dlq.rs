//! `gantry dlq list|show|replay|purge` (replays and purges are audited).

use gantry_queue::{DeadAction, DeadFilter, ErrorClass, JobId, QueueClient, QueueName};
use gantry_scheduler::dead_letters::{DeadLetterError, DeadLetters, Selection};
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
    /// Only this tenant's.
    #[arg(long)]
    tenant: Option<String>,
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
            tenant: self.tenant.clone(),
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
    Replay(ActArgs),
    /// Delete one dead-lettered job by id, or every one the filters select (`--all`), for
    /// good: its record, dead-letter entry and idempotency key.
    Purge(ActArgs),
}

#[derive(Debug, clap::Args)]
pub struct ActArgs {
    #[command(flatten)]
    redis: super::RedisArgs,
    /// Job id (or use --all with filters).
    id: Option<String>,
    /// Every dead-lettered job the filters select.
    #[arg(long, conflicts_with = "id")]
    all: bool,
    #[command(flatten)]
    filter: FilterArgs,
    /// Count what would be done; change nothing.
    #[arg(long)]
    dry_run: bool,
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
        DlqCommand::Replay(a) => act(a, DeadAction::Replay).await?,
        DlqCommand::Purge(a) => act(a, DeadAction::Purge).await?,
    }
    Ok(())
}

/// `replay` or `purge`: one job by id, or every one the filters select, through the same
/// audited service the operator API runs.
async fn act(a: ActArgs, action: DeadAction) -> anyhow::Result<()> {
    let verb = match action {
        DeadAction::Replay => "replay",
        DeadAction::Purge => "purge",
    };
    let done = gantry_scheduler::dead_letters::done_word(action);
    let client = a.redis.client().await?;
    let service = DeadLetters::new(client.clone(), a.redis.audit_log().await?);
    let actor = super::cli_actor();
    if let Some(id) = a.id {
        let id: JobId = id.parse().map_err(gantry_queue::QueueError::from)?;
        if a.dry_run {
            let status = client.status(id).await?;
            let dead = status == gantry_queue::JobStatus::Dead;
            println!("{id} is {status:?}; would {}{verb}", if dead { "" } else { "not " });
        } else {
            service.act_on_one(&actor, id, action).await.map_err(unwrap_queue)?;
            println!("{id} {done}");
        }
        return Ok(());
    }
    if !a.all {
        anyhow::bail!("give a job id, or --all with filters (--pool, --kind, --class, --since, --until)");
    }
    let (queues, f) = a.filter.resolve(&client).await?;
    // Count first, so the progress bar has a length.
    let total = service.count(&queues, &f).await.map_err(unwrap_queue)?;
    if a.dry_run {
        println!("would {verb} {total} job(s)");
        return Ok(());
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {done} {{msg}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let selection = Selection {
        pool: a.filter.pool.as_deref(),
        kind: a.filter.kind.as_deref(),
    };
    let n = service
        .act_on_matching(&actor, &queues, &f, &selection, action, |k| bar.inc(k))
        .await
        .map_err(unwrap_queue)?;
    bar.finish_with_message("done");
    println!("{done} {n} job(s)");
    Ok(())
}

/// A queue error as itself (so `exit_code` maps "not found" and "not dead-lettered" to 2).
fn unwrap_queue(e: DeadLetterError) -> anyhow::Error {
    match e {
        DeadLetterError::Queue(q) => q.into(),
        other => other.into(),
    }
}
