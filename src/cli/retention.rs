//! `gantry retention report|sweep`: what each data class keeps, what is due, and the sweep.

use gantry_scheduler::retention::{Sweeper, report};
use gantry_worker::outputs::OutputStore;

#[derive(Debug, clap::Subcommand)]
pub enum RetentionCommand {
    /// Per data class (job records, dead letters, idempotency keys, moderation events, audit
    /// log, outputs): the policy in force (GANTRY_RETENTION), how much is stored, what a sweep
    /// would remove now and when the next removal falls due.
    Report {
        #[command(flatten)]
        redis: super::RedisArgs,
        /// The workers' output store (as their --outputs), to include the outputs.
        #[arg(long, env = "GANTRY_OUTPUTS")]
        outputs: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove now what is past its retention (the scheduler does this every
    /// retention_sweep_secs): outputs, old audit entries, expired moderation index ids, and
    /// preserved evidence past its category's period.
    Sweep {
        #[command(flatten)]
        redis: super::RedisArgs,
        /// The workers' output store (as their --outputs).
        #[arg(long, env = "GANTRY_OUTPUTS")]
        outputs: Option<String>,
        /// The evidence quarantine, when it is a store of its own (as the scheduler's
        /// --quarantine-store; default: the outputs' store under `quarantine/`).
        #[arg(long, env = "GANTRY_QUARANTINE_STORE")]
        quarantine_store: Option<String>,
        /// Count what would go, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run(c: RetentionCommand) -> anyhow::Result<()> {
    let policy = gantry_queue::RetentionPolicy::from_env().map_err(super::refused)?;
    let store = |url: Option<String>| url.as_deref().map(OutputStore::open).transpose();
    match c {
        RetentionCommand::Report { redis, outputs, json } => {
            let client = redis.client().await?;
            let outputs = store(outputs)?;
            let classes = report(&policy, &client, outputs.as_ref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&classes)?);
                return Ok(());
            }
            let now = super::time::now_ms();
            println!(
                "{:<18} {:>9} {:>8} {:>8}  {:<14} kept",
                "class", "stored", "active", "due now", "next removal"
            );
            for c in &classes {
                let next = match c.next_removal_ms {
                    None => "-".to_owned(),
                    Some(t) if t <= now => "now".to_owned(),
                    Some(t) => format!("in {}", super::time::fmt_ms(t - now)),
                };
                println!(
                    "{:<18} {:>9} {:>8} {:>8}  {:<14} {}",
                    c.class, c.stored, c.active, c.due_now, next, c.kept
                );
            }
            if outputs.is_none() {
                println!("(outputs not listed: give --outputs or GANTRY_OUTPUTS)");
            }
            Ok(())
        }
        RetentionCommand::Sweep {
            redis,
            outputs,
            quarantine_store,
            dry_run,
        } => {
            let conn = redis.conn().await?;
            let outputs = store(outputs)?;
            let mut sweeper = Sweeper::new(policy, conn.clone(), outputs.clone());
            if let Some(o) = &outputs {
                sweeper = sweeper.with_vault(gantry_safety::Vault::open(conn, o, quarantine_store.as_deref())?);
            }
            let o = sweeper.sweep(dry_run).await?;
            println!(
                "{}outputs {} ({} bytes), audit entries {}, moderation index ids {}, evidence cases {}",
                if dry_run { "would remove: " } else { "removed: " },
                o.outputs,
                o.output_bytes,
                o.audit_entries,
                o.moderation_index,
                o.evidence
            );
            if !dry_run {
                let details = serde_json::to_value(&o)?;
                redis.audit("retention.sweep", "all", details).await?;
            }
            Ok(())
        }
    }
}
