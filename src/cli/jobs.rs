//! `gantry jobs enqueue|show|list|cancel`.

use std::io::Read;

use gantry_queue::{CancelOutcome, JobId, JobKind, JobQuery, JobRecord, JobStatus, NewJob, Pool};

use super::time::{fmt_ms, now_ms, parse_when};

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
    /// List jobs, newest first: a tenant's (or every tenant's), filtered.
    List {
        #[command(flatten)]
        redis: super::RedisArgs,
        /// Only this tenant's jobs.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this user's jobs (needs --tenant).
        #[arg(long)]
        user: Option<String>,
        /// Only this kind (generate, upscale, transcode, csam_hash, noop).
        #[arg(long)]
        kind: Option<JobKind>,
        /// Only jobs in this status now (queued, running, succeeded, dead, ...).
        #[arg(long)]
        status: Option<JobStatus>,
        /// Created at or after: Unix ms or an age (15m, 6h, 2d).
        #[arg(long)]
        since: Option<String>,
        /// Created before: Unix ms or an age.
        #[arg(long)]
        until: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Go on from where an earlier listing stopped (its "next:" cursor), same filters.
        #[arg(long)]
        cursor: Option<String>,
        /// One JSON object per job.
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
        JobsCommand::List {
            redis,
            tenant,
            user,
            kind,
            status,
            since,
            until,
            limit,
            cursor,
            json,
        } => {
            let query = JobQuery {
                tenant,
                user,
                user_tenants: Vec::new(),
                kind,
                status,
                created_after_ms: since.as_deref().map(parse_when).transpose()?,
                created_before_ms: until.as_deref().map(parse_when).transpose()?,
            };
            list(&redis.client().await?, &query, limit, cursor, json).await?;
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

/// Prints up to `limit` jobs, following the search's pages (a sparse filter's pages can be
/// short), and the cursor to go on from.
async fn list(
    client: &gantry_queue::QueueClient,
    query: &JobQuery,
    limit: usize,
    mut cursor: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let now = now_ms();
    let mut shown = 0;
    let mut header_due = !json;
    loop {
        let page = client
            .search(
                query,
                (limit - shown).min(gantry_queue::client::MAX_PAGE),
                cursor.as_deref(),
            )
            .await?;
        if header_due {
            println!(
                "{:<26}  {:<20}  {:<12}  {:<15}  {:>8}  {:>12}  ERROR",
                "ID", "QUEUE", "TENANT", "STATUS", "ATTEMPTS", "CREATED"
            );
            header_due = false;
        }
        for j in &page.jobs {
            if json {
                println!("{}", serde_json::to_string(j)?);
            } else {
                println!(
                    "{:<26}  {:<20}  {:<12}  {:<15}  {:>8}  {:>12}  {}",
                    j.id,
                    format!("{}/{}", j.pool, j.kind),
                    j.tenant,
                    j.status.as_str(),
                    format!("{}/{}", j.attempts, j.max_attempts),
                    format!("{} ago", fmt_ms(now.saturating_sub(j.enqueued_at_ms))),
                    j.error
                        .as_ref()
                        .map_or(String::new(), |e| format!("{}: {}", e.class, e.message)),
                );
            }
        }
        shown += page.jobs.len();
        cursor = page.next_cursor;
        if shown >= limit || cursor.is_none() {
            break;
        }
    }
    if let Some(c) = cursor {
        // Times as resolved (an age like 1h moves; the cursor holds to the filters it had).
        let mut next = String::new();
        if let Some(ms) = query.created_after_ms {
            next.push_str(&format!("--since {ms} "));
        }
        if let Some(ms) = query.created_before_ms {
            next.push_str(&format!("--until {ms} "));
        }
        eprintln!("next: {next}--cursor {c}");
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
    if let Some(p) = r
        .progress
        .as_ref()
        .filter(|_| r.status == gantry_queue::JobStatus::Running)
    {
        let pct = p.percent.map(|v| format!(" {v:.1}%")).unwrap_or_default();
        println!("progress:  {}{pct} (attempt {})", p.stage, p.attempt);
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
