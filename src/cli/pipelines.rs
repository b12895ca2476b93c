//! `gantry pipelines show|cancel`: a pipeline as its tenant sees it (every step's status,
//! attempts, progress or error, and the credits), and cancelling one, straight from Redis.

use gantry_scheduler::pipelines::PipelineStore;

use super::time::fmt_ms;

#[derive(Debug, clap::Subcommand)]
pub enum PipelinesCommand {
    /// Show a pipeline: its status, each step's, and the credits.
    Show {
        #[command(flatten)]
        redis: super::RedisArgs,
        /// Pipeline id.
        id: String,
        /// Print it as JSON (as GET /v1/pipelines/{id} does).
        #[arg(long)]
        json: bool,
    },
    /// Cancel every step of a pipeline that has not ended.
    Cancel {
        #[command(flatten)]
        redis: super::RedisArgs,
        /// Pipeline id.
        id: String,
    },
}

pub async fn run(c: PipelinesCommand) -> anyhow::Result<()> {
    match c {
        PipelinesCommand::Show { redis, id, json } => {
            let store = PipelineStore::new(redis.client().await?);
            let p = store.get(None, &id).await.map_err(super::refused)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&p)?);
                return Ok(());
            }
            let age = super::time::now_ms().saturating_sub(p.created_at_ms);
            println!("pipeline:  {}  {}  (created {} ago)", p.id, p.status, fmt_ms(age));
            println!(
                "credits:   {} reserved, {} charged, {} refunded",
                p.credits.reserved, p.credits.charged, p.credits.refunded
            );
            println!(
                "{:<16}  {:<10}  {:<16}  {:<10}  {:>8}  NOW",
                "STEP", "KIND", "STATUS", "POOL", "ATTEMPTS"
            );
            for s in &p.steps {
                let now = match (&s.progress, &s.error) {
                    (Some(pr), _) => {
                        format!(
                            "{}{}",
                            pr.stage,
                            pr.percent.map(|v| format!(" {v:.1}%")).unwrap_or_default()
                        )
                    }
                    (None, Some(e)) => format!("{}: {}", e.class, e.message),
                    (None, None) if !s.needs.is_empty() && s.status == "waiting" => {
                        format!("needs {}", s.needs.join(", "))
                    }
                    _ => s.result.as_ref().map(|r| r.object_key.clone()).unwrap_or_default(),
                };
                println!(
                    "{:<16}  {:<10}  {:<16}  {:<10}  {:>8}  {now}",
                    s.name,
                    s.kind.as_str(),
                    s.status,
                    s.pool,
                    s.attempts
                );
            }
        }
        PipelinesCommand::Cancel { redis, id } => {
            let store = PipelineStore::new(redis.client().await?);
            let n = store.cancel(None, &id).await.map_err(super::refused)?;
            println!("{id}: {n} steps cancelled (running ones stop at their next heartbeat)");
        }
    }
    Ok(())
}
