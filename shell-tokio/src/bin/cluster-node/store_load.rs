//! `--store-load SPEC`: a load on the replicated key-value store (P14), run by the node
//! on itself once it sees an agreed primary, with the figures printed as one line
//! `STORE_LOAD <json>` on stdout. For benchmarks (`examples/bench_store.rs`) and for an
//! operator who wants to know what a cluster sustains.
//!
//! SPEC is comma-separated `name=value` pairs, every one optional:
//!
//! | name | default | meaning |
//! |---|---|---|
//! | `clients` | 1 | concurrent client tasks, each with its own `cluster.store()` session (at most 1,000) |
//! | `secs` | 10 | length of the write phase, seconds (decimals allowed) |
//! | `read_secs` | 3 | length of each read phase, seconds (0: no reads) |
//! | `value` | 100 | value size, bytes |
//! | `keys` | 1024 | the key space: client `c` writes keys `<prefix><c>/<k>` for `k` below `keys / clients` (at least 1), in turn, so the store never holds more than `keys` keys and the load runs as long as asked without filling it |
//! | `prefix` | `load/` | the keys' prefix |
//! | `reads` | `linearizable+lease+local` | the read phases, in order, `+`-separated (`lin`, `lease`, `local`), or `none` |
//! | `max_lag_ms` | 1000 | the `max_lag` of local reads |
//! | `on` | `any` | which node runs the load: `any` (every node given the option), `primary` (the node that is primary when the primary is agreed), `follower` (the member with the lowest address that is not the primary) |
//!
//! Every node of a cluster may be given the same option with `on=primary` or
//! `on=follower`: exactly one of them runs it (the others print `STORE_LOAD
//! {"skipped": ...}`), so a script needs to know nothing of the election.
//!
//! "Agreed primary": this node knows a primary and its committed members number at
//! least `--min-nodes`. Each client first writes once (untimed: that registers its
//! session), then all start together; the write phase puts until `secs` ran out; each
//! read phase gets the client's own keys, in turn, at its consistency. A client that
//! fails a request counts the error and goes on.
//!
//! The line: `STORE_LOAD {"node", "role" (primary or follower when the load started),
//! "members", "clients", "value_bytes", "keys", "term", "primary_changed" (the term
//! moved during the load), "writes": PHASE, "reads": {"linearizable": PHASE, "lease":
//! PHASE, "local": PHASE}}` where PHASE is `{"ops" (answered without error), "secs",
//! "ops_per_s", "p50_ms", "p99_ms", "max_ms" (latency, nearest rank), "errors",
//! "first_error"}`; or `{"skipped": why}` on a node that does not run it, or
//! `{"error": why}`. The clients run in the node's own process, as an application's
//! would: a request does not cross the network to reach the node it is asked of.

use crate::tally::Tally;
use cluster_mode::store::{Consistency, StoreError};
use cluster_mode::Cluster;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Longest wait for an agreed primary before the load gives up (and says so).
const AGREE_WITHIN: Duration = Duration::from_secs(60);

/// Which node of the cluster runs the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum On {
    /// Every node given the option.
    Any,
    /// The primary.
    Primary,
    /// The non-primary member with the lowest address.
    Follower,
}

/// A read phase's consistency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadKind {
    /// `Consistency::Linearizable`.
    Linearizable,
    /// `Consistency::Lease`.
    Lease,
    /// `Consistency::Local { max_lag }`.
    Local,
}

impl ReadKind {
    fn name(self) -> &'static str {
        match self {
            ReadKind::Linearizable => "linearizable",
            ReadKind::Lease => "lease",
            ReadKind::Local => "local",
        }
    }
}

/// The parsed `--store-load` value.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadSpec {
    /// Concurrent clients.
    pub clients: usize,
    /// Write phase.
    pub secs: Duration,
    /// Each read phase.
    pub read_secs: Duration,
    /// Value size in bytes.
    pub value: usize,
    /// Key space.
    pub keys: usize,
    /// Key prefix.
    pub prefix: String,
    /// Read phases, in order.
    pub reads: Vec<ReadKind>,
    /// `max_lag` of local reads.
    pub max_lag: Duration,
    /// Which node runs it.
    pub on: On,
}

impl Default for LoadSpec {
    fn default() -> Self {
        LoadSpec {
            clients: 1,
            secs: Duration::from_secs(10),
            read_secs: Duration::from_secs(3),
            value: 100,
            keys: 1024,
            prefix: "load/".into(),
            reads: vec![ReadKind::Linearizable, ReadKind::Lease, ReadKind::Local],
            max_lag: Duration::from_secs(1),
            on: On::Any,
        }
    }
}

fn seconds(field: &str, v: &str, allow_zero: bool) -> Result<Duration, String> {
    let s: f64 = v
        .parse()
        .map_err(|_| format!("--store-load {field}={v:?}: not a number of seconds"))?;
    if !(s.is_finite() && (s > 0.0 || (allow_zero && s == 0.0)) && s <= 86_400.0) {
        return Err(format!(
            "--store-load {field}={v}: give seconds in {}..=86400",
            if allow_zero { "0" } else { "(0" }
        ));
    }
    Ok(Duration::from_secs_f64(s))
}

fn number(field: &str, v: &str, min: usize, max: usize) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "--store-load {field}={v:?}: give a number in {min}..={max}"
        )),
    }
}

impl LoadSpec {
    /// Parses `name=value,...` (see the module's table); an error names the field.
    pub fn parse(s: &str) -> Result<LoadSpec, String> {
        use cluster_mode::store::{MAX_KEY_LEN, MAX_STORE_BYTES, MAX_VALUE_LEN};
        let mut spec = LoadSpec::default();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("--store-load {pair:?}: write name=value"))?;
            match name.trim() {
                "clients" => spec.clients = number("clients", v, 1, 1000)?,
                "secs" => spec.secs = seconds("secs", v, false)?,
                "read_secs" => spec.read_secs = seconds("read_secs", v, true)?,
                "value" => spec.value = number("value", v, 0, MAX_VALUE_LEN)?,
                "keys" => spec.keys = number("keys", v, 1, 1_000_000)?,
                "prefix" => spec.prefix = v.to_string(),
                "max_lag_ms" => {
                    spec.max_lag =
                        Duration::from_millis(number("max_lag_ms", v, 1, 3_600_000)? as u64)
                }
                "on" => {
                    spec.on = match v {
                        "any" => On::Any,
                        "primary" => On::Primary,
                        "follower" => On::Follower,
                        _ => {
                            return Err(format!("--store-load on={v:?}: any, primary or follower"))
                        }
                    }
                }
                "reads" => {
                    spec.reads = Vec::new();
                    for r in v.split('+').filter(|r| *r != "none") {
                        spec.reads.push(match r {
                            "linearizable" | "lin" => ReadKind::Linearizable,
                            "lease" => ReadKind::Lease,
                            "local" => ReadKind::Local,
                            _ => {
                                return Err(format!(
                                    "--store-load reads={v:?}: linearizable, lease, local \
                                     joined by +, or none"
                                ))
                            }
                        });
                    }
                }
                other => {
                    return Err(format!(
                        "--store-load {other:?}: unknown; known are clients, secs, read_secs, \
                         value, keys, prefix, reads, max_lag_ms, on"
                    ))
                }
            }
        }
        // The longest key this load writes, and the store it fills at most.
        let key_len = spec.prefix.len() + 2 * 20 + 1;
        if key_len > MAX_KEY_LEN {
            return Err(format!(
                "--store-load prefix: keys would be up to {key_len} bytes, over {MAX_KEY_LEN}"
            ));
        }
        let per_client = (spec.keys / spec.clients).max(1);
        let stored = per_client * spec.clients;
        let bytes = stored * (spec.value + key_len + cluster_mode_core::store::PER_KEY_OVERHEAD);
        if bytes > MAX_STORE_BYTES {
            return Err(format!(
                "--store-load keys: {stored} keys of {} value bytes may need {bytes} bytes, over \
                 the store's {MAX_STORE_BYTES}; lower keys or value",
                spec.value
            ));
        }
        Ok(spec)
    }

    fn per_client(&self) -> usize {
        (self.keys / self.clients).max(1)
    }

    fn key(&self, client: usize, i: usize) -> String {
        format!("{}{client}/{}", self.prefix, i % self.per_client())
    }
}

/// Runs `clients` tasks together for `len` (each starts after every one is ready);
/// the merged tally and the time from the start to the last task's end.
async fn phase<F, Fut>(clients: usize, len: Duration, one: F) -> (Tally, Duration)
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = (Instant, Result<(), StoreError>)> + Send,
{
    let one = Arc::new(one);
    let start = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (one, start) = (one.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            start.wait().await;
            let deadline = Instant::now() + len;
            let mut i = 0;
            while Instant::now() < deadline {
                let (since, r) = one(c, i).await;
                match r {
                    Ok(()) => tally.ok(since.elapsed()),
                    Err(e) => tally.error(e),
                }
                i += 1;
            }
            tally
        }));
    }
    start.wait().await;
    let began = Instant::now();
    let mut all = Tally::default();
    for t in tasks {
        if let Ok(t) = t.await {
            all.merge(t);
        }
    }
    (all, began.elapsed())
}

/// Waits for an agreed primary, decides whether this node runs the load, runs it and
/// prints its `STORE_LOAD` line.
pub async fn run(cluster: Cluster, spec: LoadSpec, min_nodes: usize) {
    let line = match load(&cluster, &spec, min_nodes).await {
        Ok(v) | Err(v) => v,
    };
    println!("STORE_LOAD {line}");
}

async fn load(cluster: &Cluster, spec: &LoadSpec, min_nodes: usize) -> Result<Value, Value> {
    let waited = Instant::now();
    let primary = loop {
        if let Some(p) = cluster.primary() {
            if cluster.members().len() >= min_nodes {
                break p;
            }
        }
        if waited.elapsed() > AGREE_WITHIN {
            return Err(json!({ "error": format!("no agreed primary within {AGREE_WITHIN:?}") }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let me = cluster.id();
    let term = cluster.status().term;
    let members = cluster.members();
    let role = if primary.id == me {
        "primary"
    } else {
        "follower"
    };
    let chosen = match spec.on {
        On::Any => true,
        On::Primary => primary.id == me,
        On::Follower => {
            members
                .iter()
                .filter(|m| m.id != primary.id)
                .min_by_key(|m| m.addr.to_string())
                .map(|m| m.id)
                == Some(me)
        }
    };
    if !chosen {
        return Err(json!({ "skipped": format!("on={:?}; this node is {role}", spec.on) }));
    }
    let stores: Arc<Vec<_>> = Arc::new((0..spec.clients).map(|_| cluster.store()).collect());
    let value = vec![b'v'; spec.value];

    // Each client writes once, untimed: that registers its session.
    let mut ready = Vec::new();
    for (c, s) in stores.iter().enumerate() {
        let (s, k, v) = (s.clone(), spec.key(c, 0), value.clone());
        ready.push(tokio::spawn(async move { s.put(k, v).await }));
    }
    for r in ready {
        if let Ok(Err(e)) = r.await {
            return Err(json!({ "error": format!("registering a client: {e}") }));
        }
    }

    let spec_w = spec.clone();
    let st = stores.clone();
    let (tally, elapsed) = phase(spec.clients, spec.secs, move |c, i| {
        let (s, k, v) = (st[c].clone(), spec_w.key(c, i + 1), value.clone());
        async move {
            let t = Instant::now();
            (t, s.put(k, v).await.map(|_| ()))
        }
    })
    .await;
    let writes = tally.report(elapsed);

    let mut reads = serde_json::Map::new();
    if !spec.read_secs.is_zero() {
        for kind in &spec.reads {
            let consistency = match kind {
                ReadKind::Linearizable => Consistency::Linearizable,
                ReadKind::Lease => Consistency::Lease,
                ReadKind::Local => Consistency::Local {
                    max_lag: spec.max_lag,
                },
            };
            let (st, sp) = (stores.clone(), spec.clone());
            let (tally, elapsed) = phase(spec.clients, spec.read_secs, move |c, i| {
                let (s, k) = (st[c].clone(), sp.key(c, i));
                async move {
                    let t = Instant::now();
                    (t, s.get(k, consistency).await.map(|_| ()))
                }
            })
            .await;
            reads.insert(kind.name().into(), tally.report(elapsed));
        }
    }
    // One leader per term: the same term at the end means the same primary throughout.
    let term_after = cluster.status().term;
    Ok(json!({
        "node": cluster.address(),
        "role": role,
        "members": members.len(),
        "clients": spec.clients,
        "value_bytes": spec.value,
        "keys": spec.per_client() * spec.clients,
        "term": term,
        "primary_changed": term_after != term,
        "writes": writes,
        "reads": reads,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_field_and_names_the_bad_one() {
        let s = LoadSpec::parse(
            "clients=64,secs=0.5,read_secs=0,value=10,keys=128,prefix=b/,reads=lin+local,\
             max_lag_ms=50,on=follower",
        )
        .expect("parses");
        assert_eq!(s.clients, 64);
        assert_eq!(s.secs, Duration::from_millis(500));
        assert_eq!(s.read_secs, Duration::ZERO);
        assert_eq!((s.value, s.keys, s.prefix.as_str()), (10, 128, "b/"));
        assert_eq!(s.reads, vec![ReadKind::Linearizable, ReadKind::Local]);
        assert_eq!((s.max_lag, s.on), (Duration::from_millis(50), On::Follower));
        assert_eq!(LoadSpec::parse("").expect("defaults"), LoadSpec::default());
        assert!(LoadSpec::parse("reads=none")
            .expect("none")
            .reads
            .is_empty());
        for (bad, field) in [
            ("clients=0", "clients"),
            ("secs=-1", "secs"),
            ("secs=nan", "secs"),
            ("value=999999", "value"),
            ("on=leader", "on"),
            ("reads=lin+fast", "reads"),
            ("colour=red", "colour"),
            ("clients", "clients"),
            // 1024 keys of 16 KiB cannot fit the 512 KiB store.
            ("value=16384", "keys"),
        ] {
            let e = LoadSpec::parse(bad).expect_err(bad);
            assert!(e.contains(field), "{bad}: {e}");
        }
    }

    #[test]
    fn keys_stay_in_the_key_space() {
        let s = LoadSpec::parse("clients=3,keys=7").expect("parses");
        let keys: std::collections::BTreeSet<String> = (0..3)
            .flat_map(|c| (0..100).map(move |i| (c, i)))
            .map(|(c, i)| s.key(c, i))
            .collect();
        assert_eq!(keys.len(), 6, "{keys:?}");
        assert!(keys.contains("load/2/1"));
    }
}
