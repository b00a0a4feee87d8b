//! Scripted scenarios on the in-memory network, in the spirit of etcd-io/raft's
//! datadriven `testdata/*.txt`: each `tests/traces/NAME.txt` holds its own script and,
//! under each directive, the output that directive produced. The files are meant to be
//! read as protocol documentation (`docs/PROTOCOL.md` cites them).
//!
//! # Format
//!
//! Lines starting with `#` and blank lines are prose. Any other line is a directive,
//! followed by a `----` line and its output, up to the next blank line:
//!
//! ```text
//! # Kill the primary; the other two elect a new one.
//! crash primary
//! ----
//!      80ms  n1 crashes
//!
//! settle 3000ms
//! ----
//!     146ms  n3 is Candidate (term 1)
//!     ...
//! ```
//!
//! Output lines are `TIME  EVENT`, TIME being the network's real time: node starts,
//! crashes and partitions, role changes (`n2 is Primary (term 1)`), committed member
//! lists (`n1 members: n1 n2 n3(nv)`, `(nv)`: non-voter), and, when enabled, the
//! messages at the moment they are sent (`n3->n1 PreVote t2 log 1/3`, `n1->n2 Append
//! t2 prev 1/3 entries [2/4 noop] commit 3`, `n2->n1 AppendReply t2 ok 4`; terms are
//! `tN`, log positions `term/index`; `(cut)`: dropped by a partition; `n2 rejects
//! n1's ...: reason`: `handle` refused it, P10). Role lines name the primary the node
//! knows of when its role does not (`n2 is Leaving (term 2, primary n1)`). A directive
//! with no output shows `ok`. Nodes are named `n1..nN` by slot in start order (their
//! ids are random 128-bit numbers); a restarted slot's previous process is `nK#1`.
//!
//! # Directives
//!
//! - `init seed=N [config=fast-test|datacenter] [min-nodes=N] [max-voters=N]
//!   [removal-grace=D] [discovery-interval=D] [max-latency=D] [data=on]`: the
//!   network; must come first. `max-latency`: message delays are drawn from 1 ms to
//!   D (10 ms by default). `data=on`: every node has a data directory (P12).
//! - `trace [events=on|off] [messages=on|off|no-heartbeats]`: what the outputs show
//!   (events on, messages off at first). `no-heartbeats` hides appends that carry no
//!   entry and no new commit index, and their successful replies.
//! - `start n1 n2 n3` or `start n1..n1000`: add nodes (in slot order).
//! - `run D`: let D of network time pass (`400ms`, `5s`).
//! - `settle MAX [step=D] [until-removed=NODE]`: run until one primary is followed by
//!   every live member with the same member list (and NODE is out of it); fails the
//!   test if that takes MAX.
//! - `crash NODE`, `restart NODE` (a new process at the same address),
//!   `restart-with-data NODE` (the same member again, from its data directory),
//!   `move-with-data NODE` (the same member at a new address), `replace NODE`
//!   (crash, unlist, and start a new node at a new address), `unlist NODE`,
//!   `isolate NODE`, `cut NODE NODE` (one link, both ways), `heal` (every link),
//!   `pause NODE`, `resume NODE`, `leave NODE`, `force-recover NODE` (an operator's
//!   `Input::ForceRecover`, P11).
//! - `roles N`: every live node declares the roles `shard-0` .. `shard-{N-1}` (P13),
//!   and every node started later declares them as it starts.
//! - `hold NODE`: when the node's hold on its roles ends (a follower's latest
//!   renewal, a primary's lease), in network time.
//! - `owners`: the one primary's role table, each role with its owner and token, and
//!   the node that holds it at this instant (`owns` on its own clock).
//! - `recovery NODE`: what a member of a leaderless cluster reports (each voter's
//!   evidence, and why it does not recover by itself).
//! - `discovery NODE... fails | lists all | lists nothing | lists NODE...`: what
//!   discovery answers those nodes from now on.
//! - `mark LABEL=NODE`: name a node for later directives, remembering its term and its
//!   process (after `restart`, `not-member LABEL` still means the old process).
//! - `check settled | primary | primary=NODE | primary!=NODE | not-leader NODE |
//!   term NODE =|> LABEL | token NODE > LABEL | voters=N | members=N | member NODE | not-member NODE |
//!   left NODE | same-cluster NODE NODE | clusters=N | roles-held`: assertions
//!   (`roles-held`: every role of the primary's table is held now by the owner the
//!   table names) (counts and
//!   membership are the one primary's committed configuration; `clusters` counts
//!   every cluster ever formed).
//!
//! NODE is `nK`, a label, `primary` (the one primary), `follower` (the first live
//! node that is not primary) or `owner:ROLE` (the live node holding ROLE now).
//!
//! # Checking
//!
//! A file passes when the harness, rewriting every output, would write it unchanged;
//! otherwise the test fails naming the file and its first differing line. Run with
//! `UPDATE_TRACES=1` to rewrite the outputs (scripts and prose are kept) after an
//! intended change, then read `git diff core/tests/traces`. Checks and the invariant
//! checker (`common/checker.rs`, after every event) are assertions: they fail the test
//! even with `UPDATE_TRACES`, so a trace rewritten carelessly cannot hide a failure.

mod common;

use common::script::run_trace;

/// Every trace file, with the test that runs it.
const TRACES: &[&str] = &[
    "cold_start_3",
    "cold_start_5",
    "discovery_errors",
    "hundred_members",
    "join_existing",
    "leader_stickiness",
    "leavers_promote_a_successor",
    "majority_restarted",
    "minority_healed",
    "primary_crash",
    "primary_isolated",
    "primary_leave",
    "promotion_after_restart",
    "rejoin_with_data",
    "restart_in_place",
    "restart_with_data",
    "roles_move",
    "rolling_restart",
    "skewed_bootstrap",
    "stuck_then_forced",
    "thousand_members",
    "two_nodes_primary_leaves",
];

#[test]
fn every_trace_file_has_a_test() {
    let dir = format!("{}/tests/traces", env!("CARGO_MANIFEST_DIR"));
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".txt").map(str::to_string)
        })
        .collect();
    found.sort();
    assert_eq!(
        found, TRACES,
        "add a test for each trace file, and list it here"
    );
}

#[test]
fn cold_start_of_three_elects_one_primary() {
    run_trace("cold_start_3");
}

#[test]
fn cold_start_of_five_elects_one_primary_with_five_voters() {
    run_trace("cold_start_5");
}

#[test]
fn majority_restarted_in_place_recovers_once_the_lost_voters_are_proven_dead() {
    run_trace("majority_restarted");
}

#[test]
fn a_majority_restarted_with_data_and_moved_with_data_keeps_its_cluster() {
    run_trace("restart_with_data");
}

#[test]
fn a_stuck_cluster_says_why_and_recovers_when_forced() {
    run_trace("stuck_then_forced");
}

#[test]
fn primary_crash_fails_over_to_a_new_primary_with_a_higher_term() {
    run_trace("primary_crash");
}

#[test]
fn isolated_primary_steps_down_and_the_majority_elects_another() {
    run_trace("primary_isolated");
}

#[test]
fn healed_minority_does_not_disrupt_the_primary() {
    run_trace("minority_healed");
}

#[test]
fn a_leaving_primary_with_no_voter_to_succeed_it_promotes_one() {
    run_trace("leavers_promote_a_successor");
}

#[test]
fn the_primary_of_two_nodes_leaves_and_the_other_takes_over() {
    run_trace("two_nodes_primary_leaves");
}

#[test]
fn graceful_leave_of_the_primary_hands_over_and_removes_it() {
    run_trace("primary_leave");
}

#[test]
fn rolling_restart_replaces_every_node_one_at_a_time() {
    run_trace("rolling_restart");
}

#[test]
fn skewed_discovery_at_bootstrap_still_forms_exactly_one_cluster() {
    run_trace("skewed_bootstrap");
}

#[test]
fn a_new_node_joins_an_existing_cluster_instead_of_bootstrapping() {
    run_trace("join_existing");
}

#[test]
fn discovery_errors_and_empty_answers_remove_nobody() {
    run_trace("discovery_errors");
}

#[test]
fn a_follower_cut_off_from_the_leader_alone_cannot_disrupt_it() {
    run_trace("leader_stickiness");
}

#[test]
fn a_pod_restarted_in_place_replaces_its_previous_process() {
    run_trace("restart_in_place");
}

#[test]
fn a_member_restarted_with_data_after_its_configuration_left_joins_again() {
    run_trace("rejoin_with_data");
}

#[test]
fn a_voter_lost_to_a_restart_is_replaced_by_a_promotion_at_once() {
    run_trace("promotion_after_restart");
}

#[test]
fn a_crashed_role_owner_s_roles_move_after_its_hold_and_the_failover_timeout() {
    run_trace("roles_move");
}

#[test]
fn hundred_members_keep_five_voters() {
    run_trace("hundred_members");
}

/// About 40 s in release mode, minutes in debug: `scripts/test-all.sh` runs it with
/// `cargo test --release -p cluster-mode-core --test scenarios -- --ignored`.
#[test]
#[ignore = "slow in debug builds; run in release"]
fn thousand_members_keep_five_voters() {
    run_trace("thousand_members");
}
