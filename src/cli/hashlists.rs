//! `gantry hashlists`: load, list and remove the abuse hash lists every worker matches against.

use std::path::PathBuf;

use anyhow::Context;
use gantry_safety::{HashList, HashListStore};

#[derive(Debug, clap::Subcommand)]
pub enum HashListsCommand {
    /// Publish FILE as the next version of list NAME (one entry per line: `pdq:HEX`,
    /// `md5:HEX`, `sha256:HEX`, or bare PDQ hex; `#` comments). A bad line refuses the whole
    /// file, with its line number; the current version stays in force.
    Load {
        #[command(flatten)]
        redis: super::RedisArgs,
        /// List name (A-Z, a-z, 0-9, '.', '-', '_').
        name: String,
        /// The file.
        file: PathBuf,
        /// Violation category recorded with its matches (`csam`, `ncii`, `terror`…).
        #[arg(long, default_value = "csam")]
        category: String,
        /// PDQ matches this close or closer are acted on at once.
        #[arg(long, default_value_t = gantry_safety::hashlists::MAX_DISTANCE)]
        block_distance: u32,
        /// PDQ matches farther than --block-distance and this close or closer are withheld for
        /// review (default 31: whatever the block distance, nothing within 31 passes unseen).
        #[arg(long)]
        review_distance: Option<u32>,
    },
    /// Every list's current version and counts.
    List {
        #[command(flatten)]
        redis: super::RedisArgs,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a list: it stops matching at once.
    Remove {
        #[command(flatten)]
        redis: super::RedisArgs,
        /// List name.
        name: String,
    },
}

async fn store(redis: &super::RedisArgs) -> anyhow::Result<HashListStore> {
    Ok(HashListStore::new(redis.conn().await?))
}

pub async fn run(c: HashListsCommand) -> anyhow::Result<()> {
    match c {
        HashListsCommand::Load {
            redis,
            name,
            file,
            category,
            block_distance,
            review_distance,
        } => {
            let thresholds = gantry_safety::hashlists::Thresholds::new(
                block_distance,
                review_distance.unwrap_or(gantry_safety::hashlists::MAX_DISTANCE),
            )
            .map_err(|e| super::UsageError(e.to_string()))?;
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let list = HashList::parse(&text).map_err(|e| super::UsageError(format!("{}: {e}", file.display())))?;
            let m = store(&redis)
                .await?
                .publish_with(&name, &category, thresholds, &list)
                .await
                .map_err(|e| match e {
                    gantry_safety::SafetyError::InvalidName(_) => super::UsageError(e.to_string()).into(),
                    other => anyhow::Error::from(other),
                })?;
            let details = serde_json::json!({
                "version": m.version, "category": m.category, "pdq": m.pdq, "md5": m.md5, "sha256": m.sha256,
                "block_distance": m.block_distance, "review_distance": m.review_distance,
            });
            redis.audit("hashlist.publish", &m.name, details).await?;
            println!(
                "{} v{} ({}): {} PDQ, {} MD5, {} SHA-256",
                m.name, m.version, m.category, m.pdq, m.md5, m.sha256
            );
        }
        HashListsCommand::List { redis, json } => {
            let lists = store(&redis).await?.lists().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&lists)?);
            } else {
                println!(
                    "{:<24} {:>7} {:<10} {:>10} {:>8} {:>8}",
                    "NAME", "VERSION", "CATEGORY", "PDQ", "MD5", "SHA256"
                );
                for m in lists {
                    println!(
                        "{:<24} {:>7} {:<10} {:>10} {:>8} {:>8}",
                        m.name, m.version, m.category, m.pdq, m.md5, m.sha256
                    );
                }
            }
        }
        HashListsCommand::Remove { redis, name } => {
            if !store(&redis).await?.remove(&name).await? {
                return Err(super::UsageError(format!("no hash list named {name:?}")).into());
            }
            redis.audit("hashlist.remove", &name, serde_json::Value::Null).await?;
            println!("{name} removed");
        }
    }
    Ok(())
}
