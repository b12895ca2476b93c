//! A [`Ticket`] travels with every leased job: it is the duty to settle that attempt exactly once.
//! Settling records the outcome (ack, fail, release or drop), gives back the job's VRAM or CPU
//! slot and its concurrency slot, and wakes the claim loop. A ticket dropped unsettled (its job
//! never ran, or its runner went away) releases the lease, so the job runs again elsewhere and
//! never counts as failed; dropped while its runner panics, it records a retryable failure.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;

use crate::client::{Failure, LeaseRef};
use crate::job::{Completion, ErrorClass, JobId, JobKind};
use crate::keys::Pool;

use super::ledger::Ledger;
use super::{ConsumerEvents, JobContext, JobOutcome};

/// Why a running job was told to stop.
pub(crate) const STOP_NONE: u8 = 0;
pub(crate) const STOP_CANCEL: u8 = 1;
pub(crate) const STOP_LOST: u8 = 2;
pub(crate) const STOP_DRAIN: u8 = 3;

/// A leased job as the heartbeat and the drain see it.
pub(crate) struct InFlight {
    pub(crate) pool: Pool,
    pub(crate) lease: LeaseRef,
    pub(crate) cancel: CancellationToken,
    pub(crate) reason: Arc<AtomicU8>,
}

impl InFlight {
    /// Stops the job for `reason` unless it was already told to stop for another.
    pub(crate) fn stop(&self, reason: u8) {
        let _ = self
            .reason
            .compare_exchange(STOP_NONE, reason, Ordering::SeqCst, Ordering::SeqCst);
        self.cancel.cancel();
    }
}

/// What settling an attempt records.
pub(crate) enum Outcome {
    Ack(LeaseRef, Completion),
    Fail(Failure),
    Release(LeaseRef),
    Drop(LeaseRef),
}

/// A settled attempt, to record in its pool.
pub(crate) struct Settled {
    pub(crate) pool: Pool,
    pub(crate) outcome: Outcome,
    /// For a traced job: the span of recording its outcome (`queue.ack`, `queue.fail`,
    /// `queue.release`), a child of the job's span, closed once the outcome is durable.
    pub(crate) span: Option<tracing::Span>,
}

/// What every ticket of one consumer shares.
pub(crate) struct TicketShared {
    pub(crate) ledger: Arc<Mutex<Ledger>>,
    pub(crate) freed: Notify,
    pub(crate) done: mpsc::UnboundedSender<Settled>,
    pub(crate) events: Arc<dyn ConsumerEvents>,
    pub(crate) progress: Arc<super::progress::ProgressBoard>,
}

/// The duty to settle one leased attempt, exactly once. See the module docs.
#[must_use = "a ticket dropped unsettled releases its job"]
pub struct Ticket {
    state: Option<TicketState>,
}

struct TicketState {
    pool: Pool,
    lease: LeaseRef,
    attempt: u32,
    kind: JobKind,
    gpus: Vec<u32>,
    gib: u64,
    cancel: CancellationToken,
    reason: Arc<AtomicU8>,
    began: Instant,
    /// The job carries a trace context: recording its outcome is a span of that trace.
    traced: bool,
    shared: Arc<TicketShared>,
    _slot: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Ticket");
        if let Some(s) = &self.state {
            d.field("job_id", &s.lease.id).field("pool", &s.pool);
        }
        d.finish_non_exhaustive()
    }
}

impl Ticket {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        pool: Pool,
        lease: LeaseRef,
        attempt: u32,
        gpus: Vec<u32>,
        gib: u64,
        cancel: CancellationToken,
        reason: Arc<AtomicU8>,
        traced: bool,
        shared: Arc<TicketShared>,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            state: Some(TicketState {
                kind: lease.kind,
                pool,
                lease,
                attempt,
                gpus,
                gib,
                cancel,
                reason,
                began: Instant::now(),
                traced,
                shared,
                _slot: slot,
            }),
        }
    }

    /// The job's id.
    pub fn job_id(&self) -> Option<JobId> {
        self.state.as_ref().map(|s| s.lease.id)
    }

    /// What the handler gets: the token that fires when the job must stop, and where it
    /// reports its progress.
    pub fn context(&self) -> JobContext {
        match &self.state {
            Some(s) => JobContext {
                cancel: s.cancel.clone(),
                progress: super::ProgressHandle::new(
                    s.shared.progress.clone(),
                    s.pool.clone(),
                    s.lease.clone(),
                    s.attempt,
                ),
            },
            None => JobContext::default(),
        }
    }

    /// Settles with the handler's outcome. The stop reason decides first: after a lost lease
    /// nothing is recorded; a failure during a drain is a release; work that succeeded anyway is
    /// still acked.
    pub fn settle(mut self, outcome: JobOutcome) {
        if let Some(s) = self.state.take() {
            s.finish(Some(outcome));
        }
    }

    /// Settles a job whose handler was stopped before it returned (its cancel token fired and
    /// the runner dropped it): released on a drain, dropped after a lost lease, otherwise failed
    /// as cancelled.
    pub fn settle_stopped(mut self) {
        if let Some(s) = self.state.take() {
            s.finish(None);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(s) = self.state.take() {
            if std::thread::panicking() {
                s.finish(Some(JobOutcome::Failed {
                    class: ErrorClass::Retryable,
                    message: "executor panicked".into(),
                }));
            } else {
                let _ = s
                    .reason
                    .compare_exchange(STOP_NONE, STOP_DRAIN, Ordering::SeqCst, Ordering::SeqCst);
                s.finish(None);
            }
        }
    }
}

impl TicketState {
    fn finish(self, outcome: Option<JobOutcome>) {
        let reason = self.reason.load(Ordering::SeqCst);
        let lease = self.lease;
        let outcome = match (reason, outcome) {
            (STOP_LOST, _) => Outcome::Drop(lease),
            (STOP_DRAIN, None | Some(JobOutcome::Failed { .. } | JobOutcome::RetryAfter { .. })) => {
                Outcome::Release(lease)
            }
            (_, Some(JobOutcome::Succeeded(r))) => Outcome::Ack(lease, r),
            (_, Some(JobOutcome::Failed { class, message })) => Outcome::Fail(Failure {
                lease,
                attempt: self.attempt,
                class,
                message,
                retry_after: None,
            }),
            (_, Some(JobOutcome::RetryAfter { message, after })) => Outcome::Fail(Failure {
                lease,
                attempt: self.attempt,
                class: ErrorClass::Retryable,
                message,
                retry_after: Some(after),
            }),
            (_, None) => Outcome::Fail(Failure {
                lease,
                attempt: self.attempt,
                class: ErrorClass::Cancelled,
                message: "cancelled by request".into(),
                retry_after: None,
            }),
        };
        let shared = &self.shared;
        match &outcome {
            Outcome::Fail(f) => {
                // Within the job's span where the runner has one; the id is on the line anyway.
                tracing::warn!(job_id = %f.lease.id, class = f.class.as_str(), error = %f.message, "attempt failed");
                shared
                    .events
                    .finished(&self.pool, self.kind, Some(f.class), self.began.elapsed());
            }
            Outcome::Ack(..) => shared
                .events
                .finished(&self.pool, self.kind, None, self.began.elapsed()),
            Outcome::Release(_) | Outcome::Drop(_) => {}
        }
        if let Ok(mut l) = shared.ledger.lock() {
            l.release(&self.gpus, self.gib);
        }
        // The completion goes out before the slot is given back, so the drain, which waits for
        // every slot, never finishes ahead of an outcome it has to flush.
        // Made here, inside the job's span (the runner's), so it is that span's child.
        let step = match &outcome {
            Outcome::Ack(..) => Some("queue.ack"),
            Outcome::Fail(_) => Some("queue.fail"),
            Outcome::Release(_) => Some("queue.release"),
            Outcome::Drop(_) => None,
        };
        let span = step
            .filter(|_| self.traced)
            .map(|name| tracing::info_span!("queue.settle", otel.name = name, otel.kind = "client"));
        let _ = shared.done.send(Settled {
            pool: self.pool,
            outcome,
            span,
        });
        drop(self._slot);
        shared.freed.notify_one();
    }
}
