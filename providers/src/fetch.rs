//! Reference images named by URL, fetched by the fleet itself before any provider sees the
//! job, so that a user's URL can neither reach into our network (SSRF) nor travel, signed, to
//! a third party: providers receive the verified bytes as a `data:` URI instead.
//!
//! Every hop is checked: the scheme (http or https), then the host's addresses after DNS
//! resolution — loopback, private, link-local (cloud metadata at 169.254.169.254 among them),
//! carrier-grade NAT, multicast, documentation and other special ranges are refused, IPv4
//! inside IPv6 (mapped, NAT64) included — and the connection goes to exactly the addresses
//! checked (no second lookup an attacker's DNS could answer differently). Redirects are
//! followed by hand, each target checked the same way, at most `max_redirects`. No proxy from
//! the environment is used. The body is read under `max_bytes`, the whole fetch under
//! `timeout`, and the bytes must decode as an image within the pixel limit. Errors name the
//! reference by position and host, never by URL (URLs may carry signatures).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use reqwest::Url;

use crate::media::{MediaLimits, verify};

/// Limits of the fetcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchConfig {
    /// Largest reference image, in bytes (default 20 MiB).
    pub max_bytes: usize,
    /// Largest total of one job's references, in bytes (default 64 MiB).
    pub max_total_bytes: usize,
    /// Time allowed for one reference, redirects included (default 20 s).
    pub timeout: Duration,
    /// Redirects followed (default 5).
    pub max_redirects: usize,
    /// Addresses allowed although special (tests and local development only: a mock server
    /// on loopback). Empty in production.
    pub allow: Vec<SocketAddr>,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            max_bytes: crate::media::MAX_REFERENCE_BYTES,
            max_total_bytes: 64 << 20,
            timeout: Duration::from_secs(20),
            max_redirects: 5,
            allow: Vec::new(),
        }
    }
}

/// Why a reference could not be fetched. Messages name the reference's position and host only.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    /// Not an http(s) URL or a `data:` URI.
    #[error("reference image {0}: only http(s) URLs, data: URIs and the tenant's own object keys are accepted")]
    Scheme(usize),
    /// The URL does not parse or has no host.
    #[error("reference image {0}: not a valid URL")]
    BadUrl(usize),
    /// The host is, or resolves to, an address the fleet never connects to.
    #[error("reference image {index}: {host} is a {class} address; refused")]
    Forbidden {
        /// Position in the job's list (1-based).
        index: usize,
        /// The host as named.
        host: String,
        /// What kind of address (`loopback`, `private`, `link-local`, ...).
        class: &'static str,
    },
    /// The host has no address.
    #[error("reference image {index}: {host} does not resolve")]
    Unresolvable {
        /// Position.
        index: usize,
        /// Host.
        host: String,
    },
    /// Too many redirects, or one without a usable target.
    #[error("reference image {0}: too many or broken redirects")]
    Redirects(usize),
    /// Over the size limit.
    #[error("reference image {index}: larger than {max} bytes")]
    TooLarge {
        /// Position.
        index: usize,
        /// The limit.
        max: usize,
    },
    /// The server answered with an error status.
    #[error("reference image {index}: HTTP {status} from {host}")]
    Status {
        /// Position.
        index: usize,
        /// Host.
        host: String,
        /// Status.
        status: u16,
    },
    /// Timed out or the connection failed.
    #[error("reference image {index}: {host} unreachable ({reason})")]
    Unreachable {
        /// Position.
        index: usize,
        /// Host.
        host: String,
        /// Why, without the URL.
        reason: String,
    },
    /// The bytes are not an image within the limits.
    #[error("reference image {index}: {reason}")]
    NotAnImage {
        /// Position.
        index: usize,
        /// Why.
        reason: String,
    },
}

impl FetchError {
    /// Whether trying again later may help (server errors, timeouts); everything else is the
    /// request's fault.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Unreachable { .. } => true,
            FetchError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }
}

/// Why an address is refused, or `None` if it is public unicast.
pub fn special_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified",
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => "private",
        (100, 64..=127, _) => "carrier-grade NAT",
        (127, _, _) => "loopback",
        (169, 254, _) => "link-local (cloud metadata)",
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) | (198, 18..=19, _) => "reserved",
        (192, 88, 99) => "reserved",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_v4(v4).or(Some("IPv4-mapped"));
    }
    let s = ip.segments();
    Some(match s {
        [0, 0, 0, 0, 0, 0, 0, 0] => "unspecified",
        [0, 0, 0, 0, 0, 0, 0, 1] => "loopback",
        // IPv4-compatible (deprecated) and NAT64: the IPv4 inside decides, and is refused
        // when special.
        [0, 0, 0, 0, 0, 0, _, _] => "IPv4-compatible",
        // IPv4-translated (SIIT, ::ffff:0:a.b.c.d): never a public destination.
        [0, 0, 0, 0, 0xffff, 0, _, _] => "IPv4-translated",
        // NAT64's local-use prefix (RFC 8215): a translator inside some network.
        [0x64, 0xff9b, 1, ..] => "NAT64 (local use)",
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
            let v4 = Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
            return special_v4(v4);
        }
        [x, ..] if x & 0xfe00 == 0xfc00 => "private (unique local)",
        [x, ..] if x & 0xffc0 == 0xfe80 => "link-local",
        [x, ..] if x & 0xffc0 == 0xfec0 => "site-local",
        [x, ..] if x & 0xff00 == 0xff00 => "multicast",
        [0x2001, 0xdb8, ..] => "documentation",
        [0x2001, 0..=0x1ff, ..] => "reserved",
        [0x2002, ..] => "6to4",
        [0x0100, 0, 0, 0, ..] => "discard",
        _ => return None,
    })
}

/// A resolver that answers only with public addresses (or allowed ones): a name with any
/// special address among its answers is refused whole, as [`ReferenceFetcher`] does per hop.
#[derive(Clone, Debug)]
struct PublicOnly {
    allow: std::sync::Arc<Vec<IpAddr>>,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no address").into());
            }
            for a in &addrs {
                if let Some(class) = special_address(a.ip())
                    && !allow.contains(&a.ip())
                {
                    return Err(format!("{host} resolves to a {class} address, which is never fetched").into());
                }
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client for URLs a provider hands back (result downloads, URLs in webhook bodies):
/// it connects only to public addresses, whether the URL names one or a host that resolves to
/// them, and follows no redirect. `allow`: special addresses allowed all the same (a mock
/// provider on loopback in tests; empty in production).
#[derive(Clone, Debug)]
pub struct GuardedClient {
    client: reqwest::Client,
    allow: Vec<SocketAddr>,
}

impl GuardedClient {
    /// A client that takes `connect_timeout` to connect.
    pub fn new(allow: Vec<SocketAddr>, connect_timeout: Duration) -> Result<Self, reqwest::Error> {
        let ips = allow.iter().map(SocketAddr::ip).collect();
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(PublicOnly {
                allow: std::sync::Arc::new(ips),
            })
            .build()?;
        Ok(Self { client, allow })
    }

    /// A GET of `url`, if it may be fetched: http(s), and a literal address (which no resolver
    /// sees) public or allowed. Names are checked as they resolve.
    pub fn get(&self, url: &str) -> Result<reqwest::RequestBuilder, String> {
        Ok(self.client.get(self.check(url)?))
    }

    /// A POST to `url` (a webhook endpoint), under the same rules as [`GuardedClient::get`].
    pub fn post(&self, url: &str) -> Result<reqwest::RequestBuilder, String> {
        Ok(self.client.post(self.check(url)?))
    }

    /// Whether `url` names a literal address (`http://127.0.0.1:9000/…`) this client was told
    /// to allow.
    pub fn allows_literal(&self, url: &str) -> bool {
        let Ok(u) = Url::parse(url) else { return false };
        let host = u.host_str().unwrap_or_default();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>().is_ok_and(|ip| {
            self.allow
                .contains(&SocketAddr::new(ip, u.port_or_known_default().unwrap_or(0)))
        })
    }

    /// Whether `url` may be reached, as far as the text says: http(s), with no credentials in
    /// it, and a literal address public or allowed (a name is checked when it resolves).
    pub fn check(&self, url: &str) -> Result<Url, String> {
        let u = Url::parse(url).map_err(|_| "not a valid URL".to_owned())?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(format!("a {} URL is never fetched", u.scheme()));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err("a URL with credentials in it is never fetched".to_owned());
        }
        let host = u.host_str().unwrap_or_default();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            let at = SocketAddr::new(ip, u.port_or_known_default().unwrap_or(0));
            if let Some(class) = special_address(ip)
                && !self.allow.contains(&at)
            {
                return Err(format!("a {class} address is never fetched"));
            }
        }
        Ok(u)
    }
}

/// Fetches reference images under [`FetchConfig`].
#[derive(Clone, Debug, Default)]
pub struct ReferenceFetcher {
    cfg: FetchConfig,
}

impl ReferenceFetcher {
    /// A fetcher with `cfg`.
    pub fn new(cfg: FetchConfig) -> Self {
        Self { cfg }
    }

    /// The job's references with every URL replaced by the verified image as a `data:` URI
    /// (`data:` URIs pass unchanged; providers verify those). Fails on the first reference that
    /// cannot be fetched.
    pub async fn resolve(&self, refs: &[String]) -> Result<Vec<String>, FetchError> {
        let mut out = Vec::with_capacity(refs.len());
        let mut total = 0usize;
        for (i, r) in refs.iter().enumerate() {
            let index = i + 1;
            if r.starts_with("data:") {
                total += r.len();
                out.push(r.clone());
            } else if r.starts_with("http://") || r.starts_with("https://") {
                let (bytes, content_type) = self.fetch(index, r).await?;
                total += bytes.len();
                out.push(format!(
                    "data:{content_type};base64,{}",
                    base64::engine::general_purpose::STANDARD.encode(&bytes)
                ));
            } else {
                return Err(FetchError::Scheme(index));
            }
            if total > self.cfg.max_total_bytes {
                return Err(FetchError::TooLarge {
                    index,
                    max: self.cfg.max_total_bytes,
                });
            }
        }
        Ok(out)
    }

    /// One URL, hop by hop, under the timeout; the verified bytes and their type.
    pub async fn fetch(&self, index: usize, url: &str) -> Result<(Vec<u8>, &'static str), FetchError> {
        let mut url = Url::parse(url).map_err(|_| FetchError::BadUrl(index))?;
        let host_of = |u: &Url| u.host_str().unwrap_or_default().to_owned();
        let timeout = |u: &Url| FetchError::Unreachable {
            index,
            host: host_of(u),
            reason: "timed out".into(),
        };
        let started = tokio::time::Instant::now();
        for _hop in 0..=self.cfg.max_redirects {
            let left = self.cfg.timeout.saturating_sub(started.elapsed());
            let hop = tokio::time::timeout(left, self.hop(index, &url))
                .await
                .map_err(|_| timeout(&url))??;
            match hop {
                Hop::Body(bytes) => {
                    let limits = MediaLimits {
                        max_bytes: self.cfg.max_bytes,
                        ..MediaLimits::default()
                    };
                    let verified = tokio::task::spawn_blocking(move || verify("reference", bytes, &limits))
                        .await
                        .map_err(|_| FetchError::NotAnImage {
                            index,
                            reason: "verification failed".into(),
                        })?
                        .map_err(|e| FetchError::NotAnImage {
                            index,
                            reason: e.message,
                        })?;
                    if verified.content_type == "video/mp4" {
                        return Err(FetchError::NotAnImage {
                            index,
                            reason: "a video, not an image".into(),
                        });
                    }
                    return Ok((verified.bytes, verified.content_type));
                }
                Hop::Redirect(next) => {
                    let next = url.join(&next).map_err(|_| FetchError::Redirects(index))?;
                    if !matches!(next.scheme(), "http" | "https") {
                        return Err(FetchError::Redirects(index));
                    }
                    url = next;
                }
            }
        }
        Err(FetchError::Redirects(index))
    }

    /// Resolves and checks the host, then sends one request to exactly those addresses.
    async fn hop(&self, index: usize, url: &Url) -> Result<Hop, FetchError> {
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or(FetchError::BadUrl(index))?;
        let port = url.port_or_known_default().ok_or(FetchError::BadUrl(index))?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((bare, port))
                .await
                .map_err(|_| FetchError::Unresolvable {
                    index,
                    host: host.to_owned(),
                })?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(FetchError::Unresolvable {
                index,
                host: host.to_owned(),
            });
        }
        // Every address must pass: a name that resolves to one public and one private address
        // is refused, not raced.
        for a in &addrs {
            if self.cfg.allow.contains(a) {
                continue;
            }
            if let Some(class) = special_address(a.ip()) {
                return Err(FetchError::Forbidden {
                    index,
                    host: host.to_owned(),
                    class,
                });
            }
        }
        let unreachable = |reason: String| FetchError::Unreachable {
            index,
            host: host.to_owned(),
            reason,
        };
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.cfg.timeout);
        if bare.parse::<IpAddr>().is_err() {
            b = b.resolve_to_addrs(bare, &addrs);
        }
        let client = b.build().map_err(|e| unreachable(e.to_string()))?;
        let mut resp = client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| unreachable(without_url(e)))?;
        let status = resp.status();
        if status.is_redirection() {
            let next = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or(FetchError::Redirects(index))?;
            return Ok(Hop::Redirect(next.to_owned()));
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                index,
                host: host.to_owned(),
                status: status.as_u16(),
            });
        }
        let too_large = FetchError::TooLarge {
            index,
            max: self.cfg.max_bytes,
        };
        if resp.content_length().is_some_and(|n| n > self.cfg.max_bytes as u64) {
            return Err(too_large);
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| unreachable(without_url(e)))? {
            if body.len() + chunk.len() > self.cfg.max_bytes {
                return Err(too_large);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Hop::Body(body))
    }
}

enum Hop {
    Body(Vec<u8>),
    Redirect(String),
}

/// A reqwest error's text without the URL it carries.
fn without_url(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "body unreadable"
    } else {
        "request failed"
    };
    kind.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_refused_and_public_ones_pass() {
        for (ip, class) in [
            ("127.0.0.1", "loopback"),
            ("127.9.9.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local (cloud metadata)"),
            ("100.100.100.200", "carrier-grade NAT"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00:ec2::254", "private (unique local)"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local (cloud metadata)"),
            ("64:ff9b::a9fe:a9fe", "link-local (cloud metadata)"),
            ("::127.0.0.1", "IPv4-compatible"),
            ("::ffff:0:0", "unspecified"),
            ("::ffff:8.8.8.8", "IPv4-mapped"),
            ("::ffff:0:7f00:1", "IPv4-translated"),
            ("::ffff:0:808:808", "IPv4-translated"),
            ("64:ff9b:1::a9fe:a9fe", "NAT64 (local use)"),
            ("64:ff9b:1:2::808:808", "NAT64 (local use)"),
            ("2001:db8::1", "documentation"),
            ("ff02::1", "multicast"),
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(special_address(ip), Some(class), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "1.1.1.1",
            "2606:4700::1111",
            "64:ff9b::808:808",
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(special_address(ip), None, "{ip}");
        }
    }

    #[tokio::test]
    async fn literal_and_resolved_special_hosts_are_refused_before_any_connection() {
        let f = ReferenceFetcher::default();
        for (url, class) in [
            (
                "http://169.254.169.254/latest/meta-data/",
                "link-local (cloud metadata)",
            ),
            ("http://127.0.0.1:1/x.png", "loopback"),
            ("http://[::1]/x.png", "loopback"),
            ("http://[::ffff:10.0.0.1]/x.png", "private"),
            ("http://localhost:9/x.png", "loopback"),
            ("http://2130706433/x.png", "loopback"),
        ] {
            match f.fetch(1, url).await {
                Err(FetchError::Forbidden { class: c, .. }) => assert_eq!(c, class, "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        assert_eq!(
            f.resolve(&["ftp://example.com/x.png".into()]).await,
            Err(FetchError::Scheme(1))
        );
        assert_eq!(f.resolve(&["http://".into()]).await, Err(FetchError::BadUrl(1)));
        let data = vec!["data:image/png;base64,AAAA".to_owned()];
        assert_eq!(f.resolve(&data).await.as_deref(), Ok(&data[..]));
    }

    /// Issue 17: result URLs (from a provider's reply or a webhook body) go through the same
    /// guard as references. A listener on loopback stands for the fleet's own network; the old
    /// download client connected to it.
    #[tokio::test]
    async fn result_downloads_reach_only_public_addresses() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connected = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = connected.clone();
        tokio::spawn(async move {
            while let Ok((_s, _)) = listener.accept().await {
                seen.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let guarded = GuardedClient::new(Vec::new(), Duration::from_secs(2)).expect("client");
        for url in [
            format!("http://{addr}/outputs/secret.png"),
            format!("http://[::ffff:127.0.0.1]:{}/x", addr.port()),
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "file:///etc/passwd".to_owned(),
        ] {
            assert!(guarded.get(&url).is_err(), "{url} must be refused before any request");
        }
        // A name that resolves to loopback is refused by the resolver.
        let by_name = guarded
            .get(&format!("http://localhost:{}/outputs/secret.png", addr.port()))
            .expect("names are checked as they resolve")
            .send()
            .await
            .expect_err("refused");
        assert!(format!("{by_name:?}").contains("never fetched"), "{by_name:?}");
        let artifact = crate::Artifact::Url {
            url: format!("http://{addr}/outputs/secret.png"),
        };
        let e = crate::media::fetch("openai", &guarded, artifact, &crate::media::MediaLimits::default())
            .await
            .expect_err("refused");
        assert_eq!(e.code.as_deref(), Some("result_url_refused"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !connected.load(std::sync::atomic::Ordering::SeqCst),
            "no connection was made"
        );
        // Allowed (a mock provider in tests), the same address is fetched.
        let allowed = GuardedClient::new(vec![addr], Duration::from_secs(2)).expect("client");
        let _ = allowed
            .get(&format!("http://{addr}/x"))
            .expect("allowed")
            .timeout(Duration::from_millis(300))
            .send()
            .await;
        assert!(
            connected.load(std::sync::atomic::Ordering::SeqCst),
            "the allowed address was reached"
        );
    }
}
