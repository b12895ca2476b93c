//! Pipelines: a DAG of steps submitted in one request, each step a job that waits for the steps
//! it needs and takes their outputs (`${steps.<name>.output}`).
//!
//! - **Admission is for the whole pipeline**: every step is checked, routed, priced and placed
//!   (steps may run in different pools), then the tenant's rate is charged for every step and
//!   credits are reserved for every step at its worst case, all or none.
//! - **Storing it**: the pipeline's record first (`gantry:{pool}:pl:<id>` in its first step's
//!   pool, state `creating`), then the waiting steps, then the roots; then `created`. A step
//!   never runs before its parents are queued, so a pipeline that could not be stored whole is
//!   cancelled whole (every reservation refunded) and nothing of it has run.
//! - **Running it**: the queue does the rest (see `common.lua`): a step is queued in the call
//!   that records its last parent's success (same pool) or through the hand-off stream and the
//!   mover ([`crate::handoff`]) for another pool; a step whose parent fails is skipped, and so
//!   are its dependents, each refunded.
//! - **Status** is read from the steps' records: `failed` once a required step is dead or
//!   blocked (or cancelled on its own), `succeeded` when every step has ended otherwise,
//!   `cancelled` after a cancel, `running` until then.

pub mod spec;
mod sweep;

use std::collections::BTreeMap;
use std::sync::Arc;

use gantry_queue::{JobId, JobRecord, JobStatus, Payload, Pool, QueueClient, QueueError, StepLink};
use serde::{Deserialize, Serialize};

use crate::admission::credits::CreditEntry;
use crate::admission::{Admission, Planned};
use crate::auth::Caller;
use crate::config::SchedulerConfig;
use crate::problem::ApiError;
use spec::{PipelineError, PipelineSpec};

/// One step as the pipeline's record keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredStep {
    /// Its name.
    pub name: String,
    /// Its job.
    pub job_id: JobId,
    /// Its pool.
    pub pool: String,
    /// Its kind.
    pub kind: gantry_queue::JobKind,
    /// The steps it needs.
    pub needs: Vec<String>,
    /// Its failure does not fail the pipeline.
    pub continue_on_failure: bool,
    /// For a copy of a step that runs once per output of its parent: that step's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_of: Option<String>,
}

/// A created pipeline (`POST /v1/pipelines`).
#[derive(Clone, Debug, Serialize)]
pub struct Created {
    /// Its id.
    pub id: String,
    /// An earlier pipeline with the same idempotency key was returned instead.
    pub duplicate: bool,
    /// Credits reserved for all its steps by this request.
    pub credits_reserved: i64,
    /// Its steps, parents first.
    pub steps: Vec<CreatedStep>,
}

/// One step of a created pipeline.
#[derive(Clone, Debug, Serialize)]
pub struct CreatedStep {
    /// Its name.
    pub name: String,
    /// Its job.
    pub job_id: JobId,
    /// Its pool.
    pub pool: String,
    /// Credits reserved for it.
    pub credits_reserved: i64,
}

/// A pipeline's state as `GET /v1/pipelines/{id}` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PipelineView {
    /// Its id.
    pub id: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub status: &'static str,
    /// Created (Unix ms).
    pub created_at_ms: u64,
    /// Its steps, parents first.
    pub steps: Vec<StepView>,
    /// Credits over every step: reserved at admission, charged so far.
    pub credits: CreditTotals,
}

/// Credits over a pipeline's steps. Once every step has settled, reserved = charged +
/// refunded.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct CreditTotals {
    /// Reserved at admission.
    pub reserved: i64,
    /// Charged at settlement (so far).
    pub charged: i64,
    /// Given back at settlement (so far): a refunded step's whole reservation, a charged
    /// step's reservation less its charge.
    pub refunded: i64,
}

/// One step's state.
#[derive(Clone, Debug, Serialize)]
pub struct StepView {
    /// Its name.
    pub name: String,
    /// Its job (`GET /v1/jobs/{id}`).
    pub job_id: JobId,
    /// Its kind.
    pub kind: gantry_queue::JobKind,
    /// Its pool.
    pub pool: String,
    /// The steps it needs.
    pub needs: Vec<String>,
    /// Its failure does not fail the pipeline.
    pub continue_on_failure: bool,
    /// For a copy of a step that runs once per output of its parent: that step's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_of: Option<String>,
    /// Its job's status (`expired` once its record is gone).
    pub status: String,
    /// Attempts started.
    pub attempts: u32,
    /// Its output, once it succeeded.
    pub result: Option<gantry_queue::ResultRef>,
    /// Its last error (a skipped step's says which step it waited for).
    pub error: Option<gantry_queue::JobError>,
    /// What it is doing, while it runs.
    pub progress: Option<gantry_queue::Progress>,
    /// Its credits.
    pub credits: Option<CreditEntry>,
}

/// Pipelines over the queue and admission. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Pipelines {
    cfg: Arc<SchedulerConfig>,
    queue: QueueClient,
    admission: Admission,
    store: PipelineStore,
}

/// Stored pipelines: reading one (with its steps' states and credits) and cancelling one;
/// what the API and the CLI share.
#[derive(Clone, Debug)]
pub struct PipelineStore {
    queue: QueueClient,
    credits: crate::admission::credits::CreditLedger,
}

use gantry_queue::client::pipelines::fields as field;

fn record_key(pool: &Pool, id: &str) -> String {
    QueueClient::pipeline_key(pool, id)
}

fn idempotency_key(tenant: &str, key: &str) -> String {
    let digest = gantry_queue::keys::digest_hex(format!("{tenant}\0{key}").as_bytes());
    format!("gantry:{{pipelines}}:idem:{digest}")
}

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> Self {
        ApiError::InvalidPipeline {
            step: e.step,
            field: e.field,
            reason: e.reason,
        }
    }
}

impl Pipelines {
    /// Pipelines over `queue`, admitted by `admission`.
    pub fn new(cfg: Arc<SchedulerConfig>, queue: QueueClient, admission: Admission) -> Self {
        Self {
            store: PipelineStore::new(queue.clone()),
            cfg,
            queue,
            admission,
        }
    }

    /// A pipeline and every step's state; `tenant` (absent: an operator) must own it.
    pub async fn get(&self, tenant: Option<&str>, id: &str) -> Result<PipelineView, ApiError> {
        self.store.get(tenant, id).await
    }

    /// Cancels a pipeline: every step that has not ended. Returns how many steps were told.
    pub async fn cancel(&self, tenant: Option<&str>, id: &str) -> Result<usize, ApiError> {
        self.store.cancel(tenant, id).await
    }

    /// The stored pipelines (reading, cancelling).
    pub fn store(&self) -> &PipelineStore {
        &self.store
    }

    /// Admits and stores a pipeline for `caller` (see the module docs). With an idempotency
    /// key, a repeat returns the first pipeline.
    pub async fn create(
        &self,
        caller: &Caller,
        body: serde_json::Value,
        idempotency: Option<&str>,
    ) -> Result<Created, ApiError> {
        let spec = PipelineSpec::parse(body)?;
        let tenant_cfg = self.cfg.tenants.get(&caller.tenant).ok_or(ApiError::Unauthenticated)?;
        let idem = idempotency.map(|k| idempotency_key(&caller.tenant, k));
        if let Some(key) = &idem {
            let mut c = self.queue.connection();
            let ttl = self.queue.config().idempotency_ttl.as_secs().max(1);
            let claimed: bool = redis::cmd("SET")
                .arg(key)
                .arg("")
                .arg("NX")
                .arg("EX")
                .arg(ttl)
                .query_async::<Option<String>>(&mut c)
                .await
                .map_err(QueueError::from)?
                .is_some();
            if !claimed {
                let first: Option<String> = redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut c)
                    .await
                    .map_err(QueueError::from)?;
                return match first.filter(|f| !f.is_empty()) {
                    Some(id) => {
                        let view = self.store.get(Some(&caller.tenant), &id).await?;
                        Ok(Created {
                            id,
                            duplicate: true,
                            credits_reserved: 0,
                            steps: view
                                .steps
                                .into_iter()
                                .map(|s| CreatedStep {
                                    name: s.name,
                                    job_id: s.job_id,
                                    pool: s.pool,
                                    credits_reserved: 0,
                                })
                                .collect(),
                        })
                    }
                    None => Err(ApiError::Conflict(
                        "a pipeline with this idempotency key is being created; retry".into(),
                    )),
                };
            }
        }
        let created = self.admit_and_store(caller, tenant_cfg, spec).await;
        if let Some(key) = &idem {
            let mut c = self.queue.connection();
            let r: Result<(), redis::RedisError> = match &created {
                Ok(p) => {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(&p.id)
                        .arg("XX")
                        .arg("KEEPTTL")
                        .query_async(&mut c)
                        .await
                }
                Err(_) => redis::cmd("DEL").arg(key).query_async(&mut c).await,
            };
            if let Err(e) = r {
                tracing::warn!(error = %e, "recording a pipeline's idempotency key failed");
            }
        }
        created
    }

    async fn admit_and_store(
        &self,
        caller: &Caller,
        tenant_cfg: &crate::config::TenantConfig,
        spec: PipelineSpec,
    ) -> Result<Created, ApiError> {
        // Every step planned (checked, routed, priced and placed), parents first, so that a
        // step that fans out knows how many outputs its parent makes.
        let mut steps: Vec<spec::StepSpec> = Vec::with_capacity(spec.steps.len());
        let mut planned: Vec<Planned> = Vec::with_capacity(spec.steps.len());
        let mut bodies: BTreeMap<String, (Payload, bool)> = BTreeMap::new();
        let mut fanned: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut names: std::collections::BTreeSet<String> = spec.steps.iter().map(|s| s.name.clone()).collect();
        for s in spec.steps {
            let (original, fans) = (s.name.clone(), s.for_each.is_some());
            let copies = spec::expand(s, &fanned, |parent| {
                bodies
                    .get(parent)
                    .map(|(b, _)| spec::for_each_outputs(b))
                    .unwrap_or_default()
            })?;
            if fans {
                fanned.insert(original.clone(), copies.iter().map(|c| c.name.clone()).collect());
            }
            for c in copies {
                if c.copy_of.is_some() && !names.insert(c.name.clone()) {
                    return Err(PipelineError {
                        step: Some(original),
                        field: "for_each".into(),
                        reason: format!("its copy {} has the name of another step", c.name),
                    }
                    .into());
                }
                if steps.len() == spec::MAX_STEPS {
                    return Err(PipelineError {
                        step: Some(original),
                        field: "for_each".into(),
                        reason: format!("a pipeline runs at most {} steps, copies included", spec::MAX_STEPS),
                    }
                    .into());
                }
                let name = c.name.clone();
                let at = move |m: String| format!("step {name}: {m}");
                let p = self.admission.plan(caller, tenant_cfg, c.job.clone(), None, &at)?;
                self.admission.check(&p, &at)?;
                bodies.insert(c.name.clone(), (p.job.body.clone(), self.makes_video(&p.job.body)));
                steps.push(c);
                planned.push(p);
            }
        }
        spec::check_types(&steps, &bodies)?;
        // The links: who waits for whom.
        let pipeline_id = JobId::new().to_string();
        let by_name: BTreeMap<&str, (JobId, &str)> = steps
            .iter()
            .zip(&planned)
            .map(|(s, p)| (s.name.as_str(), (p.id, p.pool.as_str())))
            .collect();
        let mut links = Vec::with_capacity(planned.len());
        for s in &steps {
            let mut kids = Vec::new();
            for k in steps.iter().filter(|k| k.needs.contains(&s.name)) {
                let (id, pool) = by_name[k.name.as_str()];
                kids.push((Pool::new(pool)?, id));
            }
            links.push(StepLink {
                pipeline: pipeline_id.clone(),
                step: s.name.clone(),
                need: s.needs.len() as u32,
                kids,
                optional: s.optional,
            });
        }
        for (p, link) in planned.iter_mut().zip(links) {
            p.step = Some(link);
        }
        self.admission.reserve(caller, tenant_cfg, &planned).await?;
        let stored: Vec<StoredStep> = steps
            .iter()
            .zip(&planned)
            .map(|(s, p)| StoredStep {
                name: s.name.clone(),
                job_id: p.id,
                pool: p.pool.clone(),
                kind: p.job.kind(),
                needs: s.needs.clone(),
                continue_on_failure: s.optional,
                copy_of: s.copy_of.clone(),
            })
            .collect();
        let home = Pool::new(&planned[0].pool)?;
        let user_key = gantry_queue::user_key(&caller.tenant, &planned[0].job.user);
        self.write_record(&home, &pipeline_id, &caller.tenant, &user_key, &stored)
            .await?;
        let created: Vec<CreatedStep> = stored
            .iter()
            .zip(&planned)
            .map(|(s, p)| CreatedStep {
                name: s.name.clone(),
                job_id: s.job_id,
                pool: s.pool.clone(),
                credits_reserved: p.price,
            })
            .collect();
        // Waiting steps first, the roots last: nothing runs before the whole is stored.
        let (waiting, roots): (Vec<Planned>, Vec<Planned>) = planned
            .into_iter()
            .partition(|p| p.step.as_ref().is_some_and(|l| l.need > 0));
        let mut stored_ok = true;
        for (i, phase) in [waiting, roots].into_iter().enumerate() {
            if phase.is_empty() {
                continue;
            }
            #[cfg(debug_assertions)]
            if i == 1 && std::env::var_os("GANTRY_TEST_ABORT_CREATING_PIPELINE").is_some() {
                // The crash tests' fault point (debug builds only): die with the waiting steps
                // queued and the roots not, so only the sweep can finish the pipeline.
                tracing::error!("GANTRY_TEST_ABORT_CREATING_PIPELINE: aborting before queueing a pipeline's roots");
                std::process::abort();
            }
            let _ = i;
            if let Err(e) = self.admission.enqueue(&caller.tenant, tenant_cfg, phase).await {
                tracing::warn!(pipeline = %pipeline_id, error = %e, "a pipeline could not be stored whole; cancelling it");
                stored_ok = false;
                break;
            }
        }
        if !stored_ok {
            // The steps never queued are refunded here (the phase that failed refunded its own).
            self.store
                .set_state(&home, &pipeline_id, "cancelled", Some("creating"))
                .await?;
            self.store.cancel_unfinished(&caller.tenant, &stored).await;
            return Err(ApiError::Unavailable);
        }
        if !self
            .store
            .set_state(&home, &pipeline_id, "created", Some("creating"))
            .await?
        {
            // Stalled past `pipeline_stuck_secs`: a sweep cancelled it whole meanwhile.
            return Err(ApiError::Unavailable);
        }
        tracing::info!(pipeline = %pipeline_id, steps = created.len(), "pipeline admitted");
        Ok(Created {
            id: pipeline_id,
            duplicate: false,
            credits_reserved: created.iter().map(|s| s.credits_reserved).sum(),
            steps: created,
        })
    }

    /// Whether a generate payload's (routed) model makes video.
    fn makes_video(&self, body: &Payload) -> bool {
        let Payload::Generate(g) = body else { return false };
        self.cfg
            .providers
            .get(&g.provider)
            .and_then(|p| p.models.get(&g.model))
            .is_some_and(|m| m.class == "video")
    }

    async fn write_record(
        &self,
        pool: &Pool,
        id: &str,
        tenant: &str,
        user_key: &str,
        steps: &[StoredStep],
    ) -> Result<(), ApiError> {
        let json = serde_json::to_string(steps).map_err(|_| ApiError::Internal)?;
        self.queue.store_pipeline(pool, id, tenant, user_key, &json).await?;
        Ok(())
    }
}

impl PipelineStore {
    /// Stored pipelines in `queue`'s Redis.
    pub fn new(queue: QueueClient) -> Self {
        Self {
            credits: crate::admission::credits::CreditLedger::new(queue.connection()),
            queue,
        }
    }

    /// Cancels every step that has not ended (waiting and queued ones at once, running ones at
    /// their next heartbeat); steps already gone or finished are left as they are.
    async fn cancel_steps(&self, steps: &[StoredStep]) -> usize {
        let mut n = 0;
        for s in steps {
            match self.queue.cancel(s.job_id).await {
                Ok(_) => n += 1,
                Err(QueueError::NotFound(_) | QueueError::AlreadyFinished { .. }) => {}
                Err(e) => tracing::warn!(error = %e, job_id = %s.job_id, "cancelling a pipeline step failed"),
            }
        }
        n
    }

    /// Finds a pipeline's record: its key and fields.
    async fn find(&self, id: &str) -> Result<(Pool, BTreeMap<String, String>), ApiError> {
        if id.parse::<JobId>().is_err() {
            return Err(ApiError::NotFound);
        }
        let mut c = self.queue.connection();
        for pool in self.queue.pools().await? {
            let key = record_key(&pool, id);
            let h: BTreeMap<String, String> = redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut c)
                .await
                .map_err(QueueError::from)?;
            if !h.is_empty() {
                return Ok((pool, h));
            }
        }
        Err(ApiError::NotFound)
    }

    async fn load(
        &self,
        tenant: Option<&str>,
        id: &str,
    ) -> Result<(Pool, BTreeMap<String, String>, Vec<StoredStep>), ApiError> {
        let (pool, h) = self.find(id).await?;
        let owner = h.get(field::TENANT).map(String::as_str).unwrap_or_default();
        if tenant.is_some_and(|t| t != owner) {
            return Err(ApiError::NotFound);
        }
        let steps: Vec<StoredStep> = h
            .get(field::STEPS)
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or(ApiError::Internal)?;
        Ok((pool, h, steps))
    }

    /// A pipeline's steps as stored; `tenant` (absent: an operator) must own it.
    pub async fn steps(&self, tenant: Option<&str>, id: &str) -> Result<Vec<StoredStep>, ApiError> {
        Ok(self.load(tenant, id).await?.2)
    }

    /// A pipeline and every step's state; `tenant` (absent: an operator) must own it.
    pub async fn get(&self, tenant: Option<&str>, id: &str) -> Result<PipelineView, ApiError> {
        let (_, h, steps) = self.load(tenant, id).await?;
        let owner = h.get(field::TENANT).cloned().unwrap_or_default();
        let mut views = Vec::with_capacity(steps.len());
        let mut credits = CreditTotals::default();
        for s in steps {
            let record: Option<JobRecord> = match Pool::new(&s.pool) {
                Ok(p) => match self.queue.job_in(&p, s.job_id).await {
                    Ok(r) => Some(r),
                    Err(QueueError::NotFound(_)) => None,
                    Err(e) => return Err(e.into()),
                },
                Err(_) => None,
            };
            let entry = self.credits.entry(&owner, s.job_id).await?;
            if let Some(e) = &entry {
                credits.reserved += e.reserved;
                credits.charged += e.charged;
                // Settled: what was not charged went back (all of it, for a refund).
                if e.state != "reserved" {
                    credits.refunded += e.reserved - e.charged;
                }
            }
            views.push(StepView {
                status: record
                    .as_ref()
                    .map_or("expired".to_owned(), |r| r.status.as_str().to_owned()),
                attempts: record.as_ref().map_or(0, |r| r.attempts),
                result: record.as_ref().and_then(|r| r.result.clone()),
                error: record.as_ref().and_then(|r| r.error.clone()),
                progress: record
                    .as_ref()
                    .filter(|r| r.status == JobStatus::Running)
                    .and_then(|r| r.progress),
                credits: entry,
                name: s.name,
                job_id: s.job_id,
                kind: s.kind,
                pool: s.pool,
                needs: s.needs,
                continue_on_failure: s.continue_on_failure,
                copy_of: s.copy_of,
            });
        }
        let state = h.get(field::STATE).map(String::as_str).unwrap_or_default();
        Ok(PipelineView {
            id: id.to_owned(),
            status: status_of(state, &views),
            created_at_ms: h.get(field::CREATED).and_then(|v| v.parse().ok()).unwrap_or(0),
            steps: views,
            credits,
        })
    }

    /// Cancels a pipeline: every step that has not ended. Returns how many steps were told.
    pub async fn cancel(&self, tenant: Option<&str>, id: &str) -> Result<usize, ApiError> {
        let (pool, h, steps) = self.load(tenant, id).await?;
        if h.get(field::STATE).is_some_and(|s| s == "creating") {
            return Err(ApiError::Conflict("the pipeline is still being created; retry".into()));
        }
        self.set_state(&pool, id, "cancelled", None).await?;
        Ok(self.cancel_steps(&steps).await)
    }
}

/// The pipeline's status from its record's state and its steps' (see the module docs).
fn status_of(state: &str, steps: &[StepView]) -> &'static str {
    if state == "cancelled" {
        return "cancelled";
    }
    let failed = steps.iter().any(|s| {
        !s.continue_on_failure
            && match s.status.as_str() {
                "dead" | "blocked" => true,
                // A step cancelled on its own (not skipped for a parent) fails its pipeline.
                "cancelled" => !s.error.as_ref().is_some_and(|e| e.message.starts_with("skipped:")),
                _ => false,
            }
    });
    if failed {
        return "failed";
    }
    let failed_step = |name: &str| {
        steps
            .iter()
            .any(|p| p.name == name && matches!(p.status.as_str(), "dead" | "blocked" | "cancelled"))
    };
    // A skipped step has ended while a step it needs has failed; once that one is replayed,
    // the skipped step is about to wait again.
    let ended = |s: &StepView| match s.status.as_str() {
        "succeeded" | "dead" | "blocked" | "expired" => true,
        "cancelled" => {
            let skipped = s.error.as_ref().is_some_and(|e| e.message.starts_with("skipped:"));
            !skipped || s.needs.iter().any(|n| failed_step(n))
        }
        _ => false,
    };
    if state == "created" && steps.iter().all(ended) {
        "succeeded"
    } else {
        "running"
    }
}
