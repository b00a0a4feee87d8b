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
