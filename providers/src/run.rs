//! Runs one generation to its end against one provider, whatever its mode: submit (retrying
//! what may work next time, never sooner than `Retry-After`), then poll on a widening schedule
//! through the task state machine until a terminal state. A submit whose outcome is unknown is
//! looked up by our external id before it is repeated, where the provider can do that. The
//! provider's circuit breaker is consulted before every call and told about outages.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Provider;
use crate::breaker::Breaker;
use crate::error::{ProviderError, ProviderErrorClass};
use crate::retry::Backoff;
use crate::task::{GenerateRequest, Generated, Observed, PollSchedule, Submitted, Task, TaskHandle, TaskState};

/// How a run ended without outputs.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The provider said no, or kept failing.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The provider's breaker is open: try another provider.
    #[error("{provider}: circuit open after repeated outages")]
    CircuitOpen {
        /// The provider.
        provider: &'static str,
    },
    /// Cancelled by the job's owner or the worker's shutdown.
    #[error("cancelled")]
    Cancelled,
    /// The attempt's deadline passed first.
    #[error("deadline passed while the task was {state}")]
    TimedOut {
        /// The task's state then.
        state: &'static str,
    },
}

/// What a run needs besides the request.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Retries within the run.
    pub backoff: Backoff,
    /// Poll pace.
    pub poll: PollSchedule,
    /// When to give up.
    pub deadline: Instant,
    /// A task accepted by an earlier attempt: poll it instead of submitting again.
    pub resume: Option<TaskHandle>,
    /// Webhook calls about this task (webhook mode): each wakes the loop with what it reports.
    pub webhook: Option<tokio::sync::watch::Receiver<Option<Observed>>>,
}

/// Callbacks as the run goes.
pub trait RunHooks: Send {
    /// The provider accepted a task: keep its handle (with the job) to resume after a crash.
    fn accepted(&mut self, task: &TaskHandle) -> futures::future::BoxFuture<'_, ()>;
    /// The task moved to `state`.
    fn state(&mut self, state: TaskState) {
        let _ = state;
    }
    /// The running task is `percent` done, as the provider reports it.
    fn percent(&mut self, percent: u8) {
        let _ = percent;
    }
    /// A call failed and will be retried after `wait`.
    fn retrying(&mut self, error: &ProviderError, wait: Duration) {
        let _ = (error, wait);
    }
}

/// Hooks that do nothing.
#[derive(Debug, Default)]
pub struct NoHooks;

impl RunHooks for NoHooks {
    fn accepted(&mut self, _: &TaskHandle) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Sleeps `d` unless a webhook call arrives first (returned), or returns why it could not.
async fn wait_next(
    d: Duration,
    opts: &RunOptions,
    webhook: &mut Option<tokio::sync::watch::Receiver<Option<Observed>>>,
    cancel: &CancellationToken,
    state: TaskState,
) -> Result<Option<Observed>, RunError> {
    let Some(rx) = webhook else {
        return pause(d, opts, cancel, state).await.map(|()| None);
    };
    if Instant::now() + d > opts.deadline {
        return Err(RunError::TimedOut { state: state.as_str() });
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(None),
        _ = cancel.cancelled() => Err(RunError::Cancelled),
        changed = rx.changed() => match changed {
            Ok(()) => Ok(rx.borrow_and_update().clone()),
            Err(_) => {
                // The inbox went away: poll only.
                *webhook = None;
                Ok(None)
            }
        },
    }
}

/// Sleeps `d`, or returns why it could not.
async fn pause(d: Duration, opts: &RunOptions, cancel: &CancellationToken, state: TaskState) -> Result<(), RunError> {
    if Instant::now() + d > opts.deadline {
        return Err(RunError::TimedOut { state: state.as_str() });
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = cancel.cancelled() => Err(RunError::Cancelled),
    }
}

fn record(breaker: &Breaker, e: &ProviderError) {
    if e.class.is_outage() {
        breaker.failure();
    }
}

/// Runs `req` on `provider` to a terminal state.
pub async fn run(
    provider: &dyn Provider,
    breaker: &Breaker,
    req: &GenerateRequest,
    opts: &RunOptions,
    cancel: &CancellationToken,
    hooks: &mut dyn RunHooks,
) -> Result<Generated, RunError> {
    let mut task = Task::new();
    let handle = match &opts.resume {
        Some(h) => h.clone(),
        None => match submit(provider, breaker, req, opts, cancel, hooks).await? {
            Submitted::Done(g) => {
                task.observe(TaskState::Succeeded);
                hooks.state(TaskState::Succeeded);
                return Ok(g);
            }
            Submitted::Accepted(h) => {
                hooks.accepted(&h).await;
                h
            }
        },
    };
    hooks.state(TaskState::Queued);
    let (mut polls, mut errors) = (0u32, 0u32);
    let mut webhook = opts.webhook.clone();
    loop {
        let called = wait_next(opts.poll.wait(polls), opts, &mut webhook, cancel, task.state()).await?;
        let seen = if let Some(seen) = called {
            seen
        } else {
            polls += 1;
            if !breaker.allow() {
                return Err(RunError::CircuitOpen {
                    provider: provider.name(),
                });
            }
            match provider.poll(&handle).await {
                Ok(seen) => {
                    breaker.success();
                    errors = 0;
                    seen
                }
                Err(e) => {
                    record(breaker, &e);
                    if !e.class.is_retryable() || errors >= opts.backoff.max_retries {
                        return Err(e.into());
                    }
                    let wait = opts.backoff.wait(errors, e.retry_after());
                    hooks.retrying(&e, wait);
                    errors += 1;
                    pause(wait, opts, cancel, task.state()).await?;
                    continue;
                }
            }
        };
        if task.observe(seen.state()) {
            hooks.state(task.state());
        }
        match seen {
            Observed::Running(Some(percent)) => hooks.percent(percent),
            Observed::Queued | Observed::Running(None) => {}
            Observed::Succeeded(g) => return Ok(g),
            Observed::Failed(e) => return Err(e.into()),
            Observed::Cancelled => {
                return Err(ProviderError::new(
                    provider.name(),
                    ProviderErrorClass::Transient,
                    "the provider cancelled the task",
                )
                .code("cancelled_by_provider")
                .into());
            }
        }
    }
}

async fn submit(
    provider: &dyn Provider,
    breaker: &Breaker,
    req: &GenerateRequest,
    opts: &RunOptions,
    cancel: &CancellationToken,
    hooks: &mut dyn RunHooks,
) -> Result<Submitted, RunError> {
    let mut n = 0u32;
    loop {
        if !breaker.allow() {
            return Err(RunError::CircuitOpen {
                provider: provider.name(),
            });
        }
        let e = match provider.submit(req).await {
            Ok(s) => {
                breaker.success();
                return Ok(s);
            }
            Err(e) => e,
        };
        record(breaker, &e);
        if e.outcome_unknown && provider.can_find() {
            // The request may have reached the provider: look before paying twice.
            if let Ok(Some(h)) = provider.find(req).await {
                tracing::info!(
                    provider = provider.name(),
                    "submit outcome was unknown; found the task by our id"
                );
                return Ok(Submitted::Accepted(h));
            }
        }
        if !e.class.is_retryable() || n >= opts.backoff.max_retries {
            return Err(e.into());
        }
        let wait = opts.backoff.wait(n, e.retry_after());
        hooks.retrying(&e, wait);
        n += 1;
        pause(wait, opts, cancel, TaskState::Queued).await?;
    }
}
