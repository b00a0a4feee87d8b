//! A fixed list of addresses.

use std::net::SocketAddr;
use std::time::Duration;

use crate::{normalize, BoxFuture, Discovery, DiscoveryError, DiscoveryResult, Instance};

/// A fixed list of instances, for bare-metal setups, tests and local clusters.
///
/// ```
/// use cluster_mode_discovery::StaticDiscovery;
/// let d = StaticDiscovery::parse(["10.0.0.1:7000", "[::1]:7000"]).unwrap();
/// assert_eq!(d.instances().len(), 2);
/// let err = StaticDiscovery::parse(["10.0.0.1:7000", "nope"]).unwrap_err();
/// assert!(err.to_string().contains("nope"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticDiscovery {
    instances: Vec<Instance>,
}

impl StaticDiscovery {
    /// A source listing exactly these addresses (duplicates are merged).
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self::from_instances(addrs.into_iter().map(Instance::new))
    }

    /// A source listing exactly these instances (normalised: sorted, one per address).
    pub fn from_instances(instances: impl IntoIterator<Item = Instance>) -> Self {
        Self {
            instances: normalize(instances.into_iter().collect()),
        }
    }

    /// Parses `IP:port` entries (`10.0.0.1:7000`, `[fd00::1]:7000`).
    ///
    /// Host names are refused (resolving them here would block and freeze the answer;
    /// use `DnsDiscovery` for names). An empty list is refused too: it is almost
    /// certainly a configuration mistake. The error names the first bad entry.
    pub fn parse<I, S>(entries: I) -> Result<Self, DiscoveryError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut addrs = Vec::new();
        for (index, entry) in entries.into_iter().enumerate() {
            let raw = entry.as_ref();
            let trimmed = raw.trim();
            let addr = trimmed.parse::<SocketAddr>().map_err(|e| {
                DiscoveryError::invalid(
                    format!("static peer #{index} {raw:?}"),
                    if trimmed.is_empty() {
                        "empty entry".to_string()
                    } else {
                        format!("expected IP:port (host names need DnsDiscovery): {e}")
                    },
                )
            })?;
            if addr.port() == 0 {
                return Err(DiscoveryError::invalid(
                    format!("static peer #{index} {raw:?}"),
                    "port 0 is not a listening port",
                ));
            }
            addrs.push(addr);
        }
        if addrs.is_empty() {
            return Err(DiscoveryError::invalid("static peers", "the list is empty"));
        }
        Ok(Self::new(addrs))
    }

    /// Parses a comma- or whitespace-separated list, as found in an environment variable
    /// (`PEERS="10.0.0.1:7000,10.0.0.2:7000"`).
    pub fn parse_list(list: &str) -> Result<Self, DiscoveryError> {
        Self::parse(
            list.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty()),
        )
    }

    /// The instances this source lists.
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }
}

impl Discovery for StaticDiscovery {
    fn snapshot(&self) -> BoxFuture<'_, DiscoveryResult> {
        let instances = self.instances.clone();
        Box::pin(async move { Ok(instances) })
    }

    /// The list never changes: one minute.
    fn poll_interval(&self) -> Duration {
        Duration::from_secs(60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_entry() {
        let err = StaticDiscovery::parse(["10.0.0.1:1", "10.0.0.2"]).unwrap_err();
        match &err {
            DiscoveryError::InvalidConfig { field, .. } => {
                assert!(field.contains("#1"), "{field}");
                assert!(field.contains("10.0.0.2"), "{field}");
            }
            other => panic!("unexpected {other:?}"),
        }
        let err = StaticDiscovery::parse(["db.internal:5"]).unwrap_err();
        assert!(err.to_string().contains("db.internal:5"), "{err}");
        assert!(err.to_string().contains("DnsDiscovery"), "{err}");
        let err = StaticDiscovery::parse(["10.0.0.1:0"]).unwrap_err();
        assert!(err.to_string().contains("port 0"), "{err}");
        let err = StaticDiscovery::parse(Vec::<String>::new()).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let err = StaticDiscovery::parse_list("10.0.0.1:1, 10.0.0.1:99999").unwrap_err();
        assert!(err.to_string().contains("99999"), "{err}");
    }

    #[tokio::test]
    async fn snapshot_is_sorted_and_deduplicated() {
        let d = StaticDiscovery::parse_list("10.0.0.2:7 10.0.0.1:7,10.0.0.2:7").unwrap();
        let snap = d.snapshot().await.unwrap();
        let addrs: Vec<String> = snap.iter().map(|i| i.addr.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.1:7", "10.0.0.2:7"]);
        assert!(snap.iter().all(|i| i.ready));
        assert!(d.watch().is_none());
    }
}
