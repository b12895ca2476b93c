//! Webhook mode: the provider calls us when a task ends, so a worker need not poll it often.
//!
//! Each task's callback URL is `{base}/webhooks/{provider}/{external_id}/{token}` where the
//! token is HMAC-SHA256(worker secret, provider + external id): a call with a wrong token is
//! refused without reading its body, whatever the provider signs or does not (Kling and Ark
//! send no signature; BFL also signs the body with the task's `webhook_secret`, checked too).
//! A task waiting in [`crate::run::run`] registers in the [`WebhookInbox`]; a verified call
//! wakes it with the state it reports. Polling goes on, more slowly, in case a call is lost.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::kling::hmac_sha256;
use crate::task::{Callback, Observed};
use crate::{Provider, ProviderError};

/// Why a webhook call was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The URL's token does not match.
    #[error("bad webhook token")]
    BadToken,
    /// No such provider here.
    #[error("unknown provider {0}")]
    UnknownProvider(String),
    /// The provider's call could not be read or its signature is wrong.
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// What a delivered call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// A waiting task was woken.
    Woken,
    /// No task waits for it here (finished already, or on another worker): polling covers it.
    NobodyWaiting,
}

type Waiting = HashMap<String, watch::Sender<Option<Observed>>>;

/// Callback URLs and the tasks waiting for their calls.
#[derive(Debug)]
pub struct WebhookInbox {
    base: String,
    secret: Vec<u8>,
    waiting: Mutex<Waiting>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl WebhookInbox {
    /// An inbox whose callbacks are reached at `base` (`http://worker-3.gantry:9464`),
    /// tokens keyed by `secret`.
    pub fn new(base: &str, secret: &[u8]) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            secret: secret.to_vec(),
            waiting: Mutex::default(),
        }
    }

    fn token(&self, provider: &str, external_id: &str) -> String {
        hex(&hmac_sha256(
            &self.secret,
            format!("{provider}\n{external_id}").as_bytes(),
        ))
    }

    /// The callback for a task.
    pub fn callback(&self, provider: &str, external_id: &str) -> Callback {
        let token = self.token(provider, external_id);
        Callback {
            url: format!("{}/webhooks/{provider}/{external_id}/{token}", self.base),
            secret: token,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for calls about `external_id`; the registration ends when the guard is dropped.
    pub fn register(&self, external_id: &str) -> Registration<'_> {
        let (tx, rx) = watch::channel(None);
        self.lock().insert(external_id.to_owned(), tx);
        Registration {
            inbox: self,
            id: external_id.to_owned(),
            rx,
        }
    }

    /// Checks and delivers a call made to `/webhooks/{provider}/{external_id}/{token}`.
    pub fn deliver(
        &self,
        client: &dyn Provider,
        external_id: &str,
        token: &str,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) -> Result<Delivery, WebhookError> {
        let expected = self.token(client.name(), external_id);
        if !same(expected.as_bytes(), token.as_bytes()) {
            return Err(WebhookError::BadToken);
        }
        let (_task, seen) = client.parse_webhook(headers, body, &expected)?;
        match self.lock().get(external_id) {
            Some(tx) => {
                tx.send_replace(Some(seen));
                Ok(Delivery::Woken)
            }
            None => Ok(Delivery::NobodyWaiting),
        }
    }
}

/// A task's registration in the inbox.
#[derive(Debug)]
pub struct Registration<'a> {
    inbox: &'a WebhookInbox,
    id: String,
    /// Changes when a call arrives.
    pub rx: watch::Receiver<Option<Observed>>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.inbox.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_provider_and_task() {
        let inbox = WebhookInbox::new("http://w:9464/", b"secret");
        let c = inbox.callback("flux", "job-1");
        assert!(c.url.starts_with("http://w:9464/webhooks/flux/job-1/"), "{}", c.url);
        assert_eq!(c.secret, inbox.token("flux", "job-1"));
        assert_ne!(inbox.token("flux", "job-1"), inbox.token("kling", "job-1"));
        assert_ne!(
            inbox.token("flux", "job-1"),
            WebhookInbox::new("x", b"other").token("flux", "job-1")
        );
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"ab", b"abc"));
    }
}
