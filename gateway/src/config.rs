//! `config.toml` of a gateway: where it listens, its S3 credentials, and how it finds the network.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Configuration file inside the data directory.
pub const CONFIG_FILE: &str = "config.toml";
/// Runtime information file (pid, endpoint) written once the gateway listens.
pub const RUNTIME_FILE: &str = "gateway.json";
/// The gateway's manifest-signing key inside the data directory.
pub const KEY_FILE: &str = "gateway.key";
/// RocksDB catalog directory inside the data directory.
pub const CATALOG_DIR: &str = "catalog";

/// A configuration problem, naming the field and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown fields.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A field has a value we cannot use.
    #[error("config field `{field}`: {message}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// Everything in `config.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// S3 listen address.
    pub listen: String,
    /// Admin HTTP address (health, metrics, import/export).
    pub admin: String,
    /// Base domain for virtual-host-style addressing (`BUCKET.domain`).
    pub domain: String,
    /// S3 access key id.
    pub access_key: String,
    /// S3 secret access key (also the admin API's bearer token).
    pub secret_key: String,
    /// Storage node multiaddrs ending in `/p2p/<peer id>`.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Data shards per stripe for new objects (0: choose from the network size).
    #[serde(default)]
    pub k: u8,
    /// Parity shards per stripe for new objects (0: choose from the network size).
    #[serde(default)]
    pub m: u8,
    /// Memory for verified shards kept between reads, in MiB (0: no cache).
    #[serde(default = "default_cache_mib")]
    pub cache_mib: u32,
    /// How far ahead of a sequential range reader shards are fetched, in MiB (0: no read-ahead;
    /// needs the cache).
    #[serde(default = "default_readahead_mib")]
    pub readahead_mib: u32,
    /// Smallest part of a multipart upload but the last, in KiB (5120 = 5 MiB, as S3; lower
    /// only for tests and tools that need many small parts).
    #[serde(default = "default_min_part_kib")]
    pub min_part_kib: u32,
    /// Objects of at most this many KiB are kept whole inside their manifest, on m+1 nodes,
    /// instead of being erasure coded into k+m shards (0: only the empty object; at most 64).
    #[serde(default = "default_inline_kib")]
    pub inline_kib: u32,
    /// Seconds between automatic catalog exports to the network, made only when the catalog
    /// changed (0: only on `POST /export`).
    #[serde(default = "default_export_every_secs")]
    pub export_every_secs: u32,
    /// How long each lease the gateway takes on what its catalog references lasts, as a
    /// duration (`30d`, `12h`); `"0s"` takes no leases (then the nodes collect the gateway's
    /// data once its upload hold, `proofs.lease_epochs`, has passed).
    #[serde(default = "default_lease_term")]
    pub lease_term: String,
    /// Time between lease renewal passes (`1h`); each renews what ends within half a term.
    #[serde(default = "default_lease_renew_every")]
    pub lease_renew_every: String,
    /// The region SigV4 signatures must be scoped to ([`ANY_REGION`], `"*"`: accept any).
    #[serde(default = "default_region")]
    pub region: String,
    /// Log filter (`RUST_LOG` syntax).
    #[serde(default = "default_log")]
    pub log: String,
}

/// The region a gateway answers for unless configured otherwise (what S3 clients default to).
pub const DEFAULT_REGION: &str = "us-east-1";
/// `region` value that accepts signatures scoped to any region.
pub const ANY_REGION: &str = "*";

fn default_region() -> String {
    DEFAULT_REGION.into()
}

/// Default seconds between automatic catalog exports.
pub const DEFAULT_EXPORT_EVERY_SECS: u32 = 300;

fn default_export_every_secs() -> u32 {
    DEFAULT_EXPORT_EVERY_SECS
}

/// Default lease term.
pub const DEFAULT_LEASE_TERM: &str = "30d";
/// Default time between lease renewal passes.
pub const DEFAULT_LEASE_RENEW_EVERY: &str = "1h";

fn default_lease_term() -> String {
    DEFAULT_LEASE_TERM.into()
}

fn default_lease_renew_every() -> String {
    DEFAULT_LEASE_RENEW_EVERY.into()
}

fn default_log() -> String {
    "info".into()
}

/// Default shard cache size in MiB.
pub const DEFAULT_CACHE_MIB: u32 = 128;
/// Default read-ahead window in MiB.
pub const DEFAULT_READAHEAD_MIB: u32 = 16;

fn default_cache_mib() -> u32 {
    DEFAULT_CACHE_MIB
}

fn default_min_part_kib() -> u32 {
    5 * 1024
}

/// Default largest inline object, in KiB: the most a manifest may carry.
pub const DEFAULT_INLINE_KIB: u32 = (cairn_chunker::manifest::MAX_INLINE >> 10) as u32;

fn default_inline_kib() -> u32 {
    DEFAULT_INLINE_KIB
}

fn default_readahead_mib() -> u32 {
    DEFAULT_READAHEAD_MIB
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The configuration as written.
    pub config: Config,
    /// S3 listen address.
    pub listen: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    /// Peers.
    pub peers: Vec<libp2p::Multiaddr>,
    /// Leases on what the catalog references.
    pub leases: crate::leases::LeaseSettings,
}

/// Random credentials: a 20-character access key and a 40-character secret, like AWS's.
pub fn random_credentials() -> std::io::Result<(String, String)> {
    use std::io::Read;
    let mut raw = [0u8; 60];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const ANY: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let access: String = "CAIRN"
        .chars()
        .chain(raw[..15].iter().map(|b| UPPER[usize::from(b % 32)] as char))
        .collect();
    let secret: String = raw[20..60]
        .iter()
        .map(|b| ANY[usize::from(b % 64)] as char)
        .collect();
    Ok((access, secret))
}

impl Config {
    /// A new configuration with fresh random credentials.
    pub fn new_random() -> std::io::Result<Self> {
        let (access_key, secret_key) = random_credentials()?;
        Ok(Self {
            listen: "127.0.0.1:9000".into(),
            admin: "127.0.0.1:9001".into(),
            domain: "localhost".into(),
            access_key,
            secret_key,
            peers: Vec::new(),
            k: 0,
            m: 0,
            cache_mib: DEFAULT_CACHE_MIB,
            readahead_mib: DEFAULT_READAHEAD_MIB,
            min_part_kib: default_min_part_kib(),
            inline_kib: DEFAULT_INLINE_KIB,
            export_every_secs: DEFAULT_EXPORT_EVERY_SECS,
            lease_term: default_lease_term(),
            lease_renew_every: default_lease_renew_every(),
            region: default_region(),
            log: default_log(),
        })
    }

    /// Reads `DIR/config.toml`.
    pub fn load(data_dir: &Path) -> Result<Self, ConfigError> {
        let path = data_dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path,
            message: e.to_string(),
        })
    }

    /// Writes the commented `config.toml` (mode 0600: it holds the secret key).
    pub fn write(&self, data_dir: &Path) -> Result<(), ConfigError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = data_dir.join(CONFIG_FILE);
        let io = |source| ConfigError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        f.write_all(self.template().as_bytes()).map_err(io)
    }

    fn template(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let peers: Vec<String> = self.peers.iter().map(|p| q(p)).collect();
        format!(
            "# cairn-gateway configuration. Every field can be overridden by a flag or a CAIRN_GW_* variable.\n\
             \n\
             # S3 endpoint (HTTP). Use 0.0.0.0:9000 to serve other machines.\n\
             listen = {}\n\
             # Admin HTTP: /health, /metrics (Prometheus), POST /import, /export, /restore.\n\
             admin = {}\n\
             # Virtual-host-style requests address BUCKET.<domain>; other hosts are path-style.\n\
             domain = {}\n\
             \n\
             # S3 credentials (SigV4). The secret is also the admin API's bearer token. Keep this file 0600.\n\
             access_key = {}\n\
             secret_key = {}\n\
             # Region signatures must be scoped to (clients' region setting, e.g. AWS_DEFAULT_REGION);\n\
             # others are refused with AuthorizationHeaderMalformed. \"*\" accepts any region.\n\
             region = {}\n\
             \n\
             # Storage nodes to join, each /ip4/../udp/../quic-v1/p2p/<peer id>.\n\
             peers = [{}]\n\
             \n\
             # Erasure coding of new objects: k data + m parity shards per stripe. 0 = choose from the\n\
             # number of nodes (4+2 on six or more).\n\
             k = {}\n\
             m = {}\n\
             \n\
             # Memory (MiB) for verified shards kept between reads; the gateway's resident size is\n\
             # about this plus 150-250 MiB. 0 = no cache.\n\
             cache_mib = {}\n\
             # Sequential range readers (s3fs, PyTorch readers) get this many MiB fetched ahead into\n\
             # the cache, from their third consecutive request on. 0 = off.\n\
             readahead_mib = {}\n\
             # Smallest multipart part but the last, in KiB (5120 = 5 MiB, as S3).\n\
             min_part_kib = {}\n\
             # Objects of up to this many KiB (at most 64) are stored whole in their manifest on m+1\n\
             # nodes, one write each, instead of as k+m erasure-coded shards: small PUTs and GETs are\n\
             # several times faster, at (m+1)x their size in space. 0 = erasure code everything.\n\
             inline_kib = {}\n\
             \n\
             # The catalog (buckets, keys) is exported to the network as a signed dataset manifest\n\
             # this often (seconds) when it changed; 0 = only on POST /export. A gateway started on an\n\
             # empty disk with this directory's gateway.key restores the newest export by itself, so\n\
             # keep a copy of config.toml and gateway.key: everything else can be lost.\n\
             export_every_secs = {}\n\
             \n\
             # The gateway leases everything its catalog references (and its last exports) with its own\n\
             # key, through lease_term from now, renewing every lease_renew_every what ends within half a\n\
             # term; deleted or overwritten objects are released. Durations: 30d, 12h, 90m, 45s.\n\
             # lease_term = \"0s\" takes no leases: nodes then collect the data after its upload hold.\n\
             lease_term = {}\n\
             lease_renew_every = {}\n\
             \n\
             # Log filter, RUST_LOG syntax (error, warn, info, debug, trace).\n\
             log = {}\n",
            q(&self.listen),
            q(&self.admin),
            q(&self.domain),
            q(&self.access_key),
            q(&self.secret_key),
            q(&self.region),
            peers.join(", "),
            self.k,
            self.m,
            self.cache_mib,
            self.readahead_mib,
            self.min_part_kib,
            self.inline_kib,
            self.export_every_secs,
            q(&self.lease_term),
            q(&self.lease_renew_every),
            q(&self.log),
        )
    }

    /// Validates every field, naming the one that is wrong.
    pub fn check(&self) -> Result<Checked, ConfigError> {
        let addr = |field: &'static str, v: &str| {
            v.parse::<SocketAddr>().map_err(|e| ConfigError::Field {
                field,
                message: format!("{v:?} is not an address like 127.0.0.1:9000 ({e})"),
            })
        };
        let listen = addr("listen", &self.listen)?;
        let admin = addr("admin", &self.admin)?;
        if self.access_key.len() < 3
            || self.access_key.len() > 128
            || !self.access_key.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ConfigError::Field {
                field: "access_key",
                message: "use 3-128 printable ASCII characters".into(),
            });
        }
        if self.secret_key.len() < 8 || !self.secret_key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::Field {
                field: "secret_key",
                message: "use at least 8 printable ASCII characters".into(),
            });
        }
        if self.domain.contains(':') || self.domain.contains('/') {
            return Err(ConfigError::Field {
                field: "domain",
                message: format!(
                    "{:?} must be a bare host name such as localhost or s3.example.com",
                    self.domain
                ),
            });
        }
        let region_ok = |r: &str| {
            (1..=64).contains(&r.len())
                && r.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        if self.region != ANY_REGION && !region_ok(&self.region) {
            return Err(ConfigError::Field {
                field: "region",
                message: format!(
                    "{:?} is not a region: use a name such as us-east-1 (1-64 letters, digits, \
                     '-', '_', '.'), or \"*\" to accept any",
                    self.region
                ),
            });
        }
        if (self.k == 0) != (self.m == 0) {
            return Err(ConfigError::Field {
                field: "k",
                message: "set both k and m, or neither (0 = automatic)".into(),
            });
        }
        if self.min_part_kib == 0 || self.min_part_kib > 5 * 1024 {
            return Err(ConfigError::Field {
                field: "min_part_kib",
                message: format!(
                    "{} KiB: must be between 1 and 5120 (5 MiB, what S3 asks)",
                    self.min_part_kib
                ),
            });
        }
        if u64::from(self.inline_kib) << 10 > cairn_chunker::manifest::MAX_INLINE {
            return Err(ConfigError::Field {
                field: "inline_kib",
                message: format!(
                    "{} KiB: must be at most {} (what a manifest may carry)",
                    self.inline_kib, DEFAULT_INLINE_KIB
                ),
            });
        }
        if self.cache_mib > 64 * 1024 {
            return Err(ConfigError::Field {
                field: "cache_mib",
                message: format!("{} MiB is over the 65536 MiB limit", self.cache_mib),
            });
        }
        if self.readahead_mib > 0 && self.readahead_mib.saturating_mul(4) > self.cache_mib {
            return Err(ConfigError::Field {
                field: "readahead_mib",
                message: format!(
                    "{} MiB of read-ahead needs a cache of at least 4x that (cache_mib = {}): \
                     raise cache_mib or lower readahead_mib (0 turns read-ahead off)",
                    self.readahead_mib, self.cache_mib
                ),
            });
        }
        let duration = |field: &'static str, v: &str| {
            cairn_client::lease::parse_duration(v)
                .map_err(|message| ConfigError::Field { field, message })
        };
        let leases = crate::leases::LeaseSettings {
            term: duration("lease_term", &self.lease_term)?,
            every: duration("lease_renew_every", &self.lease_renew_every)?,
        };
        if leases.enabled() && leases.every.is_zero() {
            return Err(ConfigError::Field {
                field: "lease_renew_every",
                message: "renewing every 0s is not possible: give a duration like 1h (or set \
                          lease_term = \"0s\" to take no leases)"
                    .into(),
            });
        }
        if leases.enabled() && leases.every * 2 > leases.term {
            return Err(ConfigError::Field {
                field: "lease_renew_every",
                message: format!(
                    "{} is more than half of lease_term ({}): leases would end between \
                     renewals; renew more often or lease for longer",
                    self.lease_renew_every, self.lease_term
                ),
            });
        }
        let peers = self
            .peers
            .iter()
            .map(|p| {
                p.parse::<libp2p::Multiaddr>().map_err(|e| ConfigError::Field {
                    field: "peers",
                    message: format!("{p:?} is not a multiaddr ({e}); use /ip4/HOST/udp/PORT/quic-v1/p2p/PEER_ID"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Checked {
            config: self.clone(),
            listen,
            admin,
            peers,
            leases,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_config_reads_back_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::new_random().unwrap();
        c.peers = vec!["/ip4/127.0.0.1/udp/4001/quic-v1".into()];
        c.write(dir.path()).unwrap();
        assert_eq!(Config::load(dir.path()).unwrap(), c);
        let mode = std::fs::metadata(dir.path().join(CONFIG_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
        c.check().unwrap();
    }

    #[test]
    fn bad_fields_are_named() {
        let mut c = Config::new_random().unwrap();
        c.listen = "nine thousand".into();
        assert!(c.check().unwrap_err().to_string().contains("`listen`"));
        let mut c = Config::new_random().unwrap();
        c.peers = vec!["not-an-addr".into()];
        assert!(c.check().unwrap_err().to_string().contains("`peers`"));
        let mut c = Config::new_random().unwrap();
        c.k = 4;
        assert!(c.check().unwrap_err().to_string().contains("`k`"));
        let mut c = Config::new_random().unwrap();
        c.cache_mib = 8;
        assert!(
            c.check()
                .unwrap_err()
                .to_string()
                .contains("`readahead_mib`")
        );
        c.readahead_mib = 0;
        c.check().unwrap();
        for bad in ["", "us/east", "eu west", "**"] {
            let mut c = Config::new_random().unwrap();
            c.region = bad.into();
            assert!(
                c.check().unwrap_err().to_string().contains("`region`"),
                "{bad:?}"
            );
        }
        for good in [DEFAULT_REGION, ANY_REGION, "eu-west-1", "garage"] {
            let mut c = Config::new_random().unwrap();
            c.region = good.into();
            c.check().unwrap();
        }
    }

    #[test]
    fn a_config_without_a_region_gets_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::new_random().unwrap();
        c.write(dir.path()).unwrap();
        let path = dir.path().join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\nregion = \"us-east-1\"\n"), "{text}");
        let old: String = text
            .lines()
            .filter(|l| !l.starts_with("region"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&path, old).unwrap();
        assert_eq!(Config::load(dir.path()).unwrap().region, DEFAULT_REGION);
    }

    #[test]
    fn credentials_are_random() {
        let (a1, s1) = random_credentials().unwrap();
        let (a2, s2) = random_credentials().unwrap();
        assert_ne!(a1, a2);
        assert_ne!(s1, s2);
        assert_eq!((a1.len(), s1.len()), (20, 40));
    }
}
