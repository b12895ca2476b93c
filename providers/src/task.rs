//! One task at a provider, whatever the provider's mode: the request, the handle a submit
//! returns, what a poll or a webhook reports, and the one state machine every mode goes
//! through: `queued → running → succeeded | failed | moderated | cancelled`.

use std::time::Duration;

use gantry_core::Usage;
use serde::{Deserialize, Serialize};

use crate::error::{ProviderError, ProviderErrorClass};

/// What to generate, in the provider's terms (the model id is the provider's own). Its `Debug`
/// leaves out the prompt, the references and the callback's secret.
#[derive(Clone, PartialEq, Eq)]
pub struct GenerateRequest {
    /// Our id for the task; providers that can look a task up by a client id get it (Kling's
    /// `external_task_id`), so a submit whose outcome is unknown is found instead of repeated.
    pub external_id: String,
    /// The provider's model id.
    pub model: String,
    /// The prompt. Never logged: only its SHA-256.
    pub prompt: String,
    /// What to avoid.
    pub negative_prompt: Option<String>,
    /// Reference images (URLs, or `data:` URIs).
    pub reference_images: Vec<String>,
    /// Output width in pixels.
    pub width: Option<u32>,
    /// Output height in pixels.
    pub height: Option<u32>,
    /// Video length in seconds.
    pub duration_secs: Option<u32>,
    /// Outputs wanted.
    pub samples: u32,
    /// Whether the model makes video (`true`) or images.
    pub video: bool,
    /// Where the provider should report the task's end (webhook mode), if it can.
    pub callback: Option<Callback>,
}

impl GenerateRequest {
    /// This request on `api`, as [`crate::shape`] decides it (the same decision admission priced
    /// the job by); a request outside the API's ranges is an `invalid_request`, never clamped.
    pub fn shape(&self, provider: &'static str, api: crate::config::Api) -> Result<crate::shape::Shape, ProviderError> {
        api.shape(
            self.video,
            &crate::shape::Asked {
                samples: Some(self.samples),
                duration_secs: self.duration_secs,
                width: self.width,
                height: self.height,
            },
        )
        .map_err(|e| {
            ProviderError::new(provider, ProviderErrorClass::InvalidRequest, e.to_string()).code("invalid_shape")
        })
    }
}

impl std::fmt::Debug for GenerateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerateRequest")
            .field("external_id", &self.external_id)
            .field("model", &self.model)
            .field("prompt", &"<redacted>")
            .field("reference_images", &self.reference_images.len())
            .field("width", &self.width)
            .field("height", &self.height)
            .field("duration_secs", &self.duration_secs)
            .field("samples", &self.samples)
            .field("video", &self.video)
            .field("callback", &self.callback)
            .finish_non_exhaustive()
    }
}

/// A webhook the provider is asked to call.
#[derive(Clone, PartialEq, Eq)]
pub struct Callback {
    /// The URL (it carries a per-task token: see [`crate::webhook`]).
    pub url: String,
    /// The secret a provider that signs its calls signs with (BFL's `webhook_secret`).
    pub secret: String,
}

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL carries a per-task token and the secret signs: neither is printed.
        f.debug_struct("Callback").finish_non_exhaustive()
    }
}

/// How a provider delivers results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The submit's response holds the result.
    Synchronous,
    /// Submit, then poll the task.
    Poll,
    /// Submit, then the provider calls us back (polled too, more slowly, in case a call is lost).
    Webhook,
}

/// A task the provider accepted. Serializable, so a worker can keep it with the job and
/// resume polling after a crash instead of paying for the task twice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskHandle {
    /// The provider's task id.
    pub id: String,
    /// Where to poll, when the provider says (BFL's `polling_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_url: Option<String>,
    /// Which endpoint family the task lives under (Kling's `text2video`, `images`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
}

/// One output as the provider gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Artifact {
    /// Bytes in the response (base64 decoded).
    Inline {
        /// The bytes.
        bytes: Vec<u8>,
        /// The MIME type the provider declared, if any.
        declared_type: Option<String>,
    },
    /// A URL to download from (it expires: copy it at once).
    Url {
        /// The URL (may be signed: never logged).
        url: String,
    },
}

/// A finished task: its outputs and what the provider billed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    /// Outputs, in order.
    pub artifacts: Vec<Artifact>,
    /// Usage as the provider reported it (quantities it did not report are left `None`).
    pub usage: Usage,
}

/// What a submit returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// A synchronous provider answered with the result.
    Done(Generated),
    /// The task was accepted; poll it (or wait for its webhook).
    Accepted(TaskHandle),
}

/// What a poll or a webhook reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Waiting at the provider.
    Queued,
    /// Running at the provider; with how far along, where the provider says (percent).
    Running(Option<u8>),
    /// Finished with outputs.
    Succeeded(Generated),
    /// Finished without: the error's class says why (`moderated` for safety refusals).
    Failed(ProviderError),
    /// Cancelled at the provider.
    Cancelled,
}

/// The state machine's states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Accepted, not started.
    Queued,
    /// Started.
    Running,
    /// Outputs ready.
    Succeeded,
    /// Failed.
    Failed,
    /// Refused by the provider's safety system.
    Moderated,
    /// Cancelled.
    Cancelled,
}

impl TaskState {
    /// Whether the task will change no further.
    pub fn is_terminal(self) -> bool {
        !matches!(self, TaskState::Queued | TaskState::Running)
    }

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Moderated => "moderated",
            TaskState::Cancelled => "cancelled",
        }
    }
}

impl Observed {
    /// The state this observation puts the task in.
    pub fn state(&self) -> TaskState {
        match self {
            Observed::Queued => TaskState::Queued,
            Observed::Running(_) => TaskState::Running,
            Observed::Succeeded(_) => TaskState::Succeeded,
            Observed::Failed(e) if e.class == ProviderErrorClass::Moderated => TaskState::Moderated,
            Observed::Failed(_) => TaskState::Failed,
            Observed::Cancelled => TaskState::Cancelled,
        }
    }
}

/// A task's life as the fleet tracks it. Observations may arrive late or twice (a poll and a
/// webhook crossing): moving backwards (`running` → `queued`) is ignored, and nothing moves a
/// task out of a terminal state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    state: TaskState,
    transitions: u32,
}

impl Default for Task {
    fn default() -> Self {
        Self::new()
    }
}

impl Task {
    /// A task just accepted.
    pub fn new() -> Self {
        Self {
            state: TaskState::Queued,
            transitions: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> TaskState {
        self.state
    }

    /// How many times the state changed.
    pub fn transitions(&self) -> u32 {
        self.transitions
    }

    /// Applies an observation; returns whether the state changed.
    pub fn observe(&mut self, next: TaskState) -> bool {
        let forward = match (self.state, next) {
            (a, _) if a.is_terminal() => false,
            (a, b) if a == b => false,
            (TaskState::Running, TaskState::Queued) => false,
            _ => true,
        };
        if forward {
            self.state = next;
            self.transitions += 1;
        }
        forward
    }
}

/// How often to poll: starting at `initial`, growing by half each time up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollSchedule {
    /// First wait after the submit.
    pub initial: Duration,
    /// Longest wait between polls.
    pub max: Duration,
}

impl PollSchedule {
    /// The wait before poll number `n` (0-based).
    pub fn wait(&self, n: u32) -> Duration {
        let mut d = self.initial;
        for _ in 0..n.min(32) {
            d = (d + d / 2).min(self.max);
        }
        d.min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_move_forward_only() {
        let mut t = Task::new();
        assert!(t.observe(TaskState::Running));
        assert!(!t.observe(TaskState::Queued), "a late 'queued' poll is ignored");
        assert!(!t.observe(TaskState::Running));
        assert!(t.observe(TaskState::Moderated));
        assert!(!t.observe(TaskState::Succeeded), "terminal states are final");
        assert_eq!((t.state(), t.transitions()), (TaskState::Moderated, 2));
        let mut t = Task::new();
        assert!(t.observe(TaskState::Succeeded), "a fast task may skip running");
    }

    #[test]
    fn moderation_is_its_own_state() {
        let e = ProviderError::new("flux", ProviderErrorClass::Moderated, "Content Moderated");
        assert_eq!(Observed::Failed(e).state(), TaskState::Moderated);
        let e = ProviderError::new("flux", ProviderErrorClass::Transient, "Error");
        assert_eq!(Observed::Failed(e).state(), TaskState::Failed);
    }

    #[test]
    fn polls_back_off_to_a_ceiling() {
        let s = PollSchedule {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
        };
        assert_eq!(s.wait(0), Duration::from_millis(100));
        assert_eq!(s.wait(1), Duration::from_millis(150));
        assert_eq!(s.wait(10), Duration::from_millis(400));
    }
}
