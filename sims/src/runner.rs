//! Runs one scenario for one seed inside a fresh madsim runtime and checks it.

use crate::checker::{self, Liveness, Violation};
use crate::scenarios::{Plan, Scenario};
use cluster_mode_madsim::{SimCluster, Trace};

/// The result of one seed.
#[derive(Debug)]
pub struct RunResult {
    /// Which scenario.
    pub scenario: Scenario,
    /// Which seed.
    pub seed: u64,
    /// The recorded history.
    pub trace: Trace,
    /// What the scenario reported.
    pub plan: Plan,
    /// The liveness bound applied (ns after the last fault).
    pub bound_ns: u64,
    /// Broken invariants (empty: passed).
    pub violations: Vec<Violation>,
}

impl RunResult {
    /// The one-line command that replays this seed.
    pub fn replay_command(&self) -> String {
        replay_command(self.scenario, self.seed)
    }

    /// A failure report: scenario, seed, violations, replay command.
    pub fn report(&self) -> String {
        let mut s = format!(
            "FAILED scenario={} seed={} ({} violation(s))\n",
            self.scenario.name(),
            self.seed,
            self.violations.len()
        );
        for v in self.violations.iter().take(10) {
            s.push_str(&format!("  {v}\n"));
        }
        s.push_str(&format!("  replay: {}\n", self.replay_command()));
        s
    }
}

/// The one-line command that replays `seed` of `scenario` and prints its trace
/// (with the `SIM_ROLES` of this process, if set, since it changes the run).
pub fn replay_command(scenario: Scenario, seed: u64) -> String {
    replay_command_of(scenario.name(), seed)
}

/// [`replay_command`] by scenario name.
pub fn replay_command_of(name: &str, seed: u64) -> String {
    let roles = std::env::var("SIM_ROLES")
        .map(|r| format!("SIM_ROLES={r} "))
        .unwrap_or_default();
    format!("{roles}cargo sim replay {name} --seed {seed}")
}

/// Runs `scenario` with `seed` and checks the recorded history: safety and the
/// liveness bound.
pub fn run_seed(scenario: Scenario, seed: u64) -> RunResult {
    run_seed_with(scenario, seed, true)
}

/// Like [`run_seed`]; `liveness: false` checks only the safety invariants.
///
/// Each run gets a fresh OS thread: the shell's hyper path draws node ids and core
/// seeds from `rand`'s thread-local generator, which outlives one madsim runtime, so two
/// runs on one thread would not be reproducible (see FINDINGS.md #5).
pub fn run_seed_with(scenario: Scenario, seed: u64, liveness: bool) -> RunResult {
    run_seed_roles(scenario, seed, liveness, None)
}

/// Like [`run_seed_with`], with `roles` roles declared by every node instead of the
/// scenario's own count ([`SimOptions::roles`](cluster_mode_madsim::SimOptions::roles)).
/// `None`: the `SIM_ROLES` environment variable if set (`SIM_ROLES=64 cargo sim
/// replay leave-during-election --seed 0`), else the scenario's count.
pub fn run_seed_roles(
    scenario: Scenario,
    seed: u64,
    liveness: bool,
    roles: Option<usize>,
) -> RunResult {
    let roles = roles.or_else(|| std::env::var("SIM_ROLES").ok()?.parse().ok());
    std::thread::scope(|s| {
        match s
            .spawn(move || run_in_this_thread(scenario, seed, liveness, roles))
            .join()
        {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

fn run_in_this_thread(
    scenario: Scenario,
    seed: u64,
    liveness: bool,
    roles: Option<usize>,
) -> RunResult {
    let rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    let cfg = scenario.config();
    let mut opts = scenario.options();
    if let Some(r) = roles {
        opts.roles = r;
    }
    let (trace, plan, bound) = rt.block_on(async move {
        let c = SimCluster::new(cfg.clone(), opts);
        let plan = scenario.run(c.clone()).await;
        let interval = c.registry(|r| r.interval_ms);
        let bound = plan
            .bound_ns
            .unwrap_or(checker::liveness_bound_ns(&cfg, interval) + plan.extra_bound_ns);
        // Run until every live member agrees and every expected role has one live
        // owner (or twice the bound passed, so that a late agreement is still
        // measured), then one more second.
        let deadline = plan.last_fault_ns + 2 * bound;
        loop {
            let views = c.views();
            let now = c.now_ns();
            let agreed = checker::agreed_primary(views.iter().map(|(_, v)| v), now, true).is_some()
                && checker::roles_unsettled(views.iter().map(|(_, v)| v), now, &plan.roles)
                    .is_none();
            if agreed || now > deadline {
                break;
            }
            c.sleep_ms(100).await;
        }
        c.sleep_ms(1_000).await;
        // The history, then free the run's tasks and world before the runtime goes
        // (FINDINGS.md #7).
        let trace = c.finish().await;
        (trace, plan, bound)
    });
    let live = liveness.then(|| Liveness {
        last_fault_ns: plan.last_fault_ns,
        bound_ns: bound,
        roles: plan.roles.clone(),
    });
    let mut violations = checker::check(&trace, live);
    violations.extend(plan.violations.iter().cloned());
    if let Some(store) = &plan.store {
        violations.extend(store.check(liveness));
    }
    RunResult {
        scenario,
        seed,
        trace,
        plan,
        bound_ns: bound,
        violations,
    }
}
