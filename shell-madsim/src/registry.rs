//! A simulated discovery registry (think Kubernetes endpoints) with faults.

use cluster_mode_core::{Address, Discovered};
use std::collections::{BTreeMap, BTreeSet};

/// What every node's discovery source answers, with faults.
///
/// The registry lists addresses (a pod is listed while it exists). Each node polls it
/// every [`Registry::interval_ms`]. Faults:
/// - **lag**: answers reflect the listing as it was `lag_ms` ago;
/// - **errors**: a node's poll fails with probability `error_ppm`, or always while
///   `error_until_ns` is in the future;
/// - **flapping**: each listed entry is left out of an answer with probability
///   `flap_ppm`;
/// - **disagreement**: [`Registry::set_view`] restricts what one node is told to a
///   subset of addresses.
#[derive(Clone, Debug)]
pub struct Registry {
    /// How often nodes poll, in simulated milliseconds.
    pub interval_ms: u64,
    /// How stale answers are, in milliseconds.
    pub lag_ms: u64,
    /// Probability of a failed poll, parts per million.
    pub error_ppm: u64,
    /// Every poll fails until this global instant (ns).
    pub error_until_ns: u64,
    /// Probability that one entry is missing from one answer, parts per million.
    pub flap_ppm: u64,
    history: Vec<(u64, BTreeSet<Discovered>)>,
    views: BTreeMap<String, BTreeSet<Address>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            interval_ms: 200,
            lag_ms: 0,
            error_ppm: 0,
            error_until_ns: 0,
            flap_ppm: 0,
            history: vec![(0, BTreeSet::new())],
            views: BTreeMap::new(),
        }
    }
}

impl Registry {
    fn current(&self) -> BTreeSet<Discovered> {
        self.history.last().map(|h| h.1.clone()).unwrap_or_default()
    }

    fn push(&mut self, now: u64, set: BTreeSet<Discovered>) {
        self.history.push((now, set));
        // Keep history bounded: drop entries older than any lag we could be asked for.
        if self.history.len() > 4096 {
            self.history.drain(..2048);
        }
    }

    /// Lists `addr` (with `name`) from global time `now` on.
    pub fn list(&mut self, now: u64, addr: &Address, name: &str) {
        let mut set = self.current();
        set.retain(|d| &d.addr != addr);
        set.insert(Discovered {
            addr: addr.clone(),
            name: Some(name.to_string()),
        });
        self.push(now, set);
    }

    /// Stops listing `addr` from global time `now` on.
    pub fn unlist(&mut self, now: u64, addr: &Address) {
        let mut set = self.current();
        set.retain(|d| &d.addr != addr);
        self.push(now, set);
    }

    /// Restricts what the node named `node` is told to `addrs` (intersected with the
    /// listing). Disagreeing discovery at bootstrap is a set of such views.
    pub fn set_view(&mut self, node: &str, addrs: impl IntoIterator<Item = Address>) {
        self.views
            .insert(node.to_string(), addrs.into_iter().collect());
    }

    /// Removes every per-node view: all nodes see the whole listing again.
    pub fn clear_views(&mut self) {
        self.views.clear();
    }

    /// The answer node `node` gets at global time `now`. `roll` gives uniform random
    /// numbers (the caller's deterministic simulation RNG).
    pub fn answer(
        &self,
        node: &str,
        now: u64,
        mut roll: impl FnMut() -> u64,
    ) -> Result<Vec<Discovered>, String> {
        if now < self.error_until_ns {
            return Err("simulated discovery outage".into());
        }
        if self.error_ppm > 0 && roll() % 1_000_000 < self.error_ppm {
            return Err("simulated discovery error".into());
        }
        let at = now.saturating_sub(self.lag_ms * 1_000_000);
        let set = self
            .history
            .iter()
            .rev()
            .find(|(t, _)| *t <= at)
            .or(self.history.first())
            .map(|h| &h.1);
        let Some(set) = set else {
            return Ok(Vec::new());
        };
        let view = self.views.get(node);
        let mut out = Vec::with_capacity(set.len());
        for d in set {
            if view.is_some_and(|v| !v.contains(&d.addr)) {
                continue;
            }
            if self.flap_ppm > 0 && roll() % 1_000_000 < self.flap_ppm {
                continue;
            }
            out.push(d.clone());
        }
        Ok(out)
    }
}
