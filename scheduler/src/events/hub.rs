//! One reader per pool follows that pool's events stream (`XREAD BLOCK` on a connection of its
//! own) and broadcasts each event to every SSE client of this scheduler, so Redis sees one
//! reader per pool however many clients are connected. A client that falls behind the
//! broadcast buffer reads what it missed from the stream itself ([`super::sse`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_queue::events::{self, JobEvent, StreamPos};
use gantry_queue::{Pool, QueueClient, RedisConn};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::cursor::Cursor;

/// How long one `XREAD` blocks.
const BLOCK: Duration = Duration::from_secs(1);
/// Events read per round trip.
const BATCH: usize = 512;
/// How often the streams are trimmed to retention.
const TRIM_EVERY: Duration = Duration::from_secs(60);
/// Events the broadcast holds for its slowest client (about 4 s at 2,000 events/s).
const BUFFER: usize = 8192;

/// The scheduler's event fan-out. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EventHub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: broadcast::Sender<Arc<JobEvent>>,
    pools: Vec<Pool>,
    conn: RedisConn,
    /// The last position each reader has broadcast.
    heads: Mutex<Cursor>,
    stop: CancellationToken,
}

impl EventHub {
    /// A hub over `pools`' streams; nothing is read until [`EventHub::start`].
    pub fn new(queue: &QueueClient, pools: Vec<Pool>, stop: CancellationToken) -> Self {
        let (tx, _) = broadcast::channel(BUFFER);
        Self {
            inner: Arc::new(Inner {
                tx,
                pools,
                conn: queue.connection(),
                heads: Mutex::new(Cursor::default()),
                stop,
            }),
        }
    }

    /// Starts one reader per pool, each from its stream's newest entry, and the trimmer that
    /// keeps the streams to `retention`.
    pub fn start(&self, queue: &QueueClient, retention: crate::config::EventsConfig) {
        for pool in &self.inner.pools {
            tokio::spawn(reader(self.clone(), queue.clone(), pool.clone()));
        }
        tokio::spawn(trimmer(self.clone(), retention));
    }

    /// A receiver of every event broadcast from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<JobEvent>> {
        self.inner.tx.subscribe()
    }

    /// The pools followed.
    pub fn pools(&self) -> &[Pool] {
        &self.inner.pools
    }

    /// Redis (for reading back what a client missed).
    pub fn conn(&self) -> &RedisConn {
        &self.inner.conn
    }

    /// Where each reader is: a client that starts now starts here.
    pub fn heads(&self) -> Cursor {
        self.inner.heads.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// Cancelled when the scheduler stops: streams end.
    pub fn stopping(&self) -> &CancellationToken {
        &self.inner.stop
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.inner.tx.receiver_count()
    }
}

async fn reader(hub: EventHub, queue: QueueClient, pool: Pool) {
    let stop = hub.inner.stop.clone();
    let mut conn = None;
    let mut pos: Option<StreamPos> = None;
    while !stop.is_cancelled() {
        let round = async {
            if conn.is_none() {
                conn = Some(queue.blocking_connection(BLOCK).await?);
            }
            let after = match pos {
                Some(p) => p,
                None => {
                    let p = events::bounds(hub.conn(), &pool)
                        .await?
                        .map_or(StreamPos::ZERO, |(_, last)| last);
                    set_head(&hub, &pool, p);
                    pos = Some(p);
                    p
                }
            };
            let Some(c) = conn.as_mut() else { return Ok(()) };
            let (got, last) = events::read_blocking(c, &pool, after, BATCH, BLOCK).await?;
            for e in got {
                // No receivers is not an error: nobody is listening right now.
                let _ = hub.inner.tx.send(Arc::new(e));
            }
            // Sent first, then the head: a client that starts from the head and subscribed
            // before the send sees each event either way; one that subscribed after reads it back.
            if let Some(l) = last {
                pos = Some(l);
                set_head(&hub, &pool, l);
            }
            Ok::<_, gantry_queue::QueueError>(())
        };
        let r = tokio::select! {
            r = round => r,
            () = stop.cancelled() => break,
        };
        if let Err(e) = r {
            tracing::warn!(pool = %pool, error = %e, "reading the events stream failed; retrying");
            conn = None;
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = stop.cancelled() => break,
            }
        }
    }
}

/// Trims every pool's stream to the retention, once a minute (every replica does; trimming
/// twice removes nothing more).
async fn trimmer(hub: EventHub, retention: crate::config::EventsConfig) {
    let stop = hub.inner.stop.clone();
    let max_age_ms = retention.retention_secs.saturating_mul(1000);
    loop {
        for pool in &hub.inner.pools {
            match events::trim(hub.conn(), pool, max_age_ms, retention.max_len).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(pool = %pool, removed = n, "events past retention trimmed"),
                Err(e) => tracing::warn!(pool = %pool, error = %e, "trimming the events stream failed"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(TRIM_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}

fn set_head(hub: &EventHub, pool: &Pool, pos: StreamPos) {
    if let Ok(mut h) = hub.inner.heads.lock() {
        h.advance(pool, pos);
    }
}
