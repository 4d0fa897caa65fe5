//! Which bucket a request's `Host` header names (virtual-host-style addressing).
//!
//! `BUCKET.DOMAIN[:port]` addresses bucket `BUCKET`; every other host (the bare domain, an IP
//! literal such as `127.0.0.1:9000`, a name we do not serve) is path-style, with the bucket as the
//! first path segment. s3s's own `MultiDomain` treats an unknown host as a bucket name, which would
//! send `127.0.0.1:9000` requests to a bucket of that name.

use s3s::S3Result;
use s3s::host::{S3Host, VirtualHost};

/// Host parsing for one base domain.
#[derive(Debug, Clone)]
pub struct Host {
    domain: String,
}

impl Host {
    /// Virtual hosts are `*.domain`; `domain` is compared case-insensitively, without a port.
    pub fn new(domain: &str) -> Self {
        Self {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
        }
    }

    /// The bucket named by `host`, if it is a virtual host of our domain.
    pub fn bucket<'a>(&self, host: &'a str) -> Option<&'a str> {
        let name = strip_port(host);
        if self.domain.is_empty() || name.parse::<std::net::IpAddr>().is_ok() {
            return None;
        }
        let lower = name.to_ascii_lowercase();
        let sub = lower.strip_suffix(&self.domain)?.strip_suffix('.')?;
        (!sub.is_empty()).then(|| &name[..sub.len()])
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

impl S3Host for Host {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        Ok(match self.bucket(host) {
            Some(bucket) => VirtualHost::new(self.domain.as_str()).with_bucket(bucket),
            None => VirtualHost::new(strip_port(host)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_hosts_name_buckets_and_everything_else_is_path_style() {
        let h = Host::new("localhost");
        assert_eq!(h.bucket("data.localhost:9000"), Some("data"));
        assert_eq!(
            h.bucket("my.dotted.bucket.localhost"),
            Some("my.dotted.bucket")
        );
        assert_eq!(h.bucket("DATA.LOCALHOST:9000"), Some("DATA"));
        assert_eq!(h.bucket("localhost:9000"), None);
        assert_eq!(h.bucket("127.0.0.1:9000"), None);
        assert_eq!(h.bucket("[::1]:9000"), None);
        assert_eq!(h.bucket("example.com"), None);
        assert_eq!(h.bucket("notlocalhost"), None);
        assert_eq!(h.bucket(".localhost"), None);
        assert!(
            h.parse_host_header("127.0.0.1:9000")
                .unwrap()
                .bucket()
                .is_none()
        );
        assert_eq!(
            h.parse_host_header("b1.localhost:9000").unwrap().bucket(),
            Some("b1")
        );
    }
}
