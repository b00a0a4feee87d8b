//! The interpreter of the trace scripts in `core/tests/traces/*.txt` (the format is
//! described at the top of `core/tests/scenarios.rs` and in `core/tests/traces/README.md`).
//!
//! A file is prose (`#` comments and blank lines, kept as they are) and blocks:
//!
//! ```text
//! directive args
//! ----
//! the output it produced, one line each (no blank line; `ok` when there is none)
//! ```
//!
//! The harness runs every directive, and compares the whole file it would write
//! (prose and directives as they are, outputs as produced) with the file on disk.
//! `UPDATE_TRACES=1` writes it instead. `check` directives and the safety checker are
//! assertions: they fail the test whatever `UPDATE_TRACES` says.

use super::net::{MsgTrace, Net, NetConfig};
use cluster_mode_core::{ClusterId, Config, NodeId, VoterState};
use std::collections::BTreeMap;
use std::time::Duration;

enum Item {
    Prose(String),
    Block {
        line: usize,
        directive: String,
        expected: Vec<String>,
    },
}

fn parse(path: &str, text: &str) -> Vec<Item> {
    let lines: Vec<&str> = text.lines().collect();
    let mut items = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if l.trim().is_empty() || l.starts_with('#') {
            items.push(Item::Prose(l.to_string()));
            i += 1;
            continue;
        }
        let line = i + 1;
        assert!(
            lines.get(i + 1) == Some(&"----"),
            "{path}:{line}: a directive must be followed by a `----` line: `{l}`"
        );
        i += 2;
        let mut expected = Vec::new();
        while i < lines.len() && !lines[i].trim().is_empty() {
            expected.push(lines[i].to_string());
            i += 1;
        }
        // The blank line that ends the output belongs to the block.
        if i < lines.len() {
            i += 1;
        }
        items.push(Item::Block {
            line,
            directive: l.to_string(),
            expected,
        });
    }
    items
}

fn render(items: &[Item], outputs: &[Vec<String>]) -> String {
    let mut s = String::new();
    let mut outs = outputs.iter();
    for (n, item) in items.iter().enumerate() {
        match item {
            Item::Prose(p) => {
                s.push_str(p);
                s.push('\n');
            }
            Item::Block { directive, .. } => {
                s.push_str(directive);
                s.push_str("\n----\n");
                for o in outs.next().expect("one output per block") {
                    s.push_str(o);
                    s.push('\n');
                }
                if n + 1 < items.len() {
                    s.push('\n');
                }
            }
        }
    }
    s
}

/// Runs `tests/traces/NAME.txt` and compares (or, with `UPDATE_TRACES`, rewrites) its
/// outputs.
pub fn run_trace(name: &str) {
    let rel = format!("core/tests/traces/{name}.txt");
    let path = format!("{}/tests/traces/{name}.txt", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let items = parse(&rel, &text);
    let mut runner = Runner::default();
    let mut outputs = Vec::new();
    for item in &items {
        if let Item::Block {
            line, directive, ..
        } = item
        {
            let at = format!("{rel}:{line} `{directive}`");
            let out = runner.directive(&at, directive);
            if let Some(net) = &runner.net {
                assert!(
                    net.checker.violations.is_empty(),
                    "{at}: seed {}: safety violations {:?}",
                    net.seed,
                    net.checker.violations
                );
            }
            outputs.push(if out.is_empty() {
                vec!["ok".to_string()]
            } else {
                out
            });
        }
    }
    let actual = render(&items, &outputs);
    if std::env::var_os("UPDATE_TRACES").is_some() {
        if actual != text {
            std::fs::write(&path, &actual).unwrap_or_else(|e| panic!("{rel}: {e}"));
        }
        return;
    }
    if actual == text {
        return;
    }
    let exp: Vec<&str> = text.lines().collect();
    let act: Vec<&str> = actual.lines().collect();
    let at = exp
        .iter()
        .zip(act.iter())
        .position(|(a, b)| a != b)
        .unwrap_or(exp.len().min(act.len()));
    // The block the first difference falls in, for the message.
    let mut block = "";
    for l in exp.iter().take(at + 1) {
        if !l.trim().is_empty() && !l.starts_with('#') && !l.starts_with(' ') && *l != "----" {
            block = l;
        }
    }
    let show = |v: &[&str]| {
        v.iter()
            .skip(at)
            .take(6)
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    panic!(
        "{rel}:{}: the trace differs from the file (first differing line, in the output of `{block}`)\n\
         expected (file):\n{}\n\
         actual:\n{}\n\
         If the change is intended, rerun with UPDATE_TRACES=1 and review `git diff {rel}`.",
        at + 1,
        show(&exp),
        show(&act),
    );
}

#[derive(Default)]
struct Runner {
    net: Option<Net>,
    /// Labels set by `mark`: the slot, its term at that moment, and the id of the
    /// process then in the slot.
    labels: BTreeMap<String, (usize, u64, NodeId, Option<ClusterId>)>,
}

fn parse_duration(at: &str, s: &str) -> Duration {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .unwrap_or_else(|_| panic!("{at}: bad duration `{s}`"));
    match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        _ => panic!("{at}: bad duration `{s}` (use ms or s)"),
    }
}

fn ms(at: &str, s: &str) -> u64 {
    parse_duration(at, s).as_millis() as u64
}

/// `key=value` arguments.
fn kv<'a>(at: &str, args: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    args.iter()
        .map(|a| {
            a.split_once('=')
                .unwrap_or_else(|| panic!("{at}: expected key=value, got `{a}`"))
        })
        .collect()
}

impl Runner {
    fn net(&mut self, at: &str) -> &mut Net {
        self.net
            .as_mut()
            .unwrap_or_else(|| panic!("{at}: `init` must come first"))
    }

    /// A node: `nK` by name, `primary` (the one primary), `follower` (the first live
    /// node that is not primary), `owner:ROLE` (the live node that holds ROLE now), or
    /// a label set by `mark`.
    fn slot(&mut self, at: &str, r: &str) -> usize {
        if let Some((slot, _, _, _)) = self.labels.get(r) {
            return *slot;
        }
        let net = self.net(at);
        if let Some(role) = r.strip_prefix("owner:") {
            return net
                .holder(role)
                .unwrap_or_else(|| panic!("{at}: nobody holds {role}"))
                .0;
        }
        match r {
            "primary" => net
                .the_primary()
                .unwrap_or_else(|| panic!("{at}: no single primary: {:?}", net.primaries())),
            "follower" => {
                let p = net.the_primary();
                net.live()
                    .find(|s| Some(*s) != p)
                    .unwrap_or_else(|| panic!("{at}: no follower"))
            }
            name => net
                .nodes
                .iter()
                .position(|n| n.name == name)
                .unwrap_or_else(|| panic!("{at}: no node or label `{name}`")),
        }
    }

    /// Node names: `n1 n2 n3` or a range `n1..n1000`.
    fn names(at: &str, args: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for a in args {
            if let Some((lo, hi)) = a.split_once("..") {
                let num = |s: &str| -> usize {
                    s.strip_prefix('n')
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("{at}: bad node range `{a}`"))
                };
                out.extend((num(lo)..=num(hi)).map(|k| format!("n{k}")));
            } else {
                out.push(a.to_string());
            }
        }
        out
    }

    fn directive(&mut self, at: &str, line: &str) -> Vec<String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (cmd, args) = words.split_first().expect("non-empty");
        let mut out = Vec::new();
        match *cmd {
            "init" => {
                let mut seed = None;
                let mut cfg = Config::fast_test();
                let mut netcfg = NetConfig::default();
                let mut durable = false;
                for (k, v) in kv(at, args) {
                    match k {
                        "seed" => seed = Some(v.parse().expect("seed")),
                        "config" => {
                            cfg = match v {
                                "fast-test" => Config::fast_test(),
                                "datacenter" => Config::datacenter(),
                                _ => panic!("{at}: unknown config `{v}`"),
                            }
                        }
                        "min-nodes" => cfg = cfg.with_min_nodes(v.parse().expect("number")),
                        "max-voters" => cfg = cfg.with_max_voters(v.parse().expect("number")),
                        "removal-grace" => cfg.removal_grace = parse_duration(at, v),
                        "discovery-interval" => netcfg.discovery_interval = parse_duration(at, v),
                        "max-latency" => netcfg.max_latency = parse_duration(at, v),
                        "data" => durable = v == "on",
                        _ => panic!("{at}: unknown init option `{k}`"),
                    }
                }
                let seed = seed.unwrap_or_else(|| panic!("{at}: init needs seed=N"));
                let mut net = Net::new(seed, cfg, netcfg);
                net.durable = durable;
                self.net = Some(net);
            }
            "trace" => {
                for (k, v) in kv(at, args) {
                    let net = self.net(at);
                    match (k, v) {
                        ("events", "on") => net.record_trace = true,
                        ("events", "off") => net.record_trace = false,
                        ("messages", "on") => net.msg_trace = MsgTrace::All,
                        ("messages", "off") => net.msg_trace = MsgTrace::Off,
                        ("messages", "no-heartbeats") => net.msg_trace = MsgTrace::NoHeartbeats,
                        _ => panic!("{at}: unknown trace option `{k}={v}`"),
                    }
                }
            }
            "start" => {
                for name in Self::names(at, args) {
                    let net = self.net(at);
                    let expect = format!("n{}", net.nodes.len() + 1);
                    assert_eq!(name, expect, "{at}: nodes start in order");
                    net.add_node();
                }
            }
            "run" => {
                let [d] = args else {
                    panic!("{at}: run DURATION")
                };
                let d = ms(at, d);
                self.net(at).run_for(d);
            }
            "settle" => {
                let (max, rest) = args
                    .split_first()
                    .unwrap_or_else(|| panic!("{at}: settle MAX [step=D] [until-removed=NODE]"));
                let max = ms(at, max);
                let mut step = 5;
                let mut removed = None;
                for (k, v) in kv(at, rest) {
                    match k {
                        "step" => step = ms(at, v),
                        "until-removed" => removed = Some(self.id(at, v)),
                        _ => panic!("{at}: unknown settle option `{k}`"),
                    }
                }
                let net = self.net(at);
                let done = |net: &Net| {
                    net.settled()
                        && removed.is_none_or(|id| {
                            !net.nodes[net.the_primary().unwrap()]
                                .core
                                .members()
                                .contains(id)
                        })
                };
                let start = net.now / 1_000_000;
                loop {
                    let waited = net.now / 1_000_000 - start;
                    if done(net) {
                        net.trace.push(format!(
                            "{:>7}ms  settled after {waited}ms",
                            net.now / 1_000_000
                        ));
                        break;
                    }
                    if waited >= max {
                        panic!(
                            "{at}: not settled after {max}ms (seed {}): {}\ntrace:\n{}",
                            net.seed,
                            diagnose(net),
                            net.trace_text()
                        );
                    }
                    net.run_for(step);
                }
            }
            "crash" | "restart" | "restart-with-data" | "move-with-data" | "replace" | "unlist"
            | "isolate" | "leave" | "pause" | "resume" => {
                let [r] = args else {
                    panic!("{at}: {cmd} NODE")
                };
                let slot = self.slot(at, r);
                let net = self.net(at);
                match *cmd {
                    "crash" => net.crash(slot),
                    "restart" => net.restart(slot),
                    "restart-with-data" => {
                        if net.nodes[slot].alive {
                            net.crash(slot);
                        }
                        net.restart_with_data(slot);
                    }
                    "move-with-data" => net.move_with_data(slot),
                    "replace" => {
                        net.replace(slot);
                    }
                    "unlist" => {
                        net.unlist(slot);
                        let name = net.nodes[slot].name.clone();
                        net.note(format!("{name} no longer listed by discovery"));
                    }
                    "isolate" => net.isolate(slot),
                    "leave" => net.leave(slot),
                    "pause" => net.pause(slot),
                    _ => net.resume(slot),
                }
            }
            "heal" => self.net(at).heal(),
            "roles" => {
                let [n] = args else { panic!("{at}: roles N") };
                let n: usize = n.parse().unwrap_or_else(|_| panic!("{at}: roles N"));
                self.net(at).declare_roles_everywhere(n);
            }
            "hold" => {
                let [r] = args else { panic!("{at}: hold NODE") };
                let s = self.slot(at, r);
                let net = self.net(at);
                let now = net.local(s, net.now);
                let name = net.nodes[s].name.clone();
                out.push(match net.nodes[s].core.status(now).role_hold_until {
                    Some(h) => format!(
                        "{name}'s hold ends at {}ms (its clock, in network time)",
                        net.real_time_of(s, h) / 1_000_000
                    ),
                    None => format!("{name} has no hold"),
                });
            }
            "owners" => {
                let p = self.slot(at, "primary");
                let net = self.net(at);
                for st in net.nodes[p].core.status(net.local(p, net.now)).roles {
                    let owner = st.owner.map_or("-".into(), |o| net.name_of(o));
                    let token = st.token.map_or("-".into(), |t| t.index.to_string());
                    let held = match net.holder(&st.role) {
                        Some((s, t)) => {
                            format!("held by {} (token {})", net.nodes[s].name, t.index)
                        }
                        None => "held by nobody".into(),
                    };
                    let releasing = if st.releasing { ", releasing" } else { "" };
                    out.push(format!(
                        "{}: owner {owner} token {token}{releasing}, {held}",
                        st.role
                    ));
                }
            }
            "cut" => {
                let [a, b] = args else {
                    panic!("{at}: cut NODE NODE")
                };
                let (a, b) = (self.slot(at, a), self.slot(at, b));
                self.net(at).cut_link(a, b);
            }
            "discovery" => {
                let verb = args
                    .iter()
                    .position(|a| *a == "fails" || *a == "lists")
                    .unwrap_or_else(|| panic!("{at}: discovery NODE... fails|lists ..."));
                let slots: Vec<usize> = args[..verb].iter().map(|r| self.slot(at, r)).collect();
                let view = match (args[verb], &args[verb + 1..]) {
                    ("fails", []) => None,
                    ("lists", ["all"]) => Some(None),
                    ("lists", ["nothing"]) => Some(Some(Vec::new())),
                    ("lists", names) => Some(Some(
                        names.iter().map(|r| self.slot(at, r)).collect::<Vec<_>>(),
                    )),
                    _ => panic!("{at}: discovery NODE... fails|lists all|nothing|NODE..."),
                };
                let net = self.net(at);
                for s in slots {
                    match &view {
                        None => net.nodes[s].discovery_fails = true,
                        Some(v) => {
                            net.nodes[s].discovery_fails = false;
                            net.nodes[s].discovery_view = v.clone();
                        }
                    }
                }
            }
            "force-recover" => {
                let [r] = args else {
                    panic!("{at}: force-recover NODE")
                };
                let slot = self.slot(at, r);
                self.net(at).force_recover(slot);
            }
            "recovery" => {
                // What a stuck member reports (P11): each voter, and why it waits.
                let [r] = args else {
                    panic!("{at}: recovery NODE")
                };
                let slot = self.slot(at, r);
                let net = self.net(at);
                let now = net.local(slot, net.now);
                let status = net.nodes[slot].core.status(now);
                match status.recovery {
                    None => out.push("no recovery view (a leader was heard recently)".into()),
                    Some(rv) => {
                        for v in &rv.voters {
                            let state = match v.state {
                                VoterState::Live => "live".to_string(),
                                VoterState::ProvenDead { successor: Some(s) } => format!(
                                    "proven dead ({} answers at its address)",
                                    net.name_of(s)
                                ),
                                VoterState::ProvenDead { successor: None } => {
                                    "proven dead (discovery dropped it)".to_string()
                                }
                                _ => "missing, no proof of death".to_string(),
                            };
                            out.push(format!("voter {}: {state}", net.name_of(v.id)));
                        }
                        out.push(match rv.blocked {
                            Some(why) => format!("blocked: {}", net.rename_ids(&why)),
                            None => "recovering".to_string(),
                        });
                    }
                }
            }
            "mark" => {
                for (label, r) in kv(at, args) {
                    let slot = self.slot(at, r);
                    let net = self.net(at);
                    let term = net.nodes[slot].core.term();
                    let id = net.nodes[slot].core.identity().id;
                    let cluster = net.nodes[slot].core.cluster();
                    out.push(format!("{label} = {} (term {term})", net.nodes[slot].name));
                    self.labels
                        .insert(label.to_string(), (slot, term, id, cluster));
                }
            }
            "check" => self.check(at, args),
            _ => panic!("{at}: unknown directive `{cmd}`"),
        }
        let net = self.net(at);
        let mut lines = std::mem::take(&mut net.trace);
        lines.extend(out);
        lines
    }

    /// The process a node reference means: a label's process as it was when marked,
    /// otherwise the one now in the slot.
    fn id(&mut self, at: &str, r: &str) -> NodeId {
        if let Some((_, _, id, _)) = self.labels.get(r) {
            return *id;
        }
        let slot = self.slot(at, r);
        self.net(at).nodes[slot].core.identity().id
    }

    fn label_term(&self, at: &str, label: &str) -> u64 {
        self.labels
            .get(label)
            .unwrap_or_else(|| panic!("{at}: no label `{label}` (set one with mark)"))
            .1
    }

    /// Assertions. A failed check panics: it is never written into a trace.
    fn check(&mut self, at: &str, args: &[&str]) {
        let fail = |what: String| -> ! { panic!("{at}: check failed: {what}") };
        match args {
            ["settled"] => {
                let net = self.net(at);
                if !net.settled() {
                    fail(diagnose(net));
                }
            }
            ["primary"] => {
                self.slot(at, "primary");
            }
            [kv] if kv.starts_with("primary=") || kv.starts_with("primary!=") => {
                let (neg, r) = match kv.strip_prefix("primary!=") {
                    Some(r) => (true, r),
                    None => (false, &kv["primary=".len()..]),
                };
                let want = self.slot(at, r);
                let p = self.slot(at, "primary");
                if (p == want) == neg {
                    let net = self.net(at);
                    fail(format!("the primary is {}", net.nodes[p].name));
                }
            }
            ["not-leader", r] => {
                let s = self.slot(at, r);
                if self.net(at).nodes[s].core.is_leader() {
                    fail(format!("{r} is still leader"));
                }
            }
            ["term", r, op, label] => {
                let s = self.slot(at, r);
                let now = self.net(at).nodes[s].core.term();
                let then = self.label_term(at, label);
                let ok = match *op {
                    "=" => now == then,
                    ">" => now > then,
                    _ => panic!("{at}: check term NODE =|> LABEL"),
                };
                if !ok {
                    fail(format!("term of {r} is {now}, {label}'s was {then}"));
                }
            }
            ["token", r, ">", label] => {
                // Fencing tokens compare as (cluster, term): the cluster id's epoch
                // comes first (P7, P11).
                let s = self.slot(at, r);
                let core = &self.net(at).nodes[s].core;
                let now = (core.cluster(), core.term());
                let &(_, term, _, cluster) = self
                    .labels
                    .get(*label)
                    .unwrap_or_else(|| panic!("{at}: no label `{label}`"));
                if now <= (cluster, term) {
                    fail(format!(
                        "token of {r} is {now:?}, not above {label}'s {:?}",
                        (cluster, term)
                    ));
                }
            }
            [kv] if kv.starts_with("voters=") || kv.starts_with("members=") => {
                let (what, n) = kv.split_once('=').unwrap();
                let n: usize = n.parse().expect("number");
                let p = self.slot(at, "primary");
                let m = self.net(at).nodes[p].core.members();
                let have = if what == "voters" {
                    m.voter_count()
                } else {
                    m.members.len()
                };
                if have != n {
                    fail(format!("the primary's configuration has {have} {what}"));
                }
            }
            [kv] if kv.starts_with("clusters=") => {
                let n: usize = kv["clusters=".len()..].parse().expect("number");
                let have = self.net(at).checker.clusters();
                if have != n {
                    fail(format!("{have} clusters formed"));
                }
            }
            ["member" | "not-member", r] => {
                let id = self.id(at, r);
                let p = self.slot(at, "primary");
                let net = self.net(at);
                let is = net.nodes[p].core.members().contains(id);
                if is != (args[0] == "member") {
                    fail(format!("{r} member of the primary's configuration: {is}"));
                }
            }
            ["left", r] => {
                let s = self.slot(at, r);
                if !self.net(at).nodes[s].left {
                    fail(format!("{r} did not finish leaving"));
                }
            }
            ["roles-held"] => {
                // Every role of the primary's table is held, each by the node the
                // table names (the checker already saw to "at most one").
                let p = self.slot(at, "primary");
                let net = self.net(at);
                let table = net.nodes[p].core.status(net.local(p, net.now)).roles;
                if table.is_empty() {
                    fail("the primary's role table is empty".into());
                }
                for st in table {
                    let held = net
                        .holder(&st.role)
                        .map(|(s, _)| net.nodes[s].core.identity().id);
                    if held.is_none() || held != st.owner {
                        fail(format!(
                            "{} is owned by {:?} in the table, held by {:?}",
                            st.role,
                            st.owner.map(|o| net.name_of(o)),
                            held.map(|o| net.name_of(o))
                        ));
                    }
                }
            }
            ["same-cluster", a, b] => {
                let (a, b) = (self.slot(at, a), self.slot(at, b));
                let net = self.net(at);
                let (ca, cb) = (net.nodes[a].core.cluster(), net.nodes[b].core.cluster());
                if ca.is_none() || ca != cb {
                    fail(format!("clusters {ca:?} and {cb:?}"));
                }
            }
            _ => panic!("{at}: unknown check `{}`", args.join(" ")),
        }
    }
}

/// Why a network is not settled, for failure messages.
fn diagnose(net: &Net) -> String {
    let n = net.nodes.len();
    let in_cluster = net
        .nodes
        .iter()
        .filter(|n| n.core.cluster().is_some())
        .count();
    let leaders: Vec<String> = net
        .nodes
        .iter()
        .filter(|n| n.core.is_leader())
        .map(|n| {
            format!(
                "{} term {} members {}",
                n.name,
                n.core.term(),
                n.core.members().members.len()
            )
        })
        .collect();
    let mut views: Vec<(usize, u64)> = net
        .nodes
        .iter()
        .map(|n| (n.core.members().members.len(), n.core.commit_index()))
        .collect();
    views.sort();
    views.dedup();
    views.truncate(20);
    let primaries: Vec<&str> = net
        .primaries()
        .iter()
        .map(|s| net.nodes[*s].name.as_str())
        .collect();
    format!(
        "{in_cluster}/{n} in a cluster, primaries {primaries:?}, leaders {leaders:?}, \
         (member count, commit index) views {views:?}"
    )
}
