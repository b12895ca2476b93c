//! What every handler shares: the scheduler's state, built once in [`crate::server`].

use std::sync::Arc;

use gantry_queue::QueueClient;

use crate::admission::Admission;
use crate::auth::ApiKeys;
use crate::config::SchedulerConfig;

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Configuration.
    pub cfg: Arc<SchedulerConfig>,
    /// The queue.
    pub queue: QueueClient,
    /// API keys.
    pub keys: Arc<ApiKeys>,
    /// Admission.
    pub admission: Admission,
    /// Pipelines (admitted through `admission`).
    pub pipelines: crate::pipelines::Pipelines,
    /// Pool loads (placement and the autoscaling signals).
    pub loads: crate::placement::PoolLoads,
    /// Metrics.
    pub metrics: Arc<crate::metrics::SchedulerMetrics>,
    /// The abuse hash lists.
    pub hashlists: gantry_safety::HashListStore,
    /// Users' trust standings and their history.
    pub trust: gantry_safety::TrustRegistry,
    /// The moderation log.
    pub moderation: gantry_safety::ModerationLog,
    /// The review queue of withheld near-matches.
    pub reviews: gantry_safety::ReviewQueue,
    /// Reports to the authority.
    pub reports: gantry_safety::Reports,
    /// The categories' policies.
    pub policies: gantry_safety::Policies,
    /// The takedown path (evidence vault included); `None` without an output store.
    pub enforcer: Option<gantry_safety::Enforcer>,
    /// The audit log of operators' actions.
    pub audit: gantry_safety::AuditLog,
    /// Dead-letter replays and purges, audited (shared with the CLI).
    pub dead_letters: crate::dead_letters::DeadLetters,
    /// Erasures on request (shared with the CLI); `None` without an output store (`outputs`
    /// in the config).
    pub eraser: Option<crate::erasure::Eraser>,
    /// The output store tenants download their outputs from; `None` when not configured.
    pub outputs: Option<gantry_store::OutputStore>,
    /// The event fan-out behind `GET /v1/events`; `None` where it is not running (tests that
    /// build a state by hand).
    pub events: Option<crate::events::EventHub>,
    /// Webhook endpoints and deliveries; `None` where delivery is not running.
    pub webhooks: Option<crate::webhooks::Webhooks>,
    /// The operator console's sessions.
    pub console: crate::console_session::Sessions,
    /// The console's OpenID Connect provider, when one is configured.
    pub oidc: Option<crate::oidc::OidcClient>,
    /// The console overview's shared live snapshot.
    pub console_live: crate::console_feed::Live,
}
