//! `gantry keys rotate`: re-seal stored job payloads with the current data key, and re-wrap the
//! sealed outputs' data keys with it (their content is not re-encrypted).

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Re-seal every stored job payload with the first key of GANTRY_DATA_KEYS (or
    /// GANTRY_DATA_KEYS_FILE), while the fleet runs: put the new key first, keep the old ones
    /// listed in every process, run this, then retire the old keys.
    Rotate {
        #[command(flatten)]
        redis: super::RedisArgs,
        /// Only this pool (default: every pool that has had a job or a worker).
        #[arg(long)]
        pool: Option<String>,
        /// The workers' output store (as their --outputs): its sealed outputs' data keys are
        /// re-wrapped with the current key too.
        #[arg(long, env = "GANTRY_OUTPUTS")]
        outputs: Option<String>,
    },
}

pub async fn run(c: KeysCommand) -> anyhow::Result<()> {
    let KeysCommand::Rotate { redis, pool, outputs } = c;
    let client = redis.client().await?;
    let Some(current) = client.keys().map(|k| k.current().to_owned()) else {
        return Err(super::UsageError("no data keys: set GANTRY_DATA_KEYS or GANTRY_DATA_KEYS_FILE".into()).into());
    };
    let mut total = gantry_queue::ResealReport::default();
    for p in super::pools_or_all(&client, pool.as_deref()).await? {
        let r = client.reseal(&p).await?;
        println!(
            "{p}: {} job records, {} resealed with {current}, {} unreadable with these keys",
            r.scanned, r.resealed, r.unreadable
        );
        total.scanned += r.scanned;
        total.resealed += r.resealed;
        total.unreadable += r.unreadable;
    }
    let mut details = serde_json::json!({
        "scanned": total.scanned, "resealed": total.resealed, "unreadable": total.unreadable,
    });
    if let Some(url) = outputs {
        let store = gantry_worker::outputs::OutputStore::open(&url)?.with_keys(client.keys().cloned());
        let (seen, rewrapped) = store.rewrap_keys().await?;
        println!("outputs: {seen} sealed outputs, {rewrapped} data keys re-wrapped with {current} (content untouched)");
        details["output_keys"] = seen.into();
        details["output_keys_rewrapped"] = rewrapped.into();
    }
    redis.audit("keys.rotate", &current, details).await
}
