#!/usr/bin/env bash
# The simulation suites, as CI runs them (scripts/test-all.sh calls this). Run from
# the repository root.
set -euo pipefail
# RUSTFLAGS in the environment (even empty) overrides the alias's --cfg madsim and
# the "simulation" would silently run in real mode: refuse it.
if [ -n "${RUSTFLAGS+x}" ]; then
  echo "unset RUSTFLAGS before running the simulation suites" >&2
  exit 1
fi
# The 41 scenarios (37 datagram, 4 over the real hyper transport), every one with 64
# named roles declared by every node (the 4 store scenarios: none), x 50 fixed seeds
# (hundred-members: 10, at about 10 s each), 50 more seeds of the 4 hyper ones, replay
# determinism. The store scenarios (store-primary-crash, store-partition,
# store-paused-primary, store-chaos) also judge the store clients' history with
# cluster-mode-lincheck: about 56 s of CPU for their 200 seeds.
# lease-at-bound (the lease at max_safe_lease, clocks at the drift bound) is one of
# them: its 50 seeds take about 5 s. Builds into target/madsim.
cargo simtest -p cluster-mode-madsim -p cluster-mode-sims --release
# The CLI builds and a short sweep of every scenario passes.
cargo sim run all --seeds 5 --from 1000
# The ledger of the long sweep (scripts/sweep-ledger.sh) runs chunks, skips those it
# holds, and tallies: two 1-seed-per-scenario chunks into a scratch directory, then a
# rerun that must find nothing left to do.
ledger=$(mktemp -d)
LEDGER_DIR=$ledger LEDGER_CHUNK=1 LEDGER_TARGET=60 LEDGER_BASE=1000 \
  LEDGER_BIN=target/madsim/release/cluster-sim scripts/sweep-ledger.sh run 2>/dev/null
test "$(ls "$ledger"/chunk-*.md | wc -l)" -eq 2
again=$(LEDGER_DIR=$ledger LEDGER_TARGET=60 LEDGER_BIN=target/madsim/release/cluster-sim \
  scripts/sweep-ledger.sh run 2>&1)
grep -q "^ledger holds [0-9]* seeds (target 60): done" <<<"$again"
if grep -q "chunk from seed" <<<"$again"; then
  echo "the ledger ran a chunk it already held" >&2
  exit 1
fi
tally=$(LEDGER_DIR=$ledger scripts/sweep-ledger.sh tally)
grep -Eq "2 chunk\(s\), [0-9]+ seeds run, 0 failed" <<<"$tally"
rm -rf "$ledger"
