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
# The 26 scenarios (22 datagram, 4 over the real hyper transport) x 50 fixed seeds,
# 50 more seeds of the 4 hyper ones, replay determinism. Builds into target/madsim.
cargo simtest -p cluster-mode-madsim -p cluster-mode-sims --release
# The CLI builds and a short sweep of every scenario passes.
cargo sim run all --seeds 5 --from 1000
