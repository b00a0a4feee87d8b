//! Failover and handover times with the default (`Config::datacenter()`) timings on
//! the in-memory network (1-10 ms latency), over fixed seeds. Prints p50/p99/max and
//! asserts the bound stated in docs/PROTOCOL.md: a crashed primary is replaced within
//! two maximum election timeouts plus a heartbeat round (1.25 s), a leaving primary
//! within one election round trip plus a heartbeat round trip (well under 100 ms).
//!
//! `cargo test -p cluster-mode-core --test failover -- --nocapture`

mod common;

use cluster_mode_core::Config;
use common::Net;

fn percentiles(mut v: Vec<u64>) -> (u64, u64, u64) {
    v.sort_unstable();
    let at = |q: usize| v[(v.len() - 1) * q / 100];
    (at(50), at(99), *v.last().unwrap())
}

/// Time from `fault` until a different node is primary, in ms.
fn until_new_primary(net: &mut Net, old: usize) -> u64 {
    let start = net.now;
    loop {
        net.run_for(1);
        if let Some(p) = net.the_primary() {
            if p != old {
                return (net.now - start) / 1_000_000;
            }
        }
        assert!(
            net.now - start < 10_000_000_000,
            "seed {}: no new primary within 10 s",
            net.seed
        );
    }
}

#[test]
fn crash_failover_with_default_timings() {
    let cfg = Config::datacenter();
    let mut times = Vec::new();
    for seed in 0..100 {
        let n = if seed % 2 == 0 { 3 } else { 5 };
        let mut net = Net::with_nodes(1000 + seed, cfg.clone(), n);
        net.record_trace = false;
        net.run_until_settled(10_000).expect("settles");
        net.run_for(500);
        let old = net.the_primary().unwrap();
        net.crash(old);
        times.push(until_new_primary(&mut net, old));
        assert!(
            net.checker.violations.is_empty(),
            "seed {}: {:?}",
            net.seed,
            net.checker.violations
        );
    }
    let (p50, p99, max) = percentiles(times);
    println!(
        "crash failover (datacenter config, 100 seeds): p50 {p50} ms, p99 {p99} ms, max {max} ms"
    );
    let bound = (cfg.election_timeout_max * 2 + cfg.heartbeat_interval).as_millis() as u64;
    assert!(max <= bound, "failover {max} ms exceeds {bound} ms");
}

#[test]
fn graceful_handover_with_default_timings() {
    let cfg = Config::datacenter();
    let mut gaps = Vec::new();
    for seed in 0..100 {
        let mut net = Net::with_nodes(2000 + seed, cfg.clone(), 3);
        net.record_trace = false;
        net.run_until_settled(10_000).expect("settles");
        net.run_for(500);
        let old = net.the_primary().unwrap();
        net.leave(old);
        gaps.push(until_new_primary(&mut net, old));
        assert!(
            net.checker.violations.is_empty(),
            "seed {}: {:?}",
            net.seed,
            net.checker.violations
        );
    }
    let (p50, p99, max) = percentiles(gaps);
    println!("graceful handover gap (datacenter config, 100 seeds): p50 {p50} ms, p99 {p99} ms, max {max} ms");
    assert!(max < 100, "handover gap {max} ms");
}
