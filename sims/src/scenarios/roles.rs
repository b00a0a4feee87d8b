//! Scenarios of named roles (P13). Every scenario runs with the 64 roles every node
//! declares ([`cluster_mode_madsim::SimOptions::roles`]), so the checker's role
//! invariants (one owner at a time, tokens rising, every role owned after the bound)
//! apply to all of them; these ones move roles on purpose: members joining and
//! leaving, crashes in the middle of a move, and roles declared and removed at run
//! time through a member that is not the primary, under faults.

use super::Ctx;
use cluster_mode_core::Config;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// `Config::datacenter()` with `role_failover_timeout` at 150 ms, below the 250 ms
/// lease (the smallest `validate` accepts is above two heartbeats, 100 ms). With the
/// default 500 ms, an owner the primary counts as failed has had no hold renewal for
/// longer than any hold lasts, so the rule "grant a failed owner's roles only once
/// every hold it could have has ended" is never the deciding one; here it is.
pub fn fast_failover_config() -> Config {
    let mut cfg = Config::datacenter();
    cfg.role_failover_timeout = Duration::from_millis(110);
    cfg
}

/// The most roles the placement lets one member hold with `roles` roles over
/// `members` members: `ceil(1.25 x roles / members)` (core/src/placement.rs).
pub fn role_cap(roles: usize, members: usize) -> usize {
    (5 * roles).div_ceil(4 * members.max(1))
}

impl Ctx {
    /// How many roles each running, unpaused node holds now, by slot.
    pub fn role_counts(&self) -> BTreeMap<usize, usize> {
        let now = self.c.now_ns();
        self.c
            .views()
            .into_iter()
            .map(|(s, v)| (s, v.roles_held_at(now).count()))
            .collect()
    }

    /// Waits up to `max_ms` for an agreed primary and every expected role owned by
    /// exactly one live member; returns whether that happened.
    pub async fn wait_roles(&self, max_ms: u64) -> bool {
        let mut waited = 0;
        loop {
            let views = self.c.views();
            let now = self.c.now_ns();
            let live = || views.iter().map(|(_, v)| v);
            if crate::checker::agreed_primary(live(), now, true).is_some()
                && crate::checker::roles_unsettled(live(), now, &self.roles).is_none()
            {
                return true;
            }
            if waited >= max_ms {
                return false;
            }
            self.sleep(10).await;
            waited += 10;
        }
    }

    /// Waits up to `max_ms` for the roles to be settled and spread: every live node
    /// at most at the placement's cap and each of `newcomers` holding at least one
    /// role. Records a violation of the scenario if that does not happen.
    async fn expect_balanced(&mut self, newcomers: &[usize], max_ms: u64) {
        let mut waited = 0;
        loop {
            let counts = self.role_counts();
            let cap = role_cap(self.roles.len(), counts.len());
            let spread = counts.values().all(|c| *c <= cap)
                && newcomers
                    .iter()
                    .all(|n| counts.get(n).is_some_and(|c| *c > 0));
            if spread && self.wait_roles(0).await {
                return;
            }
            if waited >= max_ms {
                let shown: Vec<String> = counts
                    .iter()
                    .map(|(s, c)| format!("{} {c}", self.name(*s)))
                    .collect();
                let new: Vec<String> = newcomers.iter().map(|s| self.name(*s)).collect();
                self.violation(format!(
                    "roles not spread {max_ms} ms after the last change: {} roles over {} members (cap {cap}), newcomers [{}]; held: {}",
                    self.roles.len(),
                    counts.len(),
                    new.join(", "),
                    shown.join(", ")
                ));
                return;
            }
            self.sleep(50).await;
            waited += 50;
        }
    }

    /// The slot of the agreed primary now, if any.
    fn primary_now(&self) -> Option<usize> {
        let views = self.c.views();
        let now = self.c.now_ns();
        let id = crate::checker::agreed_primary(views.iter().map(|(_, v)| v), now, false)?;
        views.iter().find(|(_, v)| v.id == id).map(|(s, _)| *s)
    }
}

/// 5 pods, roles settled; a 6th and then a 7th pod join. Asserted: the newcomers get
/// roles and, once settled, no member holds more than the cap (12 of 64 over 7).
pub(super) async fn scale_up(s: &mut Ctx) {
    if s.start(5).await.is_none() || !s.wait_roles(10_000).await {
        return;
    }
    s.sleep_rand(0, 1_000).await;
    let mut newcomers = Vec::new();
    for _ in 0..2 {
        let n = s.add();
        newcomers.push(n);
        s.fault(format!("scale up: {} added", s.name(n)));
        s.sleep_rand(200, 1_500).await;
    }
    s.expect_balanced(&newcomers, 15_000).await;
    s.sleep(1_000).await;
}

/// 7 pods, roles settled; three leave one at a time, at random by graceful leave or
/// by a crash (the pod gone), at least one of each, down to 4. Asserted: once
/// settled, no member holds more than the cap (20 of 64 over 4).
pub(super) async fn scale_down(s: &mut Ctx) {
    if s.start(7).await.is_none() || !s.wait_roles(10_000).await {
        return;
    }
    let first_leaves = s.range(0, 2) == 0;
    for i in 0..3 {
        s.sleep_rand(500, 2_000).await;
        let k = s.range(0, s.pods.len() as u64) as usize;
        let victim = s.pods.remove(k);
        let leave = match i {
            0 => first_leaves,
            1 => !first_leaves,
            _ => s.range(0, 2) == 0,
        };
        if leave {
            s.c.leave(victim);
            s.fault(format!("scale down: {} leaves", s.name(victim)));
            s.sleep_rand(1_000, 2_000).await;
            s.c.kill(victim, true);
        } else {
            s.c.kill(victim, true);
            s.fault(format!("scale down: {} crashes (pod gone)", s.name(victim)));
        }
    }
    // A crashed member stays listed until the removal grace passes.
    s.extra_bound_ns = u64::try_from(s.c.config().removal_grace.as_nanos()).unwrap_or(0);
    s.expect_balanced(&[], 15_000).await;
    s.sleep(1_000).await;
}

/// 4 pods, roles settled; a 5th joins, so the primary moves roles to it (revoke,
/// release, grant). Once the newcomer holds its first role (more moves still to
/// come) and 0-150 ms more, one of them crashes, by seed: the new owner (the
/// newcomer), an old owner that gave roles away, or the primary.
pub(super) async fn crash_during_handover(s: &mut Ctx) {
    if s.start(4).await.is_none() || !s.wait_roles(10_000).await {
        return;
    }
    s.sleep_rand(0, 1_000).await;
    let before = s.role_counts();
    let n = s.add();
    s.fault(format!("{} added: roles move to it", s.name(n)));
    let mut waited = 0;
    while s.role_counts().get(&n).is_none_or(|c| *c == 0) && waited < 10_000 {
        s.sleep(5).await;
        waited += 5;
    }
    s.sleep_rand(0, 150).await;
    let Some(p) = s.primary_now() else {
        s.sleep(8_000).await;
        return;
    };
    let now = s.role_counts();
    let gave: Vec<usize> = before
        .iter()
        .filter(|(slot, c)| **slot != p && now.get(slot).is_some_and(|x| x < c))
        .map(|(slot, _)| *slot)
        .collect();
    let (victim, what) = match s.range(0, 3) {
        0 => (n, "the new owner"),
        1 if !gave.is_empty() => {
            let i = s.range(0, gave.len() as u64) as usize;
            (gave[i], "an old owner")
        }
        1 => {
            let others: Vec<usize> = s.others(p).into_iter().filter(|x| *x != n).collect();
            let i = s.range(0, others.len() as u64) as usize;
            (others[i], "an old owner")
        }
        _ => (p, "the primary"),
    };
    s.c.kill(victim, true);
    s.pods.retain(|x| *x != victim);
    s.fault(format!(
        "failover: {} ({what}) crashed during the handover",
        s.name(victim)
    ));
    s.extra_bound_ns = u64::try_from(s.c.config().removal_grace.as_nanos()).unwrap_or(0);
    s.sleep(5_000).await;
}

/// 5 pods, roles settled; for 15 s, roles are declared and removed at run time
/// through members that are not the primary, while members are isolated, paused and
/// cut off one way, and the network is lossy at times. Roles are removed only once
/// committed and a few seconds old (a member that asked for a role forgets its
/// request only when it sees it committed), and no name is used twice. Then healed:
/// every role left must be owned.
pub(super) async fn churn(s: &mut Ctx) {
    if s.start(5).await.is_none() || !s.wait_roles(10_000).await {
        return;
    }
    // Every node asked for the declared roles at its start; it forgets that request
    // only at its next housekeeping round after it sees them committed.
    s.sleep(1_000).await;
    let end = s.c.now_ns() + 15_000_000_000;
    let mut next_extra = 0;
    // Roles added at run time: the node asked, and when its table first showed it.
    let mut added: BTreeMap<String, (usize, Option<u64>)> = BTreeMap::new();
    let mut faulted: BTreeSet<usize> = BTreeSet::new();
    while s.c.now_ns() < end {
        let now = s.c.now_ns();
        for (role, (via, seen)) in added.iter_mut() {
            if seen.is_none() && s.c.committed_roles(*via).contains(role) {
                *seen = Some(now);
            }
        }
        let primary = s.primary_now();
        let askers: Vec<usize> = s
            .pods
            .iter()
            .copied()
            .filter(|x| Some(*x) != primary && !faulted.contains(x))
            .collect();
        match s.range(0, 7) {
            0 | 1 if !askers.is_empty() => {
                let via = askers[s.range(0, askers.len() as u64) as usize];
                let k = s.range(1, 9);
                let names: Vec<String> = (0..k)
                    .map(|i| format!("extra-{}", next_extra + i))
                    .collect();
                next_extra += k;
                for n in &names {
                    added.insert(n.clone(), (via, None));
                    s.roles.insert(n.clone());
                }
                s.c.add_roles(via, names.clone());
                s.c.fault(format!("{} asks to add {}", s.name(via), names.join(",")));
            }
            2 | 3 if !askers.is_empty() => {
                let via = askers[s.range(0, askers.len() as u64) as usize];
                // Committed in the asker's table over a second ago (its request for
                // it forgotten since), or declared at start.
                let old: Vec<String> = s
                    .roles
                    .iter()
                    .filter(|r| {
                        added
                            .get(*r)
                            .is_none_or(|(_, seen)| seen.is_some_and(|t| now > t + 1_000_000_000))
                    })
                    .cloned()
                    .collect();
                let k = s.range(1, 6) as usize;
                let mut names = Vec::new();
                for _ in 0..k.min(old.len()) {
                    let r = old[s.range(0, old.len() as u64) as usize].clone();
                    if s.roles.remove(&r) {
                        names.push(r);
                    }
                }
                if !names.is_empty() {
                    s.c.remove_roles(via, names.clone());
                    s.c.fault(format!(
                        "{} asks to remove {}",
                        s.name(via),
                        names.join(",")
                    ));
                }
            }
            4 => {
                let k = s.range(0, s.pods.len() as u64) as usize;
                let victim = s.pods[k];
                s.c.isolate(victim);
                faulted.insert(victim);
                s.fault(format!("isolate {}", s.name(victim)));
                s.sleep_rand(300, 2_000).await;
                s.c.heal();
                faulted.clear();
                s.fault("heal");
            }
            5 => {
                let k = s.range(0, s.pods.len() as u64) as usize;
                let victim = s.pods[k];
                s.c.pause(victim);
                faulted.insert(victim);
                s.fault(format!("pause {}", s.name(victim)));
                s.sleep_rand(100, 1_500).await;
                s.c.resume(victim);
                faulted.remove(&victim);
                s.fault(format!("resume {}", s.name(victim)));
            }
            _ => {
                let pods = s.pods.clone();
                let a = pods[s.range(0, pods.len() as u64) as usize];
                let b = pods[s.range(0, pods.len() as u64) as usize];
                if a != b {
                    s.c.cut_one_way(a, b);
                    faulted.insert(a);
                    s.fault(format!("one-way cut {} -> {}", s.name(a), s.name(b)));
                    s.sleep_rand(200, 1_500).await;
                    s.c.heal();
                    faulted.clear();
                    s.fault("heal");
                }
            }
        }
        s.sleep_rand(100, 1_200).await;
    }
    s.c.heal();
    s.fault("heal all");
    s.sleep(8_000).await;
    // Every request done: the primary's committed table is the expected set.
    if let Some(p) = s.primary_now() {
        let table: BTreeSet<String> = s.c.committed_roles(p).into_iter().collect();
        if table != s.roles {
            let missing: Vec<&String> = s.roles.difference(&table).collect();
            let extra: Vec<&String> = table.difference(&s.roles).collect();
            s.violation(format!(
                "role requests not carried out 8 s after the heal: the primary's table lacks {missing:?} and still has {extra:?}"
            ));
        }
    }
}

/// [`fast_failover_config`]: 5 pods, roles settled; four times a member other than
/// the primary (an owner of about 13 roles) is isolated or paused for 0.5-1.5 s, so
/// the primary counts it failed while its last hold still runs.
pub(super) async fn fast_failover(s: &mut Ctx) {
    if s.start(5).await.is_none() || !s.wait_roles(10_000).await {
        return;
    }
    for _ in 0..4 {
        s.sleep_rand(300, 1_500).await;
        let Some(p) = s.primary_now() else { continue };
        let others = s.others(p);
        let victim = others[s.range(0, others.len() as u64) as usize];
        let pause = s.range(0, 2) == 0;
        if pause {
            s.c.pause(victim);
            s.fault(format!("pause {} (an owner)", s.name(victim)));
        } else {
            s.c.isolate(victim);
            s.fault(format!("isolate {} (an owner)", s.name(victim)));
        }
        s.sleep_rand(500, 1_500).await;
        if pause {
            s.c.resume(victim);
        } else {
            s.c.heal();
        }
        s.fault(format!("{} back", s.name(victim)));
    }
    s.sleep(3_000).await;
}

#[cfg(test)]
mod tests {
    use super::role_cap;

    #[test]
    fn the_fast_failover_config_is_valid_and_below_the_lease() {
        let c = super::fast_failover_config();
        assert!(c.validate().is_ok());
        assert!(c.role_failover_timeout < c.lease_duration);
    }

    #[test]
    fn the_cap_is_the_placements() {
        assert_eq!(role_cap(64, 7), 12);
        assert_eq!(role_cap(64, 5), 16);
        assert_eq!(role_cap(64, 4), 20);
        assert_eq!(role_cap(64, 1), 80);
    }
}
