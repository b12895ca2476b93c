//! The worker side of the hash lists: each list's current version held as a PDQ multi-index
//! and digest sets, reloaded when Redis says the version changed (one `HGET` per list per
//! check, at most every `refresh` interval), and matching against them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_codecs::pdq::index::MultiIndex;
use gantry_codecs::pdq::{DIHEDRAL_NAMES, Hash256};
use tokio::sync::Mutex;

use crate::error::SafetyError;
use crate::hashlists::{HashListStore, ListMeta};

/// How a match was found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MatchKind {
    /// PDQ within the distance, through one of the 8 dihedral variants.
    Pdq {
        /// Hamming distance.
        distance: u32,
        /// The variant of the query (`original`, `rotate90`, …).
        variant: &'static str,
    },
    /// Exact MD5.
    Md5,
    /// Exact SHA-256.
    Sha256,
}

/// How sure a match is, by the list's thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Within the review band: withheld for a person to decide.
    Review,
    /// An exact digest, or PDQ within the block distance: acted on at once.
    Block,
}

/// A match against a list.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Match {
    /// The list.
    pub list: String,
    /// Its version.
    pub version: u64,
    /// Its category.
    pub category: String,
    /// How.
    #[serde(flatten)]
    pub kind: MatchKind,
    /// The list entry matched (hex).
    pub entry: String,
    /// Block at once, or review.
    pub severity: Severity,
}

/// One list, loaded.
#[derive(Debug)]
pub struct Loaded {
    /// What was loaded.
    pub meta: ListMeta,
    index: MultiIndex,
    md5: HashSet<String>,
    sha256: HashSet<String>,
}

impl Loaded {
    /// Matches PDQ hashes (the 8 dihedral variants of one image, or a frame's) within
    /// `max_distance`: each list entry once, at its smallest distance.
    pub fn match_pdq(&self, variants: &[Hash256], max_distance: u32) -> Result<Vec<Match>, SafetyError> {
        let hits = self
            .index
            .search_any(variants, max_distance.min(self.meta.review_distance))?;
        let block = self.meta.block_distance;
        Ok(hits
            .into_iter()
            .filter_map(|(hit, v)| {
                Some(Match {
                    list: self.meta.name.clone(),
                    version: self.meta.version,
                    category: self.meta.category.clone(),
                    kind: MatchKind::Pdq {
                        distance: hit.distance,
                        variant: DIHEDRAL_NAMES.get(v).copied().unwrap_or("frame"),
                    },
                    entry: self.index.get(hit.index)?.to_string(),
                    severity: if hit.distance <= block {
                        Severity::Block
                    } else {
                        Severity::Review
                    },
                })
            })
            .collect())
    }

    /// Matches video frame hashes within `max_distance` (each list entry once).
    pub fn match_frames(&self, frames: &[Hash256], max_distance: u32) -> Result<Vec<Match>, SafetyError> {
        let mut out = self.match_pdq(frames, max_distance)?;
        for m in &mut out {
            if let MatchKind::Pdq { variant, .. } = &mut m.kind {
                *variant = "frame";
            }
        }
        Ok(out)
    }

    /// Matches exact digests (lowercase hex).
    pub fn match_digests(&self, md5: &str, sha256: &str) -> Vec<Match> {
        let mut out = Vec::new();
        let m = |kind, entry: &str| Match {
            list: self.meta.name.clone(),
            version: self.meta.version,
            category: self.meta.category.clone(),
            kind,
            entry: entry.to_owned(),
            severity: Severity::Block,
        };
        if self.md5.contains(md5) {
            out.push(m(MatchKind::Md5, md5));
        }
        if self.sha256.contains(sha256) {
            out.push(m(MatchKind::Sha256, sha256));
        }
        out
    }
}

/// Cached lists, shared by a worker's jobs. One job at a time checks the versions and loads
/// what changed (building the index of a 10-million-hash list takes seconds) while the others
/// go on matching against the lists already loaded; only a job naming a list not loaded yet
/// waits for that load.
#[derive(Clone, Debug)]
pub struct Matcher {
    store: HashListStore,
    refresh: Duration,
    snapshot: Arc<std::sync::Mutex<Arc<Snapshot>>>,
    refreshing: Arc<Mutex<()>>,
}

#[derive(Debug, Default)]
struct Snapshot {
    lists: HashMap<String, Arc<Loaded>>,
    checked: Option<Instant>,
}

impl Snapshot {
    fn due(&self, refresh: Duration) -> bool {
        self.checked.is_none_or(|t| t.elapsed() >= refresh)
    }
}

impl Matcher {
    /// A matcher over `store`, checking versions at most every `refresh`.
    pub fn new(store: HashListStore, refresh: Duration) -> Self {
        Self {
            store,
            refresh,
            snapshot: Arc::new(std::sync::Mutex::new(Arc::new(Snapshot::default()))),
            refreshing: Arc::new(Mutex::new(())),
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The named lists (every list when `names` is empty), current as of the last check. A
    /// named list that does not exist is an error: a job must not pass as clean against a
    /// list it never saw.
    pub async fn lists(&self, names: &[String]) -> Result<Vec<Arc<Loaded>>, SafetyError> {
        let snap = self.snapshot();
        if snap.due(self.refresh) {
            // While another job refreshes, the lists already loaded answer, as they would have
            // until the check was due; a list never loaded waits for the refresh.
            let covered = snap.checked.is_some() && names.iter().all(|n| snap.lists.contains_key(n));
            let guard = match self.refreshing.try_lock() {
                Ok(g) => Some(g),
                Err(_) if covered => None,
                Err(_) => Some(self.refreshing.lock().await),
            };
            if let Some(_refreshing) = guard {
                let snap = self.snapshot();
                if snap.due(self.refresh) {
                    self.refresh_from(&snap).await?;
                }
            }
        }
        let snap = self.snapshot();
        if names.is_empty() {
            let mut all: Vec<_> = snap.lists.values().cloned().collect();
            all.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
            return Ok(all);
        }
        names
            .iter()
            .map(|n| {
                snap.lists
                    .get(n)
                    .cloned()
                    .ok_or_else(|| SafetyError::NotFound(n.clone()))
            })
            .collect()
    }

    /// Reads every list's version, loads those that changed (outside the snapshot's lock) and
    /// swaps the new snapshot in. On an error nothing is swapped; the next job tries again.
    async fn refresh_from(&self, old: &Snapshot) -> Result<(), SafetyError> {
        let current = self.store.lists().await?;
        let mut lists = HashMap::with_capacity(current.len());
        for meta in current {
            let loaded = match old.lists.get(&meta.name) {
                Some(l) if l.meta.version == meta.version => l.clone(),
                _ => Arc::new(self.load(&meta.name).await?),
            };
            lists.insert(meta.name, loaded);
        }
        let next = Arc::new(Snapshot {
            lists,
            checked: Some(Instant::now()),
        });
        *self.snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        Ok(())
    }

    async fn load(&self, name: &str) -> Result<Loaded, SafetyError> {
        let (meta, list) = self.store.load(name).await?;
        let (md5, sha256) = (list.md5.into_iter().collect(), list.sha256.into_iter().collect());
        let pdq = list.pdq;
        // Building the index of millions of hashes takes a while: off the async threads.
        let index = tokio::task::spawn_blocking(move || MultiIndex::build(pdq))
            .await
            .map_err(|e| SafetyError::Corrupt(format!("index build: {e}")))??;
        tracing::info!(
            list = name,
            version = meta.version,
            hashes = index.len(),
            "hash list loaded"
        );
        Ok(Loaded {
            meta,
            index,
            md5,
            sha256,
        })
    }
}
