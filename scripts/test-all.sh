#!/usr/bin/env bash
# The one command that runs every test of the workspace (README: "Test it").
# Needs the packages that .ci/run installs (dnsmasq-base, nftables); run as root for
# the network-namespace test.
set -euo pipefail
cd "$(dirname "$0")/.."
# Any RUSTFLAGS, even empty, overrides the `simtest` alias's build.rustflags and would
# silently run the simulation suites in real mode (MADSIM-NOTES.md).
unset RUSTFLAGS

echo "== unit, property, scenario, integration and process tests (all features)"
# The simulation packages are empty without --cfg madsim and their tests fail loudly
# on purpose when built that way; they run below.
cargo test --workspace --all-features --exclude cluster-mode-sims --exclude cluster-mode-madsim

echo "== the 1,000-member scenario (release: about a minute in debug it would be many)"
cargo test --release -p cluster-mode-core --test scenarios -- --ignored

echo "== simulation suites (built with --cfg madsim)"
cargo simtest -p cluster-mode
bash sims/ci-run.sh
