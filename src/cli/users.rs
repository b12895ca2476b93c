//! `gantry users erase`: erasure on request from the command line, through the same audited
//! service as `DELETE /v1/users/{user_id}/data` (`gantry_scheduler::erasure::Eraser`).

use std::time::Duration;

use gantry_scheduler::erasure::{Eraser, ErasureError};
use gantry_worker::outputs::OutputStore;

use super::{RedisArgs, refused};

#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Erase a user's data (GDPR Art. 17, CCPA): their jobs in every pool (waiting ones
    /// cancelled and refunded, running ones stopped), dead letters, idempotency keys and every
    /// output; moderation records and trust standing are kept. Idempotent; audited as
    /// users.erase under the user's pseudonymous key.
    Erase(EraseArgs),
}

#[derive(Debug, clap::Args)]
pub struct EraseArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// The user's tenant.
    #[arg(long)]
    tenant: String,
    /// The workers' output store (as their --outputs): a directory, file:///dir,
    /// s3://bucket[/prefix].
    #[arg(long, env = "GANTRY_OUTPUTS")]
    outputs: String,
    /// How long to wait for the user's running jobs to stop before reporting "pending".
    #[arg(long, default_value_t = 30)]
    wait_secs: u64,
    /// Print the receipt as JSON.
    #[arg(long)]
    json: bool,
    /// The user id, as the tenant submits it.
    user: String,
}

pub async fn run(c: UsersCommand) -> anyhow::Result<()> {
    match c {
        UsersCommand::Erase(a) => erase(a).await,
    }
}

async fn erase(a: EraseArgs) -> anyhow::Result<()> {
    let store = OutputStore::open(&a.outputs).map_err(refused)?;
    let eraser = Eraser::new(
        a.redis.client().await?,
        store,
        a.redis.audit_log().await?,
        Duration::from_secs(a.wait_secs),
    );
    let receipt = match eraser.erase(&super::cli_actor(), &a.tenant, &a.user).await {
        Ok(r) => r,
        Err(e @ ErasureError::InvalidUser) => return Err(refused(e).into()),
        Err(e) => return Err(e.into()),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&receipt)?);
    } else {
        let j = &receipt.jobs;
        println!(
            "erased user {} of {} (key {}): {} job records deleted, {} cancelled, {} dead letters, {} outputs deleted",
            a.user, receipt.tenant, receipt.user_key, j.deleted, j.cancelled, j.dead_letters, receipt.outputs_deleted
        );
        if receipt.complete {
            println!("complete; kept: moderation records (no prompt text) and trust standing");
        } else {
            println!(
                "pending: {} running job(s) had not stopped within {} s; run the same command again",
                j.running, a.wait_secs
            );
        }
    }
    Ok(())
}
