//! `gantry users erase`: erasure on request from the command line, through the same audited
//! service as `DELETE /v1/users/{user_id}/data` (`gantry_scheduler::erasure::Eraser`).
//! `gantry users export`: a user's data to a local archive, written by the same code as the
//! `export` jobs of `POST /v1/users/{user_id}/exports` (`gantry_worker::executors::export`).

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
    /// Export a user's data (access and portability) to a local tar archive: every job of
    /// theirs the fleet holds (its request with its prompts opened — the data keys must be in
    /// the environment —, its released outputs, its store-held references), their pipelines,
    /// their trust standing and (with --moderation) moderation records, and a manifest of every
    /// file's size and SHA-256, last. Audited as users.export under the user's pseudonymous key.
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// The user's tenant.
    #[arg(long)]
    tenant: String,
    /// The user id, as the tenant submits it.
    #[arg(long)]
    user: String,
    /// The workers' output store (as their --outputs): a directory, file:///dir,
    /// s3://bucket[/prefix].
    #[arg(long, env = "GANTRY_OUTPUTS")]
    outputs: String,
    /// Leave the user's trust standing out.
    #[arg(long)]
    no_trust: bool,
    /// Include the moderation records about the user (the law may forbid telling a user
    /// about a report: check before you hand this archive over).
    #[arg(long)]
    moderation: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Where to write the archive (a new file).
    out: std::path::PathBuf,
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
        UsersCommand::Export(a) => export(a).await,
    }
}

async fn export(a: ExportArgs) -> anyhow::Result<()> {
    use gantry_worker::executors::export::ExportExecutor;
    if a.tenant.trim().is_empty() || a.user.trim().is_empty() {
        return Err(super::UsageError("--tenant and --user must not be empty".into()).into());
    }
    if a.out.exists() {
        return Err(super::UsageError(format!("{} exists: name a new file", a.out.display())).into());
    }
    let store = OutputStore::open(&a.outputs)
        .map_err(refused)?
        .with_keys(gantry_queue::seal::Keyring::from_env().map_err(refused)?);
    let retention = gantry_queue::RetentionPolicy::from_env().map_err(refused)?;
    let conn = a.redis.conn().await?;
    let executor = ExportExecutor::new(a.redis.client().await?, store, conn, &retention);
    let payload = gantry_queue::ExportPayload {
        request_id: String::new(),
        trust: !a.no_trust,
        moderation: a.moderation,
    };
    let export_id = gantry_queue::JobId::new().to_string();
    let summary = executor
        .write_archive(
            &a.tenant,
            &a.user,
            &export_id,
            &payload,
            &a.out,
            &gantry_queue::ProgressHandle::default(),
            None,
        )
        .await;
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&a.out);
            return Err(anyhow::anyhow!("the export failed: {e}"));
        }
    };
    a.redis
        .audit(
            "users.export",
            &format!("{}/{}", a.tenant, gantry_queue::user_key(&a.tenant, &a.user)),
            serde_json::json!({"export": export_id, "to": "cli", "jobs": summary.jobs,
                               "trust": payload.trust, "moderation": payload.moderation}),
        )
        .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "exported user {} of {} to {}: {} jobs, {} pipelines, {} outputs, {} references, {} files (manifest.json last)",
            a.user,
            a.tenant,
            a.out.display(),
            summary.jobs,
            summary.pipelines,
            summary.outputs,
            summary.references,
            summary.files
        );
    }
    Ok(())
}

async fn erase(a: EraseArgs) -> anyhow::Result<()> {
    let store = OutputStore::open(&a.outputs)
        .map_err(refused)?
        .with_keys(gantry_queue::seal::Keyring::from_env().map_err(refused)?);
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
