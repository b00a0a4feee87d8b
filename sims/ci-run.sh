#!/usr/bin/env bash
# CI commands for the simulation suites. Run from the repository root.
set -euo pipefail
# RUSTFLAGS in the environment (even empty) overrides the alias's --cfg madsim and
# the "simulation" would silently run in real mode: refuse it.
if [ -n "${RUSTFLAGS+x}" ]; then
  echo "unset RUSTFLAGS before running the simulation suites" >&2
  exit 1
fi
# The plain workspace tests; the sims package is excluded because its tests
# deliberately fail when built without --cfg madsim.
cargo test --workspace --exclude cluster-mode-sims --exclude cluster-mode-madsim
# The simulation suites: 16 scenarios x 50 fixed seeds + replay determinism.
cargo simtest -p cluster-mode-madsim -p cluster-mode-sims --release
# The CLI builds and a short sweep passes.
cargo sim run all --seeds 5 --from 1000
