//! DNS discovery: the A/AAAA records of a (headless service) name plus a port, or the
//! SRV records of a name.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::{normalize, BoxFuture, Discovery, DiscoveryError, DiscoveryResult, Instance};

/// What to look up.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DnsQuery {
    /// The A and/or AAAA records of `name` (a Kubernetes headless service:
    /// `my-svc.my-ns.svc.cluster.local`), each address paired with `port`.
    Host {
        /// The name to resolve.
        name: String,
        /// The cluster port of every instance.
        port: u16,
    },
    /// The SRV records of `name` (`_cluster._tcp.my-svc.my-ns.svc.cluster.local`); each
    /// target is resolved to its addresses and paired with the record's port. Instances
    /// are named after their SRV target.
    Srv {
        /// The SRV name.
        name: String,
    },
}

impl DnsQuery {
    fn name(&self) -> &str {
        match self {
            Self::Host { name, .. } | Self::Srv { name } => name,
        }
    }
}

/// Which address families a [`DnsQuery::Host`] lookup asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IpFamily {
    /// A records only: one query per refresh.
    #[default]
    V4,
    /// AAAA records only: one query per refresh.
    V6,
    /// A and AAAA: two queries per refresh; a family with no records is not an error as
    /// long as the other has some.
    Both,
}

/// Configuration of a [`DnsDiscovery`].
///
/// ```
/// # #[cfg(feature = "dns")] {
/// use cluster_mode_discovery::DnsConfig;
/// use std::time::Duration;
/// let config = DnsConfig::host("my-svc.default.svc.cluster.local", 7000)
///     .with_ttl_bounds(Duration::from_secs(1), Duration::from_secs(10));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The query.
    pub query: DnsQuery,
    /// Name servers to ask (`ip:port`); `None` uses the system configuration
    /// (`/etc/resolv.conf`), which is what a pod wants.
    pub name_servers: Option<Vec<SocketAddr>>,
    /// Address families for [`DnsQuery::Host`].
    pub family: IpFamily,
    /// An answer is reused for at least this long even if its TTL is shorter (0-TTL
    /// records would otherwise mean a query per call). Errors are also kept this long.
    /// Also the suggested poll interval. Default 1 s.
    pub ttl_floor: Duration,
    /// An answer is reused for at most this long even if its TTL is longer, so scaling
    /// shows within this time. Default 30 s.
    pub ttl_ceiling: Duration,
    /// How long one query waits for an answer before it is retried or fails with
    /// [`DiscoveryError::Timeout`]. Default 2 s.
    pub timeout: Duration,
    /// How many times a query is tried. Default 2.
    pub attempts: usize,
}

impl DnsConfig {
    /// A/AAAA records of `name`, each paired with `port`.
    pub fn host(name: impl Into<String>, port: u16) -> Self {
        Self::new(DnsQuery::Host {
            name: name.into(),
            port,
        })
    }

    /// SRV records of `name`.
    pub fn srv(name: impl Into<String>) -> Self {
        Self::new(DnsQuery::Srv { name: name.into() })
    }

    fn new(query: DnsQuery) -> Self {
        Self {
            query,
            name_servers: None,
            family: IpFamily::V4,
            ttl_floor: Duration::from_secs(1),
            ttl_ceiling: Duration::from_secs(30),
            timeout: Duration::from_secs(2),
            attempts: 2,
        }
    }

    /// Asks this name server instead of the system's (may be called several times).
    #[must_use]
    pub fn with_name_server(mut self, server: SocketAddr) -> Self {
        self.name_servers.get_or_insert_with(Vec::new).push(server);
        self
    }

    /// Sets the address families.
    #[must_use]
    pub fn with_family(mut self, family: IpFamily) -> Self {
        self.family = family;
        self
    }

    /// Sets the TTL floor and ceiling.
    #[must_use]
    pub fn with_ttl_bounds(mut self, floor: Duration, ceiling: Duration) -> Self {
        self.ttl_floor = floor;
        self.ttl_ceiling = ceiling;
        self
    }

    /// Sets the per-query timeout and number of attempts.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration, attempts: usize) -> Self {
        self.timeout = timeout;
        self.attempts = attempts;
        self
    }

    fn validate(&self) -> Result<(), DiscoveryError> {
        let name = self.query.name();
        if name.trim().is_empty() {
            return Err(DiscoveryError::invalid("dns.name", "empty name"));
        }
        if let DnsQuery::Host { port: 0, .. } = self.query {
            return Err(DiscoveryError::invalid("dns.port", "port 0"));
        }
        if self.ttl_floor.is_zero() {
            return Err(DiscoveryError::invalid("dns.ttl_floor", "must be > 0"));
        }
        if self.ttl_floor > self.ttl_ceiling {
            return Err(DiscoveryError::invalid(
                "dns.ttl_floor",
                format!(
                    "floor {:?} above ceiling {:?}",
                    self.ttl_floor, self.ttl_ceiling
                ),
            ));
        }
        if self.ttl_ceiling > Duration::from_secs(86_400) {
            return Err(DiscoveryError::invalid(
                "dns.ttl_ceiling",
                "above one day; peers would not be refreshed",
            ));
        }
        if self.timeout.is_zero() || self.attempts == 0 {
            return Err(DiscoveryError::invalid(
                "dns.timeout",
                "timeout and attempts must be > 0",
            ));
        }
        if matches!(&self.name_servers, Some(v) if v.is_empty()) {
            return Err(DiscoveryError::invalid("dns.name_servers", "empty list"));
        }
        Ok(())
    }
}

struct Cached {
    result: DiscoveryResult,
    valid_until: Instant,
}

/// Discovery through DNS (feature `dns`).
///
/// Answers are cached for the smallest TTL among the records, clamped to
/// `[ttl_floor, ttl_ceiling]`; errors are cached for `ttl_floor`. Concurrent callers
/// share one lookup, so the name server sees at most one lookup per name per refresh
/// interval (one query for `V4`/`V6`, two for `Both`, one plus one per target without
/// glue for SRV). NXDOMAIN ([`DiscoveryError::NotFound`]), an existing name without
/// records ([`DiscoveryError::NoRecords`]), a timeout ([`DiscoveryError::Timeout`]) and
/// SERVFAIL/REFUSED ([`DiscoveryError::ServerFailure`]) are distinct errors.
pub struct DnsDiscovery {
    config: DnsConfig,
    resolver: TokioResolver,
    cache: Mutex<Option<Cached>>,
    lookups: AtomicU64,
}

impl std::fmt::Debug for DnsDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsDiscovery")
            .field("config", &self.config)
            .field("lookups", &self.lookups.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl DnsDiscovery {
    /// Builds the resolver. Fails with [`DiscoveryError::InvalidConfig`] on a bad
    /// configuration, or when the system DNS configuration cannot be read.
    pub fn new(config: DnsConfig) -> Result<Self, DiscoveryError> {
        config.validate()?;
        let mut opts = ResolverOpts::default();
        opts.timeout = config.timeout;
        opts.attempts = config.attempts;
        // Our own cache decides when to ask again; the resolver must not add another.
        opts.cache_size = 0;
        let builder = match &config.name_servers {
            Some(servers) => {
                let servers = servers
                    .iter()
                    .map(|addr| {
                        let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                        for connection in &mut ns.connections {
                            connection.port = addr.port();
                        }
                        ns
                    })
                    .collect();
                Resolver::builder_with_config(
                    ResolverConfig::from_name_servers(servers),
                    TokioRuntimeProvider::default(),
                )
            }
            None => Resolver::builder_tokio().map_err(|e| {
                DiscoveryError::invalid("dns.name_servers", format!("system configuration: {e}"))
            })?,
        };
        let resolver = builder
            .with_options(opts)
            .build()
            .map_err(|e| DiscoveryError::invalid("dns", e.to_string()))?;
        Ok(Self {
            config,
            resolver,
            cache: Mutex::new(None),
            lookups: AtomicU64::new(0),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DnsConfig {
        &self.config
    }

    /// How many DNS lookups (queries to the name server, not counting the resolver's
    /// own retries) this source has made since it was created.
    pub fn lookups_sent(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// Forgets the cached answer, so the next snapshot queries the server.
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    async fn lookup(
        &self,
        name: &str,
        record_type: RecordType,
    ) -> Result<hickory_resolver::lookup::Lookup, DiscoveryError> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(%name, ?record_type, "dns query");
        self.resolver
            .lookup(name, record_type)
            .await
            .map_err(|e| map_error(name, record_type, e))
    }

    /// Addresses and the smallest TTL, for one name.
    async fn addresses(
        &self,
        name: &str,
        family: IpFamily,
    ) -> Result<(Vec<IpAddr>, u32), DiscoveryError> {
        let types: &[RecordType] = match family {
            IpFamily::V4 => &[RecordType::A],
            IpFamily::V6 => &[RecordType::AAAA],
            IpFamily::Both => &[RecordType::A, RecordType::AAAA],
        };
        let mut ips = Vec::new();
        let mut ttl = u32::MAX;
        let mut first_error = None;
        for &record_type in types {
            match self.lookup(name, record_type).await {
                Ok(lookup) => {
                    for record in lookup.answers() {
                        let ip = match &record.data {
                            RData::A(a) => IpAddr::V4(a.0),
                            RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                            _ => continue,
                        };
                        ttl = ttl.min(record.ttl);
                        ips.push(ip);
                    }
                }
                // With both families, "no AAAA" next to some A records is fine.
                Err(e @ DiscoveryError::NoRecords { .. }) if types.len() > 1 => {
                    first_error.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        if ips.is_empty() {
            return Err(first_error.unwrap_or_else(|| DiscoveryError::NoRecords {
                name: name.to_string(),
                record_type: format!("{types:?}"),
            }));
        }
        Ok((ips, ttl))
    }

    async fn query(&self) -> (DiscoveryResult, u32) {
        match &self.config.query {
            DnsQuery::Host { name, port } => match self.addresses(name, self.config.family).await {
                Ok((ips, ttl)) => {
                    let instances = ips
                        .into_iter()
                        .map(|ip| {
                            Instance::new(SocketAddr::new(ip, *port)).with_meta("dns.name", name)
                        })
                        .collect();
                    (Ok(normalize(instances)), ttl)
                }
                Err(e) => (Err(e), 0),
            },
            DnsQuery::Srv { name } => match self.srv(name).await {
                Ok((instances, ttl)) => (Ok(normalize(instances)), ttl),
                Err(e) => (Err(e), 0),
            },
        }
    }

    async fn srv(&self, name: &str) -> Result<(Vec<Instance>, u32), DiscoveryError> {
        let lookup = self.lookup(name, RecordType::SRV).await?;
        let mut ttl = u32::MAX;
        let mut instances = Vec::new();
        for record in lookup.answers() {
            let RData::SRV(srv) = &record.data else {
                continue;
            };
            ttl = ttl.min(record.ttl);
            if srv.port == 0 || srv.target.is_root() {
                // "." target: the service is decidedly not available (RFC 2782).
                continue;
            }
            // Glue in the additional section saves a query per target.
            let glue: Vec<(IpAddr, u32)> = lookup
                .additionals()
                .iter()
                .filter(|r| r.name == srv.target)
                .filter_map(|r| match &r.data {
                    RData::A(a) if self.config.family != IpFamily::V6 => {
                        Some((IpAddr::V4(a.0), r.ttl))
                    }
                    RData::AAAA(a) if self.config.family != IpFamily::V4 => {
                        Some((IpAddr::V6(a.0), r.ttl))
                    }
                    _ => None,
                })
                .collect();
            let target = srv.target.to_utf8();
            let target = target.trim_end_matches('.').to_string();
            let ips = if glue.is_empty() {
                match self
                    .addresses(&srv.target.to_utf8(), self.config.family)
                    .await
                {
                    Ok((ips, target_ttl)) => {
                        ttl = ttl.min(target_ttl);
                        ips
                    }
                    Err(e) => {
                        // One target that does not resolve does not void the others.
                        tracing::warn!(srv = %name, %target, error = %e, "SRV target does not resolve; skipped");
                        continue;
                    }
                }
            } else {
                glue.iter()
                    .map(|(ip, t)| {
                        ttl = ttl.min(*t);
                        *ip
                    })
                    .collect()
            };
            for ip in ips {
                instances.push(
                    Instance::new(SocketAddr::new(ip, srv.port))
                        .with_name(target.clone())
                        .with_meta("dns.name", name)
                        .with_meta("srv.priority", srv.priority.to_string())
                        .with_meta("srv.weight", srv.weight.to_string()),
                );
            }
        }
        if instances.is_empty() && !lookup.answers().is_empty() {
            // SRV records exist but none gave an address: we do not know the peers.
            return Err(DiscoveryError::NoRecords {
                name: name.to_string(),
                record_type: "A/AAAA of the SRV targets".to_string(),
            });
        }
        Ok((instances, ttl))
    }
}

fn map_error(name: &str, record_type: RecordType, e: NetError) -> DiscoveryError {
    if e.is_nx_domain() {
        return DiscoveryError::NotFound {
            name: name.to_string(),
        };
    }
    if e.is_no_records_found() {
        return DiscoveryError::NoRecords {
            name: name.to_string(),
            record_type: record_type.to_string(),
        };
    }
    let target = format!("DNS {record_type} {name}");
    match e {
        NetError::Timeout => DiscoveryError::Timeout { target },
        NetError::Dns(DnsError::ResponseCode(code)) => DiscoveryError::ServerFailure {
            target,
            detail: code.to_string(),
        },
        NetError::Io(io) => DiscoveryError::Connection {
            target,
            detail: io.to_string(),
        },
        NetError::NoConnections => DiscoveryError::Connection {
            target,
            detail: "no connections available".to_string(),
        },
        other => DiscoveryError::Backend(format!("{target}: {other}")),
    }
}

impl Discovery for DnsDiscovery {
    fn snapshot(&self) -> BoxFuture<'_, DiscoveryResult> {
        Box::pin(async move {
            // Held across the query: concurrent callers wait and share the answer.
            let mut cache = self.cache.lock().await;
            let now = Instant::now();
            if let Some(cached) = cache.as_ref() {
                if now < cached.valid_until {
                    return cached.result.clone();
                }
            }
            let (result, ttl) = self.query().await;
            let keep = match &result {
                Ok(_) => Duration::from_secs(u64::from(ttl))
                    .clamp(self.config.ttl_floor, self.config.ttl_ceiling),
                Err(e) => {
                    tracing::warn!(name = %self.config.query.name(), error = %e, "DNS discovery failed");
                    self.config.ttl_floor
                }
            };
            *cache = Some(Cached {
                result: result.clone(),
                valid_until: Instant::now() + keep,
            });
            result
        })
    }

    /// The TTL floor: polling faster only returns the cached answer.
    fn poll_interval(&self) -> Duration {
        self.config.ttl_floor
    }
}
