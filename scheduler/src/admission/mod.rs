//! Admission: every check a job passes before it is queued, fleet-wide through Redis. In order:
//! the job parses and validates; its user is not blocked; residency picks an allowed provider;
//! the price is estimated; a pool that can run it is chosen; the tenant's rate allows it; its
//! credits are reserved (all of a batch or none); then it is enqueued with the id the
//! reservation was made under. A job that turns out to be a duplicate (idempotency key) gets its
//! provisional reservation back; a batch the queue refuses gets all of them back.

pub mod credits;
pub mod pricing;
pub mod rate_limit;
pub mod residency;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gantry_queue::{Accounting, JobId, NewJob, Pool, QueueClient};
use tracing::Instrument as _;

use crate::auth::Caller;
use crate::config::{SchedulerConfig, TenantConfig};
use crate::placement::{PoolLoads, place};
use crate::problem::ApiError;
use credits::{CreditLedger, Reservation};
use gantry_safety::TrustRegistry;
pub use gantry_safety::trust;
use rate_limit::{RateDecision, RateLimiter};
use residency::{RouteError, route_payload};

/// One admitted job.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Admitted {
    /// Its id (the first job's, for a duplicate).
    pub id: JobId,
    /// The pool it was queued on.
    pub pool: String,
    /// Credits reserved for it by this request (0 for a duplicate).
    pub credits_reserved: i64,
    /// An earlier job with the same idempotency key was returned instead.
    pub duplicate: bool,
    /// The provider and model it will run on, for generate jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// See `provider`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// The admission pipeline. See the module docs.
#[derive(Clone, Debug)]
pub struct Admission {
    cfg: Arc<SchedulerConfig>,
    queue: QueueClient,
    /// The credit ledger.
    pub credits: CreditLedger,
    /// Rate limits.
    pub limiter: RateLimiter,
    /// User trust.
    pub trust: TrustRegistry,
    loads: PoolLoads,
}

/// A job admission has checked, priced and placed, not yet queued.
pub(crate) struct Planned {
    /// The id its reservation is made under.
    pub(crate) id: JobId,
    /// The job.
    pub(crate) job: NewJob,
    /// Its pool.
    pub(crate) pool: String,
    /// Credits reserved for it.
    pub(crate) price: i64,
    rule: pricing::PriceRule,
    /// Its place in a pipeline.
    pub(crate) step: Option<gantry_queue::StepLink>,
}

impl Planned {
    /// `job`, placed in `pool` and priced by `rule`, under a fresh id.
    fn new(job: NewJob, pool: String, rule: pricing::PriceRule) -> Self {
        Self {
            id: JobId::new(),
            job,
            pool,
            price: rule.estimate(),
            rule,
            step: None,
        }
    }
}

impl Admission {
    /// Admission over `queue`'s Redis.
    pub fn new(cfg: Arc<SchedulerConfig>, queue: QueueClient, loads: PoolLoads) -> Self {
        let conn = queue.connection();
        Self {
            cfg,
            credits: CreditLedger::new(conn.clone()),
            limiter: RateLimiter::new(conn.clone()),
            trust: TrustRegistry::new(conn),
            queue,
            loads,
        }
    }

    /// Admits `bodies` (JSON job requests) for `caller`, all or none, in an `admission` span
    /// (the tenant and the count, nothing from the bodies).
    pub async fn admit(
        &self,
        caller: &Caller,
        bodies: Vec<serde_json::Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Vec<Admitted>, ApiError> {
        let span = tracing::info_span!("admission", tenant = %caller.tenant, jobs = bodies.len());
        self.admit_in_span(caller, bodies, idempotency_key)
            .instrument(span)
            .await
    }

    async fn admit_in_span(
        &self,
        caller: &Caller,
        bodies: Vec<serde_json::Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Vec<Admitted>, ApiError> {
        let tenant_cfg = self.cfg.tenants.get(&caller.tenant).ok_or(ApiError::Unauthenticated)?;
        let mut planned = Vec::with_capacity(bodies.len());
        let n = bodies.len();
        for (i, body) in bodies.into_iter().enumerate() {
            let at = |m: String| if n == 1 { m } else { format!("jobs[{i}]: {m}") };
            planned.push(self.plan(caller, tenant_cfg, body, idempotency_key, &at)?);
        }
        self.reserve(caller, tenant_cfg, &planned).await?;
        self.enqueue(&caller.tenant, tenant_cfg, planned).await
    }

    /// Plans one job: parses and validates it, routes it to an allowed provider, prices it and
    /// picks its pool. `at` puts a refusal in context (`jobs[3]: …`, `step image: …`).
    pub(crate) fn plan(
        &self,
        caller: &Caller,
        tenant_cfg: &TenantConfig,
        body: serde_json::Value,
        idempotency_key: Option<&str>,
        at: &dyn Fn(String) -> String,
    ) -> Result<Planned, ApiError> {
        let mut job = self.parse(caller, body, idempotency_key).map_err(|e| match e {
            ApiError::InvalidRequest(m) => ApiError::InvalidRequest(at(m)),
            other => other,
        })?;
        if matches!(job.body, gantry_queue::Payload::Export(_)) {
            return Err(ApiError::InvalidRequest(at(
                "kind export is not submitted as a job: POST /v1/users/{user_id}/exports starts one".into(),
            )));
        }
        if let gantry_queue::Payload::Noop(n) = &job.body
            && n.report_usage.is_some()
            && !(tenant_cfg.operator || tenant_cfg.synthetic_usage)
        {
            return Err(ApiError::Forbidden(
                "payload.report_usage is for operators' drills: this tenant's configuration does not allow synthetic usage",
            ));
        }
        route_payload(&self.cfg, &mut job.body, &job.allowed_regions).map_err(|e| match e {
            RouteError::UnknownModel { .. } => ApiError::UnknownModel(at(e.to_string())),
            RouteError::NoAllowedProvider { .. } => ApiError::NoAllowedProvider(at(e.to_string())),
        })?;
        let rule = pricing::quote(&self.cfg, &job.body).map_err(|e| match e {
            pricing::QuoteError::UnknownModel => ApiError::UnknownModel(at(e.to_string())),
            pricing::QuoteError::Shape(_) => ApiError::Unprocessable(at(e.to_string())),
        })?;
        let pool = place(&self.cfg, &self.loads, job.kind(), &job.requirements)
            .map_err(|e| ApiError::Unplaceable(at(e.to_string())))?;
        Ok(Planned::new(job, pool, rule))
    }

    /// Admits an export of `user`'s data (of `tenant`) as a job of its own: free, on the
    /// tenant's rate like any request, and *not* refused for the user's trust standing — a
    /// blocked user is still owed a copy of their data.
    pub(crate) async fn admit_export(
        &self,
        tenant: &str,
        user: &str,
        payload: gantry_queue::ExportPayload,
    ) -> Result<Admitted, ApiError> {
        let tenant_cfg = self.cfg.tenants.get(tenant).ok_or(ApiError::NotFound)?;
        let job = NewJob {
            max_attempts: Some(3),
            ..NewJob::new(tenant, user, gantry_queue::Payload::Export(payload))
        };
        job.body.check()?;
        let rule = pricing::quote(&self.cfg, &job.body).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
        let pool = place(&self.cfg, &self.loads, job.kind(), &job.requirements)
            .map_err(|e| ApiError::Unplaceable(e.to_string()))?;
        let planned = [Planned::new(job, pool, rule)];
        self.rate_and_credits(tenant, tenant_cfg, &planned).await?;
        // Its archive holds outputs already released and references the tenant supplied:
        // nothing in it is scanned again, and the job says so.
        let unscanned = TenantConfig {
            scan_outputs: false,
            ..tenant_cfg.clone()
        };
        self.enqueue(tenant, &unscanned, planned.into())
            .await?
            .pop()
            .ok_or(ApiError::Internal)
    }

    /// Refuses now what the queue would refuse when `p` is enqueued: for groups whose jobs are
    /// stored in several calls (a pipeline's steps), where nothing may be stored unless all can.
    pub(crate) fn check(&self, p: &Planned, at: &dyn Fn(String) -> String) -> Result<(), ApiError> {
        let pool = Pool::new(&p.pool).map_err(|e| ApiError::InvalidRequest(at(e.to_string())))?;
        self.queue.check(&pool, &p.job).map_err(|e| match ApiError::from(e) {
            ApiError::InvalidRequest(m) => ApiError::InvalidRequest(at(m)),
            other => other,
        })
    }

    /// The checks that admit planned jobs together: no user of theirs is blocked, the tenant's
    /// rate allows them all, and their credits are reserved (all or none).
    pub(crate) async fn reserve(
        &self,
        caller: &Caller,
        tenant_cfg: &TenantConfig,
        planned: &[Planned],
    ) -> Result<(), ApiError> {
        let users: BTreeSet<&str> = planned.iter().map(|p| p.job.user.as_str()).collect();
        for user in users {
            let t = self.trust.status(&caller.tenant, user).await?;
            if t.blocked || t.score < self.cfg.min_trust_score {
                return Err(ApiError::UserBlocked);
            }
        }
        self.rate_and_credits(&caller.tenant, tenant_cfg, planned).await
    }

    /// The tenant's rate allows `planned` all, and their credits are reserved (all or none).
    async fn rate_and_credits(
        &self,
        tenant: &str,
        tenant_cfg: &TenantConfig,
        planned: &[Planned],
    ) -> Result<(), ApiError> {
        let plan = self.cfg.plans.get(&tenant_cfg.plan).ok_or(ApiError::Internal)?;
        match self.limiter.take(tenant, plan, planned.len() as u32).await? {
            RateDecision::Allowed => {}
            RateDecision::RetryAfter(d) => return Err(ApiError::RateLimited(d)),
            RateDecision::ExceedsBurst => return Err(ApiError::BatchExceedsBurst),
        }
        let reservations: Vec<(JobId, i64)> = planned.iter().map(|p| (p.id, p.price)).collect();
        match self
            .credits
            .reserve(tenant, tenant_cfg.initial_credits, &reservations)
            .await?
        {
            Reservation::Reserved { .. } => Ok(()),
            Reservation::Insufficient { balance, needed } => Err(ApiError::InsufficientCredits { balance, needed }),
        }
    }

    fn parse(&self, caller: &Caller, body: serde_json::Value, idem: Option<&str>) -> Result<NewJob, ApiError> {
        let serde_json::Value::Object(mut obj) = body else {
            return Err(ApiError::InvalidRequest("a job must be a JSON object".into()));
        };
        if obj.contains_key("tenant") {
            return Err(ApiError::InvalidRequest(
                "tenant comes from the API key; remove the field".into(),
            ));
        }
        objects_where_objects_go(&obj)?;
        obj.insert("tenant".into(), caller.tenant.clone().into());
        if let Some(k) = idem {
            match obj.get("idempotency_key") {
                Some(v) if v.as_str() != Some(k) => {
                    return Err(ApiError::Unprocessable(
                        "Idempotency-Key header and idempotency_key field differ".into(),
                    ));
                }
                _ => {
                    obj.insert("idempotency_key".into(), k.into());
                }
            }
        }
        let bytes = serde_json::to_vec(&obj).map_err(|_| ApiError::Internal)?;
        let job = NewJob::from_json(&bytes).map_err(|e| match ApiError::from(e) {
            ApiError::MalformedJson(m) => ApiError::InvalidRequest(m),
            other => other,
        })?;
        job.body.check()?;
        Ok(job)
    }

    /// Enqueues planned (and reserved) jobs, one batch per pool; gives back the reservations of
    /// jobs that were not queued or were duplicates.
    pub(crate) async fn enqueue(
        &self,
        tenant: &str,
        tenant_cfg: &TenantConfig,
        planned: Vec<Planned>,
    ) -> Result<Vec<Admitted>, ApiError> {
        let mut order = Vec::with_capacity(planned.len());
        let mut by_pool: BTreeMap<String, Vec<(JobId, NewJob, Accounting)>> = BTreeMap::new();
        let mut meta = BTreeMap::new();
        for p in planned {
            order.push(p.id);
            let (provider, model) = match &p.job.body {
                gantry_queue::Payload::Generate(g) => (Some(g.provider.clone()), Some(g.model.clone())),
                _ => (None, None),
            };
            meta.insert(p.id, (p.pool.clone(), p.price, provider, model));
            let acct = Accounting {
                weight: tenant_cfg.weight,
                scan_outputs: tenant_cfg.scan_outputs,
                events: tenant_cfg.events,
                credits_reserved: p.price,
                price_rule: serde_json::to_string(&pricing::LockedPrice {
                    rule: p.rule,
                    labels: pricing::CreditLabels::of(&p.job.body, &tenant_cfg.plan),
                })
                .map_err(|_| ApiError::Internal)?,
                traceparent: None,
                step: p.step,
            };
            by_pool.entry(p.pool).or_default().push((p.id, p.job, acct));
        }
        let mut result = BTreeMap::new();
        let mut failed = None;
        for (pool, mut jobs) in by_pool {
            let ids: Vec<JobId> = jobs.iter().map(|(id, ..)| *id).collect();
            // The jobs carry this span's trace context: their workers' spans continue it.
            let span = tracing::info_span!("enqueue", pool = %pool, jobs = jobs.len());
            let traceparent = gantry_queue::trace::traceparent(&span);
            for (_, _, acct) in &mut jobs {
                acct.traceparent.clone_from(&traceparent);
            }
            let enqueued = match Pool::new(&pool) {
                Ok(p) => self.queue.enqueue_batch_with_ids(&p, jobs).instrument(span).await,
                Err(e) => Err(e.into()),
            };
            match enqueued {
                Ok(e) => {
                    for (ours, got) in ids.into_iter().zip(e) {
                        result.insert(ours, got);
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        // Give back what was reserved for jobs that were not queued, or were duplicates.
        for id in &order {
            let keep = result.get(id).is_some_and(|e| e.id == *id && !e.duplicate);
            if !keep && let Err(e) = self.credits.refund(tenant, *id).await {
                tracing::error!(error = %e, job_id = %id, "refunding a reservation failed");
            }
        }
        if let Some(e) = failed {
            return Err(e.into());
        }
        Ok(order
            .into_iter()
            .filter_map(|id| {
                let e = result.get(&id)?;
                let (pool, price, provider, model) = meta.remove(&id)?;
                let fresh = e.id == id && !e.duplicate;
                Some(Admitted {
                    id: e.id,
                    pool,
                    credits_reserved: if fresh { price } else { 0 },
                    duplicate: !fresh,
                    provider,
                    model,
                })
            })
            .collect())
    }
}

/// Refuses an array where the document says an object (serde would read a struct from a
/// sequence of its fields' values, `"requirements": [null, null]`, which the document does not
/// allow).
fn objects_where_objects_go(job: &serde_json::Map<String, serde_json::Value>) -> Result<(), ApiError> {
    use serde_json::Value;
    let at = |v: Option<&Value>, nullable: bool| match v {
        None | Some(Value::Object(_)) => true,
        Some(Value::Null) => nullable,
        Some(_) => false,
    };
    let requirements = job.get("requirements");
    let payload = job.get("payload");
    for (field, ok) in [
        ("payload", at(payload, false)),
        ("requirements", at(requirements, false)),
        ("requirements.gpu", at(requirements.and_then(|r| r.get("gpu")), true)),
        (
            "payload.report_usage",
            at(payload.and_then(|p| p.get("report_usage")), true),
        ),
    ] {
        if !ok {
            return Err(ApiError::InvalidRequest(format!("{field}: a JSON object is required")));
        }
    }
    Ok(())
}
