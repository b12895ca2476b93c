//! Job outputs in an object store (the `object_store` crate): a local directory by default, S3
//! (or an S3-compatible store) by URL with credentials from the environment.
//!
//! Every output has a deterministic key, `jobs/<tenant>/<user key>/<job id>/<name>`, so a
//! retried attempt overwrites its earlier output instead of leaving a duplicate. The job's
//! result records the key, size, content type and SHA-256. The user key
//! ([`gantry_core::user_key`]) is pseudonymous: the user id appears in no object key, yet
//! everything a user's jobs produced lies under one folder, which an erasure deletes whole,
//! long after the job records themselves have expired.

pub mod sealed;

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use gantry_core::{JobSpec, ResultRef};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt, PutOptions, PutPayload};
use sha2::{Digest, Sha256};

/// What can go wrong with outputs.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The store URL is not usable.
    #[error("invalid output store {url:?}: {reason}")]
    InvalidUrl {
        /// The URL (never with credentials: those come from the environment).
        url: String,
        /// Why.
        reason: String,
    },
    /// An output name that could escape the job's folder or is empty.
    #[error("invalid output name {0:?} (1-128 characters of A-Z, a-z, 0-9, '.', '-', '_')")]
    InvalidName(String),
    /// The store failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// A sealed output that cannot be opened (no data keys, another key, damaged), or sealing
    /// failed.
    #[error("sealed output: {0}")]
    Sealed(String),
    /// An object larger than the caller accepts.
    #[error("the object is larger than {max} bytes")]
    TooLarge {
        /// The limit.
        max: u64,
    },
    /// The store named by a URL could not be opened.
    #[error("cannot open the output store {url:?}: {source}")]
    Open {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The local copy could not be written.
    #[error("scratch space: {0}")]
    Scratch(#[from] std::io::Error),
}

impl OutputError {
    /// Whether the object (or the name asked for) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Self::Store(object_store::Error::NotFound { .. }) | Self::InvalidName(_)
        )
    }
}

/// What one retention sweep of the store found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Objects looked at.
    pub scanned: u64,
    /// Objects written before the cutoff: removed, unless it was a dry run.
    pub expired: u64,
    /// Their bytes.
    pub expired_bytes: u64,
    /// When the oldest object kept was written (ms since the epoch).
    pub oldest_kept_ms: Option<i64>,
    /// Of the expired objects, users' data export archives (kept by their own cutoff).
    pub exports_expired: u64,
    /// Export archives looked at.
    pub exports_scanned: u64,
}

/// The name of a user's data export archive among its export job's outputs: swept by its own
/// (shorter) retention.
pub const EXPORT_ARCHIVE: &str = "export.tar";

/// Outputs up to this size are written in one request; larger ones in parts of this size
/// (S3 wants parts of at least 5 MiB).
pub const SINGLE_PUT_BYTES: usize = 8 << 20;
/// Parts of one multipart upload sent at the same time.
pub const PARTS_IN_FLIGHT: usize = 4;

/// A byte range of an output, as an HTTP `Range: bytes=…` header asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `a-`: from `a` to the end.
    From(u64),
    /// `a-b`: from `a` to `b`, inclusive.
    FromTo(u64, u64),
    /// `-n`: the last `n` bytes.
    Last(u64),
}

impl ByteRange {
    /// The half-open range it names in an object of `size` bytes, clamped to the object; `None`
    /// when it cannot be satisfied (starts past the end, or asks for nothing).
    pub fn resolve(self, size: u64) -> Option<std::ops::Range<u64>> {
        let r = match self {
            Self::From(a) => a..size,
            Self::FromTo(a, b) if b >= a => a..b.saturating_add(1).min(size),
            Self::FromTo(..) => return None,
            Self::Last(n) => size.saturating_sub(n)..size,
        };
        (r.start < size && r.start < r.end).then_some(r)
    }
}

/// An output being read: what to answer with, and its bytes as a stream.
pub struct OutputObject {
    /// The whole object's size.
    pub size: u64,
    /// The store's entity tag, when it gives one.
    pub etag: Option<String>,
    /// Its content type (kept by the store, or from its name's extension).
    pub content_type: String,
    /// The bytes served: the whole object, or the range asked for.
    pub range: std::ops::Range<u64>,
    /// Those bytes.
    pub body: futures::stream::BoxStream<'static, Result<Bytes, OutputError>>,
}

impl std::fmt::Debug for OutputObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputObject")
            .field("size", &self.size)
            .field("etag", &self.etag)
            .field("content_type", &self.content_type)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// What reading an output found.
#[derive(Debug)]
pub enum OutputRead {
    /// The object (or the range of it asked for).
    Found(OutputObject),
    /// The range asked for lies outside the object of `size` bytes.
    Unsatisfiable {
        /// The object's size.
        size: u64,
    },
}

/// The content type a file's name suggests (for stores that keep no attributes).
pub fn content_type_of(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Where a worker writes outputs.
#[derive(Clone)]
pub struct OutputStore {
    store: Arc<dyn ObjectStore>,
    /// The S3 store again (unprefixed), and the prefix under which `store` keeps objects, to
    /// sign download URLs with (`None` elsewhere).
    signer: Option<(Arc<object_store::aws::AmazonS3>, Path)>,
    /// Whether the store keeps attributes such as the content type (local directories do not).
    attributes: bool,
    description: String,
    /// The data key ring outputs are sealed with ([`sealed`]); `None`: stored as they are.
    keys: Option<Arc<dyn gantry_core::KeyWrap>>,
}

impl std::fmt::Debug for OutputStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputStore").field("store", &self.description).finish()
    }
}

impl OutputStore {
    /// Opens a store by URL: a directory path or `file:///dir` (created if missing),
    /// `s3://bucket[/prefix]` (region, endpoint and credentials from `AWS_*` variables), or
    /// `memory://` (tests).
    pub fn open(url: &str) -> Result<Self, OutputError> {
        let invalid = |reason: String| OutputError::InvalidUrl {
            url: url.chars().take(200).collect(),
            reason,
        };
        let opening = |source: Box<dyn std::error::Error + Send + Sync>| OutputError::Open {
            url: url.chars().take(200).collect(),
            source,
        };
        if url == "memory://" {
            return Ok(Self {
                store: Arc::new(InMemory::new()),
                signer: None,
                attributes: true,
                description: "memory".into(),
                keys: None,
            });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            if rest.split('/').next().unwrap_or_default().is_empty() {
                return Err(invalid("s3:// needs a bucket".into()));
            }
            let s3 = AmazonS3Builder::from_env()
                .with_url(url)
                .build()
                .map_err(|e| opening(Box::new(e)))?;
            let s3 = Arc::new(s3);
            // `s3://bucket/prefix`: the builder takes the bucket alone; keys live under the
            // prefix, as they would under a directory.
            let prefix = Path::from(rest.split_once('/').map_or("", |(_, p)| p));
            let store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
                s3.clone()
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(s3.clone(), prefix.clone()))
            };
            return Ok(Self {
                store,
                signer: Some((s3, prefix)),
                attributes: true,
                description: format!("s3://{rest}"),
                keys: None,
            });
        }
        let dir = url.strip_prefix("file://").unwrap_or(url);
        if dir.is_empty() || dir.contains("://") {
            return Err(invalid(
                "expected a directory, file:///dir, s3://bucket or memory://".into(),
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| opening(Box::new(e)))?;
        // Deleting an object also removes the folders it leaves empty, so an erased user's or
        // job's folder does not outlive its files.
        let local = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| opening(Box::new(e)))?
            .with_automatic_cleanup(true);
        Ok(Self {
            store: Arc::new(local),
            signer: None,
            attributes: false,
            description: format!("dir {dir}"),
            keys: None,
        })
    }

    /// The same store sealing every output it writes with `keys` (the fleet's data key ring),
    /// and opening sealed ones as it reads them; `None` leaves outputs as they are. A sealed
    /// store signs no download URLs: a URL would hand out the sealed bytes.
    pub fn with_keys<K: gantry_core::KeyWrap + 'static>(mut self, keys: Option<K>) -> Self {
        if keys.is_some() {
            self.signer = None;
        }
        self.keys = keys.map(|k| Arc::new(k) as Arc<dyn gantry_core::KeyWrap>);
        self
    }

    /// Whether outputs written are sealed.
    pub fn seals(&self) -> bool {
        self.keys.is_some()
    }

    /// The sidecar holding the wrapped data key of the object at `key`.
    fn sidecar(key: &Path) -> Path {
        std::iter::once(object_store::path::PathPart::from(sealed::KEYS_PREFIX))
            .chain(key.parts())
            .collect()
    }

    /// The data key of the object at `key`, if it is sealed. A store that does not seal looks
    /// for no sidecar (no extra round trip per read): it refuses what is sealed by its first
    /// bytes instead ([`Self::open_object`]).
    async fn data_key(&self, key: &Path) -> Result<Option<sealed::DataKey>, OutputError> {
        let Some(ring) = self.keys.as_deref() else {
            return Ok(None);
        };
        let raw = match self.store.get(&Self::sidecar(key)).await {
            Ok(g) => g.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let record: sealed::KeyRecord = serde_json::from_slice(&raw)
            .map_err(|e| OutputError::Sealed(format!("the data key's record of {key} is damaged: {e}")))?;
        sealed::open_key(ring, key.as_ref(), &record).map(Some)
    }

    /// A fresh data key for the object at `key`, its sidecar written first (an object is never
    /// stored sealed without the key that opens it); `None` when outputs are not sealed.
    async fn new_data_key(&self, key: &Path) -> Result<Option<sealed::DataKey>, OutputError> {
        let Some(ring) = self.keys.as_deref() else {
            return Ok(None);
        };
        let (dk, record) = sealed::new_key(ring, key.as_ref())?;
        let json = serde_json::to_vec(&record).map_err(|e| OutputError::Sealed(e.to_string()))?;
        self.store.put(&Self::sidecar(key), PutPayload::from(json)).await?;
        Ok(Some(dk))
    }

    /// Re-wraps every sealed output's data key with the ring's current key (after a rotation),
    /// without touching any content. Returns (sidecars seen, re-wrapped).
    pub async fn rewrap_keys(&self) -> Result<(u64, u64), OutputError> {
        let ring = self
            .keys
            .as_deref()
            .ok_or_else(|| OutputError::Sealed("no data keys (GANTRY_DATA_KEYS) to re-wrap with".into()))?;
        let prefix = Path::from(sealed::KEYS_PREFIX);
        let sidecars: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        let (mut seen, mut rewrapped) = (0, 0);
        for o in sidecars {
            seen += 1;
            let object: Path = o.location.parts().skip(1).collect();
            let raw = self.store.get(&o.location).await?.bytes().await?;
            let record: sealed::KeyRecord = serde_json::from_slice(&raw)
                .map_err(|e| OutputError::Sealed(format!("the data key's record of {object} is damaged: {e}")))?;
            if let Some(again) = sealed::rewrap(ring, object.as_ref(), &record)? {
                let json = serde_json::to_vec(&again).map_err(|e| OutputError::Sealed(e.to_string()))?;
                self.store.put(&o.location, PutPayload::from(json)).await?;
                rewrapped += 1;
            }
        }
        Ok((seen, rewrapped))
    }

    /// Deletes the sidecar of the object at `key`, if any.
    async fn delete_sidecar(&self, key: &Path) -> Result<(), OutputError> {
        match self.store.delete(&Self::sidecar(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes every object under `folder` and every sidecar under its mirror in `keys/`.
    async fn delete_folder(&self, folder: &Path) -> Result<usize, OutputError> {
        let objects: Vec<_> = self.store.list(Some(folder)).try_collect().await?;
        for o in &objects {
            match self.store.delete(&o.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let sidecars: Vec<_> = self.store.list(Some(&Self::sidecar(folder))).try_collect().await?;
        for o in &sidecars {
            match self.store.delete(&o.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(objects.len())
    }

    /// The deterministic key of output `name` of a job.
    pub fn key(job: &JobSpec, name: &str) -> Result<Path, OutputError> {
        let ok = !name.is_empty()
            && name.len() <= 128
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !ok {
            return Err(OutputError::InvalidName(name.chars().take(64).collect()));
        }
        // Path parts are percent-encoded, so no tenant id can add or climb a folder.
        Ok(Self::job_folder(job).join(name))
    }

    /// An object's attributes: its content type, where the store keeps attributes.
    fn attributes_for(&self, content_type: &str) -> Attributes {
        let mut a = Attributes::new();
        if self.attributes {
            a.insert(Attribute::ContentType, content_type.to_owned().into());
        }
        a
    }

    /// Writes (or overwrites) an output and describes it for the job's result.
    #[tracing::instrument(name = "store.put", skip_all, fields(name = %name, bytes = bytes.len()))]
    pub async fn put(
        &self,
        job: &JobSpec,
        name: &str,
        bytes: Bytes,
        content_type: &str,
    ) -> Result<ResultRef, OutputError> {
        let key = Self::key(job, name)?;
        self.put_at(&key, bytes, content_type).await
    }

    /// Writes (or overwrites) the object at `key`, whatever its folder (the quarantine's
    /// evidence, which no job owns).
    async fn put_at(&self, key: &Path, bytes: Bytes, content_type: &str) -> Result<ResultRef, OutputError> {
        let sha256 = sha256_hex(&bytes);
        let size_bytes = bytes.len() as u64;
        let opts = PutOptions {
            attributes: self.attributes_for(content_type),
            ..Default::default()
        };
        let bytes = match self.new_data_key(key).await? {
            Some(dk) => Bytes::from(dk.seal_all(&bytes)?),
            None => bytes,
        };
        self.store.put_opts(key, PutPayload::from(bytes), opts).await?;
        Ok(ResultRef {
            object_key: key.to_string(),
            size_bytes,
            content_type: content_type.to_owned(),
            sha256,
            details: Default::default(),
        })
    }

    /// Writes (or overwrites) an output from the local file `path` and describes it. Files
    /// up to [`SINGLE_PUT_BYTES`] go up in one request; larger ones (videos) stream in parts
    /// of that size, at most [`PARTS_IN_FLIGHT`] at a time, digested as they are read, so an
    /// output never sits in memory whole. A failed upload is aborted, leaving nothing.
    #[tracing::instrument(name = "store.put_file", skip_all, fields(name = %name))]
    pub async fn put_file(
        &self,
        job: &JobSpec,
        name: &str,
        path: &std::path::Path,
        content_type: &str,
    ) -> Result<ResultRef, OutputError> {
        let key = Self::key(job, name)?;
        self.put_file_at(&key, path, content_type).await
    }

    /// Writes the object at `key` from the local file `path`, as [`Self::put_file`] does.
    async fn put_file_at(
        &self,
        key: &Path,
        path: &std::path::Path,
        content_type: &str,
    ) -> Result<ResultRef, OutputError> {
        use tokio::io::AsyncReadExt;
        let key = key.clone();
        let mut file = tokio::fs::File::open(path).await?;
        let len = file.metadata().await?.len();
        if len <= SINGLE_PUT_BYTES as u64 {
            let mut bytes = Vec::with_capacity(len as usize);
            file.read_to_end(&mut bytes).await?;
            return self.put_at(&key, Bytes::from(bytes), content_type).await;
        }
        let opts = object_store::PutMultipartOptions {
            attributes: self.attributes_for(content_type),
            ..Default::default()
        };
        let dk = self.new_data_key(&key).await?;
        let upload = self.store.put_multipart_opts(&key, opts).await?;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, SINGLE_PUT_BYTES);
        let mut hasher = Sha256::new();
        let mut size_bytes = 0u64;
        let streamed: Result<(), OutputError> = async {
            if let Some(dk) = &dk {
                // Sealed piece by piece; a piece is the last when nothing follows it.
                writer.write(sealed::MAGIC);
                let mut cur = read_piece(&mut file).await?;
                let mut index = 0u64;
                loop {
                    let next = if cur.len() as u64 == sealed::PIECE {
                        read_piece(&mut file).await?
                    } else {
                        Vec::new()
                    };
                    let last = next.is_empty();
                    hasher.update(&cur);
                    size_bytes += cur.len() as u64;
                    let piece = dk.seal_piece(index, last, &cur)?;
                    writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                    writer.write(&piece);
                    if last {
                        return Ok(());
                    }
                    cur = next;
                    index += 1;
                }
            }
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                hasher.update(&buf[..n]);
                size_bytes += n as u64;
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                writer.write(&buf[..n]);
            }
        }
        .await;
        if let Err(e) = streamed {
            // Best effort: the store may already have given up on the upload.
            let _ = writer.abort().await;
            return Err(e);
        }
        writer.finish().await?;
        Ok(ResultRef {
            object_key: key.to_string(),
            size_bytes,
            content_type: content_type.to_owned(),
            sha256: hex(&hasher.finalize()),
            details: Default::default(),
        })
    }

    /// Reads output `name` of `job` (or `range` of it) as a stream, with what an HTTP answer
    /// needs: size, entity tag, content type. The name is checked as [`Self::key`] checks it.
    #[tracing::instrument(name = "store.read", skip_all, fields(name = %name))]
    pub async fn read(&self, job: &JobSpec, name: &str, range: Option<ByteRange>) -> Result<OutputRead, OutputError> {
        use futures::StreamExt;
        let key = Self::key(job, name)?;
        let head = self
            .store
            .get_opts(
                &key,
                object_store::GetOptions {
                    head: true,
                    ..Default::default()
                },
            )
            .await?;
        let stored = head.meta.size;
        let dk = self.data_key(&key).await?;
        let size = match &dk {
            Some(_) => sealed::plain_len(stored)
                .ok_or_else(|| OutputError::Sealed(format!("{key}: not a sealed output's size")))?,
            None => stored,
        };
        let etag = head.meta.e_tag.clone();
        let content_type = head
            .attributes
            .get(&Attribute::ContentType)
            .map(|v| v.to_string())
            .unwrap_or_else(|| content_type_of(name).to_owned());
        let wanted = match range {
            None => 0..size,
            Some(r) => match r.resolve(size) {
                Some(r) => r,
                None => return Ok(OutputRead::Unsatisfiable { size }),
            },
        };
        let body = if wanted.is_empty() {
            futures::stream::empty().boxed()
        } else {
            // A sealed object is read by the pieces the range covers.
            let stored_range = match &dk {
                Some(_) => pieces_range(&wanted, stored),
                None => wanted.clone(),
            };
            let got = self
                .store
                .get_opts(
                    &key,
                    object_store::GetOptions {
                        range: Some(object_store::GetRange::Bounded(stored_range)),
                        // The same object as the head, or an error rather than mixed bytes.
                        if_match: etag.clone(),
                        ..Default::default()
                    },
                )
                .await?;
            let raw = got.into_stream().map(|c| c.map_err(OutputError::from)).boxed();
            match dk {
                Some(dk) => open_stream(dk, raw, stored, wanted.clone(), 0),
                None => raw,
            }
        };
        Ok(OutputRead::Found(OutputObject {
            size,
            etag,
            content_type,
            range: wanted,
            body,
        }))
    }

    /// A pre-signed `GET` URL for output `name` of `job`, valid for `expires`, when the store is
    /// S3; `None` for stores that cannot sign.
    pub async fn signed_url(
        &self,
        job: &JobSpec,
        name: &str,
        expires: std::time::Duration,
    ) -> Result<Option<String>, OutputError> {
        use object_store::signer::Signer as _;
        let key = Self::key(job, name)?;
        let Some((s3, prefix)) = &self.signer else {
            return Ok(None);
        };
        if self.keys.is_some() {
            return Ok(None);
        }
        // Only an object that exists gets a URL.
        self.store.head(&key).await?;
        let key: Path = prefix.parts().chain(key.parts()).collect();
        let url = s3.signed_url(object_store::signer::Method::GET, &key, expires).await?;
        Ok(Some(url.to_string()))
    }

    /// An object's bytes as a stream, opened if it is sealed, with its (plaintext) size — at most
    /// `max_bytes`, checked from its announced size before any byte is read.
    async fn open_object(
        &self,
        object_key: &str,
        max_bytes: u64,
    ) -> Result<(u64, futures::stream::BoxStream<'static, Result<Bytes, OutputError>>), OutputError> {
        let key = Path::from(object_key);
        let dk = self.data_key(&key).await?;
        let got = self.store.get(&key).await?;
        let stored = got.meta.size;
        let size = match &dk {
            Some(_) => sealed::plain_len(stored)
                .ok_or_else(|| OutputError::Sealed(format!("{key}: not a sealed output's size")))?,
            None => stored,
        };
        if size > max_bytes {
            return Err(OutputError::TooLarge { max: max_bytes });
        }
        let mut raw = futures::StreamExt::boxed(futures::StreamExt::map(got.into_stream(), |c| {
            c.map_err(OutputError::from)
        }));
        if let Some(dk) = dk {
            return Ok((size, open_stream(dk, raw, stored, 0..size, sealed::MAGIC.len())));
        }
        if self.keys.is_none() && stored >= sealed::MAGIC.len() as u64 {
            // Without keys no sidecar was looked for: a sealed object is known by its start.
            let first = raw.try_next().await?.unwrap_or_default();
            if first.starts_with(sealed::MAGIC) {
                return Err(OutputError::Sealed(format!(
                    "{key} is sealed and this process has no data keys (GANTRY_DATA_KEYS)"
                )));
            }
            raw = futures::StreamExt::boxed(futures::StreamExt::chain(futures::stream::iter([Ok(first)]), raw));
        }
        Ok((size, raw))
    }

    /// Reads an output back (opened, if it is sealed).
    pub async fn get(&self, object_key: &str) -> Result<Bytes, OutputError> {
        self.get_bounded(object_key, u64::MAX).await
    }

    /// Reads an object of at most `max_bytes` into memory (opened, if it is sealed): its
    /// announced size is checked before any byte is read, and the bytes as they come (a store
    /// that announced less).
    #[tracing::instrument(name = "store.get", skip_all)]
    pub async fn get_bounded(&self, object_key: &str, max_bytes: u64) -> Result<Bytes, OutputError> {
        let (size, mut stream) = self.open_object(object_key, max_bytes).await?;
        let mut buf = Vec::with_capacity(usize::try_from(size.min(64 << 20)).unwrap_or(0));
        while let Some(chunk) = stream.try_next().await? {
            if (buf.len() + chunk.len()) as u64 > max_bytes {
                return Err(OutputError::TooLarge { max: max_bytes });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(buf))
    }

    /// Streams an object into the file `to`, chunk by chunk (a video never sits in memory
    /// whole; a sealed one is opened piece by piece), refusing it past `max_bytes` (its
    /// announced size, or the bytes as they come). Returns the bytes written.
    #[tracing::instrument(name = "store.download", skip_all)]
    pub async fn download(&self, object_key: &str, to: &std::path::Path, max_bytes: u64) -> Result<u64, OutputError> {
        use tokio::io::AsyncWriteExt;
        let (_, mut stream) = self.open_object(object_key, max_bytes).await?;
        let mut file = tokio::fs::File::create(to).await?;
        let mut written = 0u64;
        while let Some(chunk) = stream.try_next().await? {
            written += chunk.len() as u64;
            if written > max_bytes {
                return Err(OutputError::TooLarge { max: max_bytes });
            }
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok(written)
    }

    /// Deletes one object (a matched input) and its data key's sidecar. Returns whether it
    /// existed.
    pub async fn delete(&self, object_key: &str) -> Result<bool, OutputError> {
        let key = Path::from(object_key);
        let existed = match self.store.delete(&key).await {
            Ok(()) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        self.delete_sidecar(&key).await?;
        Ok(existed)
    }

    /// Deletes every output and intermediate file of a job (moderation actions, erasure), and
    /// their data keys. Returns how many objects were removed.
    pub async fn delete_job(&self, job: &JobSpec) -> Result<usize, OutputError> {
        self.delete_folder(&Self::job_folder(job)).await
    }

    /// Every object under a job's folder (its outputs and intermediate files), as key and size,
    /// in key order.
    pub async fn list_job(&self, job: &JobSpec) -> Result<Vec<(String, u64)>, OutputError> {
        let objects: Vec<_> = self.store.list(Some(&Self::job_folder(job))).try_collect().await?;
        let mut out: Vec<(String, u64)> = objects.into_iter().map(|o| (o.location.to_string(), o.size)).collect();
        out.sort();
        Ok(out)
    }

    /// Every object under the folder of job `job_id` of `user` of `tenant`, as key and size, in
    /// key order (a reviewer's decision reaches a job by its review record, not its spec).
    pub async fn list_job_of(&self, tenant: &str, user: &str, job_id: &str) -> Result<Vec<(String, u64)>, OutputError> {
        let folder = Self::user_folder(tenant, user).join(job_id);
        let objects: Vec<_> = self.store.list(Some(&folder)).try_collect().await?;
        let mut out: Vec<(String, u64)> = objects.into_iter().map(|o| (o.location.to_string(), o.size)).collect();
        out.sort();
        Ok(out)
    }

    /// Deletes every object of every job of `user` of `tenant` (an erasure request), however
    /// old. Returns how many objects were removed; idempotent.
    pub async fn delete_user(&self, tenant: &str, user: &str) -> Result<usize, OutputError> {
        self.delete_folder(&Self::user_folder(tenant, user)).await
    }

    /// Deletes every job output written before `cutoff_ms` (ms since the epoch), and every
    /// export archive ([`EXPORT_ARCHIVE`]) written before `exports_cutoff_ms`, or with
    /// `dry_run` only counts them: the retention sweep.
    pub async fn sweep(
        &self,
        cutoff_ms: i64,
        exports_cutoff_ms: i64,
        dry_run: bool,
    ) -> Result<SweepReport, OutputError> {
        let mut report = SweepReport::default();
        let mut listing = self.store.list(Some(&Path::from("jobs")));
        let mut expired = Vec::new();
        while let Some(o) = listing.try_next().await? {
            report.scanned += 1;
            let at = o.last_modified.timestamp_millis();
            let export = o.location.filename() == Some(EXPORT_ARCHIVE);
            report.exports_scanned += u64::from(export);
            if at < cutoff_ms || (export && at < exports_cutoff_ms) {
                report.expired += 1;
                report.expired_bytes += o.size;
                report.exports_expired += u64::from(export);
                expired.push(o.location);
            } else {
                report.oldest_kept_ms = Some(report.oldest_kept_ms.map_or(at, |m| m.min(at)));
            }
        }
        drop(listing);
        if !dry_run {
            for location in expired {
                match self.store.delete(&location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                self.delete_sidecar(&location).await?;
            }
        }
        Ok(report)
    }

    /// The quarantine beside this store: the same store under the prefix `quarantine/`, which
    /// no job key, outputs route, erasure or retention sweep of job outputs ever reaches.
    pub fn quarantine_within(&self) -> Quarantine {
        Quarantine {
            store: Self {
                store: Arc::new(object_store::prefix::PrefixStore::new(
                    self.store.clone(),
                    Path::from("quarantine"),
                )),
                signer: None,
                attributes: self.attributes,
                description: format!("{} (prefix quarantine/)", self.description),
                // Evidence is sealed by its keeper, with keys of its own.
                keys: None,
            },
        }
    }

    /// The folder of everything `user` of `tenant` produced.
    fn user_folder(tenant: &str, user: &str) -> Path {
        Path::from_iter(["jobs", tenant, &gantry_core::user_key(tenant, user)])
    }

    fn job_folder(job: &JobSpec) -> Path {
        Self::user_folder(&job.tenant, &job.user).join(job.id.to_string())
    }
}

/// Reads up to one piece of plaintext from `file`.
async fn read_piece(file: &mut tokio::fs::File) -> Result<Vec<u8>, OutputError> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::with_capacity(sealed::PIECE as usize);
    file.take(sealed::PIECE).read_to_end(&mut buf).await?;
    Ok(buf)
}

/// The stored bytes holding the pieces that cover `wanted` (plaintext) of an object of
/// `stored` bytes.
fn pieces_range(wanted: &std::ops::Range<u64>, stored: u64) -> std::ops::Range<u64> {
    let first = wanted.start / sealed::PIECE;
    let last = (wanted.end.max(1) - 1) / sealed::PIECE;
    (4 + first * sealed::SEALED_PIECE)..(4 + (last + 1) * sealed::SEALED_PIECE).min(stored)
}

/// Opens the pieces `raw` streams — those covering `wanted` of a sealed object of `stored`
/// bytes, after `raw_offset` bytes (4, the magic, when `raw` is the whole object; 0 when it
/// starts at the first covering piece) — and yields `wanted` of the plaintext.
fn open_stream(
    dk: sealed::DataKey,
    raw: futures::stream::BoxStream<'static, Result<Bytes, OutputError>>,
    stored: u64,
    wanted: std::ops::Range<u64>,
    raw_offset: usize,
) -> futures::stream::BoxStream<'static, Result<Bytes, OutputError>> {
    use futures::StreamExt as _;
    let plain = sealed::plain_len(stored).unwrap_or(0);
    let last_piece = sealed::pieces_of(plain) - 1;
    let first = wanted.start / sealed::PIECE;
    struct State {
        raw: futures::stream::BoxStream<'static, Result<Bytes, OutputError>>,
        buf: Vec<u8>,
        index: u64,
        /// Bytes to drop before the first piece (the magic, when the whole object comes).
        skip_raw: usize,
        /// Plaintext bytes to drop from the first piece opened.
        skip: u64,
        remaining: u64,
    }
    let skip_raw = raw_offset;
    let st = State {
        raw,
        buf: Vec::new(),
        index: first,
        skip_raw,
        skip: wanted.start - first * sealed::PIECE,
        remaining: wanted.end - wanted.start,
    };
    futures::stream::try_unfold(
        (st, dk, stored, last_piece),
        |(mut st, dk, stored, last_piece)| async move {
            if st.remaining == 0 {
                return Ok(None);
            }
            let last = st.index == last_piece;
            let need = if last {
                (stored - 4 - st.index * sealed::SEALED_PIECE) as usize
            } else {
                sealed::SEALED_PIECE as usize
            };
            while st.buf.len() < st.skip_raw + need {
                match st.raw.next().await {
                    Some(chunk) => st.buf.extend_from_slice(&chunk?),
                    None => return Err(OutputError::Sealed("a sealed output ended early".into())),
                }
            }
            let piece: Vec<u8> = st.buf.drain(..st.skip_raw + need).skip(st.skip_raw).collect();
            st.skip_raw = 0;
            let mut plain = dk.open_piece(st.index, last, &piece)?;
            let skip = (st.skip as usize).min(plain.len());
            plain.drain(..skip);
            st.skip = 0;
            plain.truncate(usize::try_from(st.remaining).unwrap_or(usize::MAX).min(plain.len()));
            st.remaining -= plain.len() as u64;
            st.index += 1;
            Ok(Some((Bytes::from(plain), (st, dk, stored, last_piece))))
        },
    )
    .boxed()
}

/// The store where preserved evidence is kept (sealed by its keeper before it arrives): a
/// store of its own (`--quarantine-store`), or the prefix `quarantine/` of the outputs' store.
/// Objects are named by their keeper, never by a job's folder, and never signed for download.
#[derive(Clone, Debug)]
pub struct Quarantine {
    store: OutputStore,
}

impl Quarantine {
    /// A quarantine of its own, by URL (as [`OutputStore::open`]).
    pub fn open(url: &str) -> Result<Self, OutputError> {
        let mut store = OutputStore::open(url)?;
        store.signer = None;
        store.keys = None;
        Ok(Self { store })
    }

    fn key(name: &str) -> Result<Path, OutputError> {
        let ok = !name.is_empty()
            && name.len() <= 256
            && name.split('/').all(|part| {
                !part.is_empty()
                    && !part.starts_with('.')
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            });
        if ok {
            Ok(Path::from(name))
        } else {
            Err(OutputError::InvalidName(name.chars().take(64).collect()))
        }
    }

    /// Writes the object `name` from the local file `path` (streamed in parts when large).
    pub async fn put_file(&self, name: &str, path: &std::path::Path) -> Result<u64, OutputError> {
        let key = Self::key(name)?;
        Ok(self
            .store
            .put_file_at(&key, path, "application/octet-stream")
            .await?
            .size_bytes)
    }

    /// Streams the object `name` into the local file `to` (at most `max_bytes`).
    pub async fn download(&self, name: &str, to: &std::path::Path, max_bytes: u64) -> Result<u64, OutputError> {
        self.store.download(Self::key(name)?.as_ref(), to, max_bytes).await
    }

    /// Deletes the object `name`; whether it existed.
    pub async fn delete(&self, name: &str) -> Result<bool, OutputError> {
        self.store.delete(Self::key(name)?.as_ref()).await
    }

    /// Whether the object `name` exists.
    pub async fn exists(&self, name: &str) -> Result<bool, OutputError> {
        match self.store.store.head(&Self::key(name)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// Lowercase hex SHA-256 of `bytes` (results, reports, a prompt's hash in logs and records).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of `bytes` (digests).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_core::{JobId, NoopPayload, Payload, Priority, Requirements};

    fn spec(tenant: &str) -> JobSpec {
        JobSpec {
            id: JobId::new(),
            pool: "cpu".into(),
            tenant: tenant.into(),
            user: "u".into(),
            priority: Priority::Normal,
            requirements: Requirements::default(),
            allowed_regions: vec![],
            idempotency_key: None,
            max_attempts: 3,
            timeout_secs: 60,
            scan_outputs: true,
            traceparent: None,
            body: Payload::Noop(NoopPayload::default()),
        }
    }

    async fn collect(o: OutputObject) -> Vec<u8> {
        use futures::TryStreamExt as _;
        let chunks: Vec<Bytes> = o.body.try_collect().await.expect("the bytes");
        chunks.concat()
    }

    #[test]
    fn byte_ranges_resolve_like_http_ranges() {
        assert_eq!(ByteRange::From(2).resolve(10), Some(2..10));
        assert_eq!(ByteRange::FromTo(2, 4).resolve(10), Some(2..5));
        assert_eq!(ByteRange::FromTo(2, 99).resolve(10), Some(2..10), "clamped to the end");
        assert_eq!(ByteRange::Last(3).resolve(10), Some(7..10));
        assert_eq!(ByteRange::Last(30).resolve(10), Some(0..10));
        for unsatisfiable in [
            ByteRange::From(10),
            ByteRange::FromTo(10, 12),
            ByteRange::FromTo(4, 2),
            ByteRange::Last(0),
        ] {
            assert_eq!(unsatisfiable.resolve(10), None, "{unsatisfiable:?}");
        }
    }

    #[tokio::test]
    async fn outputs_read_whole_or_by_range_with_their_type_and_tag() {
        for url in ["memory://", "dir"] {
            let dir = tempfile::tempdir().expect("tmp");
            let url = if url == "dir" {
                dir.path().to_str().expect("utf8")
            } else {
                url
            };
            let store = OutputStore::open(url).expect("open");
            let job = spec("t1");
            store
                .put(&job, "output.png", Bytes::from_static(b"0123456789"), "image/png")
                .await
                .expect("put");
            let OutputRead::Found(whole) = store.read(&job, "output.png", None).await.expect("read") else {
                panic!("found")
            };
            assert_eq!((whole.size, whole.range.clone()), (10, 0..10));
            assert_eq!(whole.content_type, "image/png", "{url}");
            assert!(whole.etag.is_some(), "{url}");
            assert_eq!(collect(whole).await, b"0123456789");
            let OutputRead::Found(part) = store
                .read(&job, "output.png", Some(ByteRange::FromTo(2, 4)))
                .await
                .expect("read")
            else {
                panic!("found")
            };
            assert_eq!(part.range, 2..5);
            assert_eq!(collect(part).await, b"234");
            assert!(matches!(
                store.read(&job, "output.png", Some(ByteRange::From(10))).await,
                Ok(OutputRead::Unsatisfiable { size: 10 })
            ));
            // Another job's (or tenant's) name resolves inside its own folder: not found.
            assert!(matches!(
                store.read(&spec("t2"), "output.png", None).await,
                Err(OutputError::Store(object_store::Error::NotFound { .. }))
            ));
            assert!(matches!(
                store.read(&job, "../output.png", None).await,
                Err(OutputError::InvalidName(_))
            ));
            // Only S3 signs URLs.
            assert_eq!(
                store
                    .signed_url(&job, "output.png", std::time::Duration::from_secs(60))
                    .await
                    .expect("no error"),
                None
            );
        }
    }

    #[tokio::test]
    async fn bounded_reads_refuse_from_the_announced_size() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = OutputStore::open(dir.path().to_str().expect("utf8")).expect("open");
        std::fs::create_dir_all(dir.path().join("inputs/t1")).expect("mkdir");
        // 1 TiB, sparse: reading it would exhaust memory; the size alone refuses it.
        std::fs::File::create(dir.path().join("inputs/t1/huge.png"))
            .and_then(|f| f.set_len(1 << 40))
            .expect("sparse file");
        let e = store.get_bounded("inputs/t1/huge.png", 64 << 20).await;
        assert!(
            matches!(e, Err(OutputError::TooLarge { max }) if max == 64 << 20),
            "{e:?}"
        );
        std::fs::write(dir.path().join("inputs/t1/small.png"), b"12345").expect("write");
        assert_eq!(
            store.get_bounded("inputs/t1/small.png", 5).await.expect("within"),
            Bytes::from_static(b"12345")
        );
        assert!(store.get_bounded("inputs/t1/small.png", 4).await.is_err());
    }

    #[tokio::test]
    async fn a_retry_overwrites_and_the_result_describes_the_bytes() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = OutputStore::open(dir.path().to_str().expect("utf8")).expect("open");
        let job = spec("studio-1");
        let first = store
            .put(&job, "image.png", Bytes::from_static(b"attempt 1"), "image/png")
            .await
            .expect("put");
        let second = store
            .put(&job, "image.png", Bytes::from_static(b"attempt 2!"), "image/png")
            .await
            .expect("put");
        assert_eq!(first.object_key, second.object_key, "deterministic key");
        assert_eq!(second.size_bytes, 10);
        assert_eq!(second.sha256, hex(&Sha256::digest(b"attempt 2!")));
        assert_eq!(
            store.get(&second.object_key).await.expect("get"),
            Bytes::from_static(b"attempt 2!")
        );
        let files: Vec<_> = walk(dir.path());
        assert_eq!(files.len(), 1, "one object, not a duplicate per attempt: {files:?}");
        assert_eq!(store.delete_job(&job).await.expect("delete"), 1);
        assert!(walk(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn files_stream_up_in_parts_and_the_result_describes_the_bytes() {
        let scratch = tempfile::tempdir().expect("tmp");
        // One byte under a part, and two and a half parts (a ragged last part).
        let small: Vec<u8> = (0..SINGLE_PUT_BYTES - 1).map(|i| (i % 251) as u8).collect();
        let large: Vec<u8> = (0..SINGLE_PUT_BYTES * 5 / 2).map(|i| (i % 239) as u8).collect();
        let dir = tempfile::tempdir().expect("tmp");
        for url in [dir.path().to_str().expect("utf8"), "memory://"] {
            let store = OutputStore::open(url).expect("open");
            let job = spec("studio-1");
            for (name, bytes) in [("small.mp4", &small), ("large.mp4", &large)] {
                let path = scratch.path().join(name);
                std::fs::write(&path, bytes).expect("write");
                let r = store.put_file(&job, name, &path, "video/mp4").await.expect("put_file");
                assert_eq!(r.size_bytes, bytes.len() as u64, "{url} {name}");
                assert_eq!(r.sha256, sha256_hex(bytes), "{url} {name}");
                assert_eq!(r.object_key, OutputStore::key(&job, name).expect("key").to_string());
                let back = store.get(&r.object_key).await.expect("get");
                assert!(
                    back.as_ref() == bytes.as_slice(),
                    "{url} {name}: the stored bytes differ"
                );
            }
            assert!(matches!(
                store
                    .put_file(&job, "gone.mp4", &scratch.path().join("gone.mp4"), "video/mp4")
                    .await,
                Err(OutputError::Scratch(_))
            ));
        }
    }

    #[tokio::test]
    async fn names_and_tenants_cannot_escape_the_job_folder() {
        let store = OutputStore::open("memory://").expect("memory");
        let job = spec("../../etc");
        for bad in ["", "../x", "a/b", ".hidden", &"x".repeat(129)] {
            assert!(
                matches!(OutputStore::key(&job, bad), Err(OutputError::InvalidName(_))),
                "{bad:?}"
            );
        }
        let r = store
            .put(&job, "out.mp4", Bytes::from_static(b"v"), "video/mp4")
            .await
            .expect("put");
        assert!(r.object_key.starts_with("jobs/"), "{}", r.object_key);
        assert_eq!(
            r.object_key.split('/').count(),
            5,
            "tenant stays one path part: {}",
            r.object_key
        );
        assert!(matches!(
            OutputStore::open("ftp://x"),
            Err(OutputError::InvalidUrl { .. })
        ));
        assert!(matches!(
            OutputStore::open("s3://"),
            Err(OutputError::InvalidUrl { .. })
        ));
    }

    #[tokio::test]
    async fn a_sweep_removes_what_was_written_before_the_cutoff() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = OutputStore::open(dir.path().to_str().expect("utf8")).expect("open");
        let (old, new) = (spec("studio-1"), spec("studio-1"));
        store
            .put(&old, "a.png", Bytes::from_static(b"old"), "image/png")
            .await
            .expect("put");
        store
            .put(&old, "b.png", Bytes::from_static(b"old!"), "image/png")
            .await
            .expect("put");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let cutoff = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        store
            .put(&new, "c.png", Bytes::from_static(b"new"), "image/png")
            .await
            .expect("put");
        let dry = store.sweep(cutoff, i64::MIN, true).await.expect("dry run");
        assert_eq!((dry.scanned, dry.expired, dry.expired_bytes), (3, 2, 7));
        assert!(dry.oldest_kept_ms.is_some_and(|t| t >= cutoff));
        assert_eq!(walk(dir.path()).len(), 3, "a dry run removes nothing");
        let r = store.sweep(cutoff, i64::MIN, false).await.expect("sweep");
        assert_eq!(r.expired, 2);
        assert!(store.list_job(&old).await.expect("list").is_empty());
        assert_eq!(store.list_job(&new).await.expect("list").len(), 1);
        assert_eq!(store.sweep(cutoff, i64::MIN, false).await.expect("again").expired, 0);
    }

    #[tokio::test]
    async fn an_export_archive_is_swept_by_its_own_shorter_cutoff() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = OutputStore::open(dir.path().to_str().expect("utf8")).expect("open");
        let export = spec("studio-1");
        let other = spec("studio-1");
        store
            .put(&export, EXPORT_ARCHIVE, Bytes::from_static(b"tar"), "application/x-tar")
            .await
            .expect("put");
        store
            .put(&other, "out.png", Bytes::from_static(b"png"), "image/png")
            .await
            .expect("put");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64;
        // Outputs are kept (their cutoff is long past); archives are due (theirs is ahead).
        let dry = store
            .sweep(now - 86_400_000, now + 60_000, true)
            .await
            .expect("dry run");
        assert_eq!((dry.scanned, dry.expired, dry.exports_expired), (2, 1, 1));
        let r = store.sweep(now - 86_400_000, now + 60_000, false).await.expect("sweep");
        assert_eq!((r.expired, r.exports_expired), (1, 1));
        assert!(store.list_job(&export).await.expect("list").is_empty());
        assert_eq!(store.list_job(&other).await.expect("list").len(), 1);
    }

    #[tokio::test]
    async fn a_user_folder_holds_every_job_of_that_user_and_no_other() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = OutputStore::open(dir.path().to_str().expect("utf8")).expect("open");
        let mut a1 = spec("studio-1");
        a1.user = "alice".into();
        let mut a2 = spec("studio-1");
        a2.user = "alice".into();
        let mut b = spec("studio-1");
        b.user = "bob".into();
        let mut other_tenant = spec("studio-2");
        other_tenant.user = "alice".into();
        for j in [&a1, &a2, &b, &other_tenant] {
            let r = store
                .put(j, "out.png", Bytes::from_static(b"x"), "image/png")
                .await
                .expect("put");
            assert!(!r.object_key.contains(&j.user), "no user id in {}", r.object_key);
        }
        assert_eq!(store.delete_user("studio-1", "alice").await.expect("erase"), 2);
        assert_eq!(
            store.delete_user("studio-1", "alice").await.expect("again"),
            0,
            "idempotent"
        );
        assert!(store.list_job(&a1).await.expect("list").is_empty());
        assert!(store.list_job(&a2).await.expect("list").is_empty());
        assert_eq!(store.list_job(&b).await.expect("list").len(), 1);
        assert_eq!(store.list_job(&other_tenant).await.expect("list").len(), 1);
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    fn ring(text: &str) -> gantry_queue::seal::Keyring {
        gantry_queue::seal::Keyring::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn key(byte: u8) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    }

    fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out
    }

    async fn body(r: OutputRead) -> Vec<u8> {
        let OutputRead::Found(o) = r else {
            panic!("unsatisfiable")
        };
        let chunks: Vec<Bytes> = o.body.try_collect().await.unwrap_or_else(|e| panic!("{e}"));
        chunks.concat()
    }

    #[tokio::test]
    async fn sealed_outputs_read_back_whole_and_by_range_and_rotation_rewraps_only_their_keys() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = dir.path().to_str().unwrap_or_default();
        let store = OutputStore::open(root)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_keys(Some(ring(&format!("k1={}", key(1)))));
        let job = spec("acme");
        // Small (one put) and large (multipart, over SINGLE_PUT_BYTES) outputs.
        let small: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let large: Vec<u8> = (0..(SINGLE_PUT_BYTES as u32 + 70_001))
            .map(|i| (i % 241) as u8)
            .collect();
        let r = store
            .put(
                &job,
                "small.bin",
                Bytes::from(small.clone()),
                "application/octet-stream",
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (r.size_bytes, r.sha256.clone()),
            (small.len() as u64, sha256_hex(&small))
        );
        let src = dir.path().join("large.src");
        std::fs::write(&src, &large).unwrap_or_else(|e| panic!("{e}"));
        let r = store
            .put_file(&job, "large.bin", &src, "application/octet-stream")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (r.size_bytes, r.sha256.clone()),
            (large.len() as u64, sha256_hex(&large))
        );
        // In the store: sealed, no plaintext, a sidecar each.
        let stored: Vec<_> = files_under(&dir.path().join("jobs"));
        assert_eq!(stored.len(), 2);
        for p in &stored {
            let raw = std::fs::read(p).unwrap_or_default();
            assert!(raw.starts_with(sealed::MAGIC), "{}", p.display());
            assert!(
                !raw.windows(4096)
                    .any(|w| w == &small[1000..5096] || w == &large[1000..5096])
            );
        }
        assert_eq!(files_under(&dir.path().join("keys")).len(), 2);
        // Read back whole, by ranges across pieces, downloaded.
        assert_eq!(store.get(&r.object_key).await.unwrap_or_default().to_vec(), large);
        for range in [
            ByteRange::FromTo(0, 0),
            ByteRange::FromTo(65_530, 65_545),
            ByteRange::FromTo(100, 300_000),
            ByteRange::From(large.len() as u64 - 10),
            ByteRange::Last(70_000),
        ] {
            let want = range.resolve(large.len() as u64).unwrap_or(0..0);
            let got = body(
                store
                    .read(&job, "large.bin", Some(range))
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
            )
            .await;
            assert_eq!(got, &large[want.start as usize..want.end as usize], "{range:?}");
        }
        let OutputRead::Found(o) = store
            .read(&job, "small.bin", None)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
        else {
            panic!("found")
        };
        assert_eq!(o.size, small.len() as u64);
        let to = dir.path().join("small.out");
        assert_eq!(
            store
                .download(
                    &format!(
                        "{}",
                        OutputStore::key(&job, "small.bin").unwrap_or_else(|e| panic!("{e}"))
                    ),
                    &to,
                    u64::MAX
                )
                .await
                .unwrap_or(0),
            small.len() as u64
        );
        assert_eq!(std::fs::read(&to).unwrap_or_default(), small);
        // Without the key: unreadable.
        let keyless = OutputStore::open(root).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(keyless.get(&r.object_key).await, Err(OutputError::Sealed(_))));
        // Rotation: the sidecars re-wrapped by the new key, the content untouched.
        let before: Vec<Vec<u8>> = stored.iter().map(|p| std::fs::read(p).unwrap_or_default()).collect();
        let rotated = OutputStore::open(root)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_keys(Some(ring(&format!("k2={}, k1={}", key(2), key(1)))));
        assert_eq!(rotated.rewrap_keys().await.unwrap_or_default(), (2, 2));
        assert_eq!(rotated.rewrap_keys().await.unwrap_or_default(), (2, 0));
        let after: Vec<Vec<u8>> = stored.iter().map(|p| std::fs::read(p).unwrap_or_default()).collect();
        assert_eq!(before, after, "no content re-encrypted");
        let only_new = OutputStore::open(root)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_keys(Some(ring(&format!("k2={}", key(2)))));
        assert_eq!(only_new.get(&r.object_key).await.unwrap_or_default().to_vec(), large);
        // Deleting the user's data takes the sidecars too.
        assert_eq!(only_new.delete_user("acme", "u").await.unwrap_or(0), 2);
        assert!(files_under(&dir.path().join("keys")).is_empty());
    }
}
