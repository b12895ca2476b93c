//! `gantry jobs enqueue|show|cancel`.

use std::io::Read;

use gantry_queue::{CancelOutcome, JobId, JobRecord, NewJob, Pool};

use super::time::fmt_ms;

#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// Enqueue one job (or a JSON array of jobs, in one round trip) from JSON.
    ///
    /// The JSON is {"tenant", "user", "kind", "payload", ...} as in the job model; for example
    /// {"tenant":"t1","user":"u1","kind":"noop","payload":{"sleep_ms":100}}.
    Enqueue {
        #[command(flatten)]
        redis: super::RedisArgs,
        /// Pool whose queue takes the job.
        #[arg(long, default_value = "cpu")]
        pool: String,
        /// The job as JSON; `-` reads standard input.
        json: String,
    },
    /// Show a job's status, attempts, error and history.
    Show {
        #[command(flatten)]
        redis: super::RedisArgs,
        /// Job id.
        id: String,
        /// Print the whole record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job: a waiting one at once, a running one at its next heartbeat.
    Cancel {
        #[command(flatten)]
        redis: super::RedisArgs,
        /// Job id.
        id: String,
    },
}

pub async fn run(c: JobsCommand) -> anyhow::Result<()> {
    match c {
        JobsCommand::Enqueue { redis, pool, json } => {
            let pool = Pool::new(&pool)?;
            let text = if json == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s
            } else {
                json
            };
            let jobs: Vec<NewJob> = if text.trim_start().starts_with('[') {
                let values: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| {
                    gantry_queue::QueueError::from(gantry_queue::ValidationError::MalformedJson(e.to_string()))
                })?;
                values
                    .iter()
                    .map(|v| NewJob::from_json(v.to_string().as_bytes()))
                    .collect::<Result<_, _>>()?
            } else {
                vec![NewJob::from_json(text.as_bytes())?]
            };
            let client = redis.client().await?;
            for e in client.enqueue_batch(&pool, jobs).await? {
                if e.duplicate {
                    println!("{} (duplicate idempotency key: the existing job)", e.id);
                } else {
                    println!("{}", e.id);
                }
            }
        }
        JobsCommand::Show { redis, id, json } => {
            let id: JobId = id.parse().map_err(gantry_queue::QueueError::from)?;
            let rec = redis.client().await?.job(id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rec)?);
            } else {
                print_record(&rec);
            }
        }
        JobsCommand::Cancel { redis, id } => {
            let id: JobId = id.parse().map_err(gantry_queue::QueueError::from)?;
            match redis.client().await?.cancel(id).await? {
                CancelOutcome::Cancelled => println!("{id} cancelled"),
                CancelOutcome::Requested => {
                    println!("{id} is running: cancellation requested; its worker stops it at the next heartbeat")
                }
            }
        }
    }
    Ok(())
}

pub fn print_record(r: &JobRecord) {
    let s = &r.spec;
    println!("id:        {}", s.id);
    println!("queue:     {}/{}  priority {}", s.pool, s.kind(), s.priority.as_str());
    println!("tenant:    {}  user {}", s.tenant, s.user);
    println!("status:    {:?}", r.status);
    println!("attempts:  {} of {}", r.attempts, s.max_attempts);
    if let (Some(start), Some(fin)) = (r.started_at_ms, r.finished_at_ms) {
        println!(
            "ran:       {} (queued {} before)",
            fmt_ms(fin.saturating_sub(start)),
            fmt_ms(start.saturating_sub(r.enqueued_at_ms))
        );
    }
    if let Some(w) = &r.worker {
        println!("worker:    {w}");
    }
    if let Some(e) = &r.error {
        println!("error:     {} — {}", e.class, e.message);
    }
    if let Some(res) = &r.result {
        println!(
            "result:    {} ({} bytes, {})",
            res.object_key, res.size_bytes, res.content_type
        );
    }
    for h in &r.history {
        println!(
            "  history: {} attempt={} {} {}",
            h.event,
            h.attempt.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
            h.class.as_deref().unwrap_or(""),
            h.message.as_deref().unwrap_or("")
        );
    }
}
