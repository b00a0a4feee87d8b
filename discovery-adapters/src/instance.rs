//! The discovered instance.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// One instance of the service, as a discovery source sees it.
///
/// Ordering and equality cover every field, address first, so sorting a snapshot sorts it
/// by address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Instance {
    /// Where the instance's cluster endpoint listens.
    pub addr: SocketAddr,
    /// A stable name if the source knows one (Kubernetes pod name, SRV target,
    /// rust-cloud-discovery instance id); `None` for bare addresses.
    pub name: Option<String>,
    /// Source-specific labels (`k8s.pod`, `k8s.node`, `dns.name`, `srv.priority`...).
    pub metadata: BTreeMap<String, String>,
    /// Whether the source reports the instance as ready to serve. Sources list only
    /// ready instances unless configured otherwise.
    pub ready: bool,
}

impl Instance {
    /// A ready instance at `addr` with no name and no metadata.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            name: None,
            metadata: BTreeMap::new(),
            ready: true,
        }
    }

    /// Sets the stable name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds one metadata entry.
    #[must_use]
    pub fn with_meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets readiness.
    #[must_use]
    pub fn with_ready(mut self, ready: bool) -> Self {
        self.ready = ready;
        self
    }
}

/// Puts a snapshot in canonical form: sorted by address, one instance per address.
///
/// When two entries share an address (an endpoint listed in two EndpointSlices during a
/// rollout, the same target under two SRV records) a ready one is kept over a not-ready
/// one, then the one that sorts first.
pub fn normalize(mut instances: Vec<Instance>) -> Vec<Instance> {
    // Ready first within an address, then the natural order.
    instances.sort_by(|a, b| {
        a.addr
            .cmp(&b.addr)
            .then_with(|| b.ready.cmp(&a.ready))
            .then_with(|| a.cmp(b))
    });
    instances.dedup_by(|later, earlier| later.addr == earlier.addr);
    instances
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_sorts_and_keeps_ready_duplicate() {
        let a: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let out = normalize(vec![
            Instance::new(a).with_ready(false).with_name("x"),
            Instance::new(b),
            Instance::new(a).with_name("y"),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].addr, b);
        assert_eq!(out[1].addr, a);
        assert!(out[1].ready);
        assert_eq!(out[1].name.as_deref(), Some("y"));
    }
}
