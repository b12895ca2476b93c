//! One connection type for a single Redis server or a Redis Cluster. Both reconnect by
//! themselves; callers retry transient errors with [`crate::retry`].

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::error::QueueError;

/// Where Redis is: `redis://host:port[/db]` for one server, or
/// `redis+cluster://host:port,host:port,...` for a Cluster (any reachable nodes).
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (or a proxy).
    Single(String),
    /// Cluster seed nodes, as `redis://host:port` URLs.
    Cluster(Vec<String>),
}

/// `url` with any password replaced by `***` (`redis://user:***@host:6379`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let user = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{scheme}://{user}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisTarget::Single(u) => f.debug_tuple("Single").field(&redact_url(u)).finish(),
            RedisTarget::Cluster(us) => f
                .debug_tuple("Cluster")
                .field(&us.iter().map(|u| redact_url(u)).collect::<Vec<_>>())
                .finish(),
        }
    }
}

impl RedisTarget {
    /// Parses a `REDIS_URL`.
    pub fn parse(url: &str) -> Result<Self, QueueError> {
        let url = url.trim();
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let nodes: Vec<String> = rest
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| format!("redis://{s}"))
                .collect();
            if nodes.is_empty() {
                return Err(QueueError::InvalidUrl(
                    "redis+cluster:// needs at least one host:port".into(),
                ));
            }
            Ok(Self::Cluster(nodes))
        } else if url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://") {
            Ok(Self::Single(url.to_owned()))
        } else {
            Err(QueueError::InvalidUrl(format!(
                "{:?}: expected redis://host:port or redis+cluster://host:port,...",
                url.chars().take(80).collect::<String>()
            )))
        }
    }
}

/// A multiplexed, self-reconnecting connection to a server or a Cluster.
#[derive(Clone)]
pub enum RedisConn {
    /// One server.
    Single(ConnectionManager),
    /// A Cluster; commands are routed by key slot.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisConn::Single(_) => f.write_str("RedisConn::Single"),
            RedisConn::Cluster(_) => f.write_str("RedisConn::Cluster"),
        }
    }
}

impl RedisConn {
    /// Connects. `response_timeout` bounds every command; blocking commands need a connection of
    /// their own whose timeout is longer than their block time (see [`RedisConn::connect_blocking`]).
    pub async fn connect(target: &RedisTarget, response_timeout: Option<Duration>) -> Result<Self, QueueError> {
        match target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                let cfg = ConnectionManagerConfig::new()
                    .set_response_timeout(response_timeout)
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_number_of_retries(3)
                    .set_max_delay(Duration::from_secs(2));
                Ok(Self::Single(ConnectionManager::new_with_config(client, cfg).await?))
            }
            RedisTarget::Cluster(nodes) => {
                let mut b = ClusterClient::builder(nodes.clone())
                    .connection_timeout(Duration::from_secs(2))
                    .retries(4);
                if let Some(t) = response_timeout {
                    b = b.response_timeout(t);
                }
                let client = b.build()?;
                Ok(Self::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// A connection for blocking commands (BLPOP), whose replies may take `block` to arrive.
    pub async fn connect_blocking(target: &RedisTarget, block: Duration) -> Result<Self, QueueError> {
        Self::connect(target, Some(block + Duration::from_secs(2))).await
    }

    /// Whether this is a Cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }

    /// `INFO section` of the server (on a Cluster, of whichever node answers): the text,
    /// for benchmarks and diagnostics.
    pub async fn info(&self, section: &str) -> Result<String, QueueError> {
        Ok(redis::cmd("INFO").arg(section).query_async(&mut self.clone()).await?)
    }

    /// One page of `SCAN cursor MATCH pattern COUNT count`: the next cursor (0 when done) and
    /// the keys. `pattern` must name one hash tag (`gantry:{pool}:job:*`), whose keys all
    /// live in one slot: on a Cluster the SCAN runs on the primary that owns it.
    pub async fn scan_page(&self, pattern: &str, cursor: u64, count: usize) -> Result<(u64, Vec<String>), QueueError> {
        let tagged = pattern
            .split_once('{')
            .and_then(|(_, rest)| rest.split_once('}'))
            .is_some_and(|(tag, _)| !tag.is_empty() && !tag.contains(['*', '?', '[']));
        if !tagged {
            return Err(QueueError::Protocol(format!(
                "scan pattern {pattern:?} names no hash tag"
            )));
        }
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(count);
        match self {
            RedisConn::Single(c) => Ok(cmd.query_async(&mut c.clone()).await?),
            RedisConn::Cluster(c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(pattern, SlotAddr::Master);
                let v = c
                    .clone()
                    .route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)))
                    .await?;
                redis::from_redis_value(v).map_err(|e| QueueError::Protocol(format!("SCAN reply: {e}")))
            }
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_cluster_urls() {
        assert_eq!(
            RedisTarget::parse("redis://127.0.0.1:6400").ok(),
            Some(RedisTarget::Single("redis://127.0.0.1:6400".into()))
        );
        assert_eq!(
            RedisTarget::parse("redis+cluster://10.0.0.1:7000, 10.0.0.2:7000").ok(),
            Some(RedisTarget::Cluster(vec![
                "redis://10.0.0.1:7000".into(),
                "redis://10.0.0.2:7000".into()
            ]))
        );
        assert!(RedisTarget::parse("redis+cluster://").is_err());
        assert!(RedisTarget::parse("http://example").is_err());
    }

    #[test]
    fn debug_output_never_holds_a_password() {
        let t = RedisTarget::parse("redis://app:s3cret-pw@redis.internal:6379/2").expect("parses");
        let d = format!("{t:?}");
        assert!(
            !d.contains("s3cret-pw") && d.contains("app:***@redis.internal:6379/2"),
            "{d}"
        );
        let t = RedisTarget::parse("redis+cluster://:s3cret-pw@a:7000,:s3cret-pw@b:7001").expect("parses");
        assert!(!format!("{t:?}").contains("s3cret-pw"), "{t:?}");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact_url("redis://tok@h:6379"), "redis://***@h:6379");
    }
}
