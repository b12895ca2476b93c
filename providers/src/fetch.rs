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
    #[error("reference image {0}: only http(s) URLs and data: URIs are accepted")]
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
}
