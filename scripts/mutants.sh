#!/usr/bin/env bash
# Mutation testing of the core's lease, vote and quorum code (issue 10, P5/P6 "tests
# that can fail"): cargo-mutants changes one operator or function body at a time in
# the functions below and runs the core's fast tests; a mutant that no test fails
# ("missed") is a rule no test checks. core/MUTANTS.md has the last run's figures and
# every survivor with the reason it is harmless, or the test added for it.
#
#   cargo install cargo-mutants --locked      # once (v27.1.0 used)
#   scripts/mutants.sh                        # the set below, about an hour on 2 shared cores
#   scripts/mutants.sh --list                 # only list the mutants
#   MUTANTS_RE='is_primary|lease_valid' scripts/mutants.sh   # a subset
#
# Run from anywhere; results go to target/mutants/mutants.out (outcomes.json,
# caught.txt, missed.txt, timeout.txt, unviable.txt, a log per mutant). Extra
# arguments go to cargo-mutants (e.g. --shard 1/2, --iterate to skip mutants caught
# in the previous run).
#
# The tests each mutant runs (debug build): the core's unit tests, tests/rules.rs,
# tests/scenarios.rs (without the 1,000-member trace, a scale test of no lease or
# vote rule), tests/checker.rs, and tests/random_schedules.rs's fixed seeds
# (SCHEDULE_SEEDS, default here 50; the 500-case proptest is skipped).
# Not mutated: leave.rs (changed in parallel, and its handover is covered by the
# shell's tests), bootstrap, recovery, admin, joining, peers, log, wire code.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-mutants >/dev/null; then
  echo "cargo-mutants is not installed: cargo install cargo-mutants --locked" >&2
  exit 1
fi

export SCHEDULE_SEEDS="${SCHEDULE_SEEDS:-50}"
timeout_s="${MUTANTS_TIMEOUT:-150}"
out="${MUTANTS_OUT:-target/mutants}"

# Where the lease, vote and quorum rules live.
files=(
  core/src/node/queries.rs   # is_primary, fencing_token, lease_valid (P6, P7)
  core/src/node/leader.rs    # lease renewal, CheckQuorum, commit by majority
  core/src/node/election.rs  # pre-vote, vote, stickiness, majority of votes
  core/src/node/follower.rs  # accepting a leader (resets the election timer)
  core/src/node/role.rs      # terms, step-down, one vote per term
  core/src/membership.rs     # voters and quorum
  core/src/config.rs         # max_safe_lease and validate
)
# Within them, the functions that decide those rules (not constructors, accessors
# of identity or names, or Display).
default_re='ClusterCore::(is_primary|fencing_token|lease_valid|app_role|primary_info)'
default_re+='|Progress::heard_within|LeaderState::|ClusterCore::(update_lease|maybe_commit|on_heartbeat_timer|on_append_reply|become_leader)'
default_re+='|ClusterCore::(heard_from_leader_recently|on_election_timeout|start_election|on_vote_request|on_vote_reply|check_votes|on_timeout_now)|has_majority'
default_re+='|ClusterCore::(accept_leader|on_append)( |$)'
default_re+='|HardState::advance_to|ClusterCore::(become_follower|record_vote|reset_election_timer|become_candidate|set_role)'
default_re+='|Membership::(quorum|voter_count|is_voter|voters)'
default_re+='|Config::(max_safe_lease|validate)'
re="${MUTANTS_RE:-$default_re}"

args=(-p cluster-mode-core --jobs 1 --timeout "$timeout_s" --output "$out" --re "$re")
for f in "${files[@]}"; do args+=(--file "$f"); done

# The test targets go to every cargo call (also the build, which would otherwise
# compile every test target); the skips go to the test binaries.
for t in --lib --test=rules --test=scenarios --test=checker --test=random_schedules; do
  args+=(--cargo-arg="$t")
done
exec nice -n 10 cargo mutants "${args[@]}" "$@" -- \
  -- --skip random_fault_schedules --skip thousand_members
