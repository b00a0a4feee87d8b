#!/usr/bin/env bash
# Sweeps every simulated scenario with `cargo sim sweep` (one process, a worker thread
# per core, a progress line, a stop at the first failure with its replay command):
# SWEEP_SEEDS seeds per scenario (default 290), a slow one (hundred-members, about
# 20 times dearer) ceil(SWEEP_SEEDS / SWEEP_SLOW_WEIGHT) (default weight 20), from
# seed SWEEP_FROM (default 10000), every node with 64 named roles. The summary
# (markdown: seeds, failures, seeds/s, per scenario wall time, failover and settle
# percentiles) is printed and written to SWEEP_SUMMARY (default
# target/sweep-summary.md; a name ending in .json writes JSON). Further arguments go
# to `cargo sim sweep` (e.g. --keep-going, --jobs 1, a scenario list).
# Exits non-zero when the build fails or any seed fails.
# The `cargo sim` alias builds with --cfg madsim into target/madsim/release.
cd "$(dirname "$0")/.."
set -uo pipefail
unset RUSTFLAGS # it would override the alias's --cfg madsim (see .cargo/config.toml)
summary=${SWEEP_SUMMARY:-target/sweep-summary.md}
mkdir -p "$(dirname "$summary")"
exec cargo sim sweep --seeds "${SWEEP_SEEDS:-290}" --slow-weight "${SWEEP_SLOW_WEIGHT:-20}" \
  --from "${SWEEP_FROM:-10000}" --summary "$summary" "$@"
