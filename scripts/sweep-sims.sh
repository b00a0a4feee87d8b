#!/usr/bin/env bash
# Sweeps every simulated scenario, one process per scenario (a summary line per
# scenario; memory no longer grows with the seeds run in one process since
# sims/FINDINGS.md #7 was fixed). 290 seeds per
# scenario and 30 of hundred-members (about 10 s per seed): 10,180 seeds over the 36
# scenarios, every one with 64 named roles. Override with SWEEP_SEEDS, SWEEP_HUNDRED
# and SWEEP_FROM (first seed, 10000).
# Exits non-zero when the build fails, when cluster-sim lists no scenario, or when any
# scenario has a failed seed (or its run ends without the usual summary line).
# The `cargo sim` alias builds with --cfg madsim into target/madsim/release.
cd "$(dirname "$0")/.."
set -uo pipefail
unset RUSTFLAGS # it would override the alias's --cfg madsim (see .cargo/config.toml)
start=$(date +%s)

# Build (errors shown) and list the scenarios before sweeping anything.
if ! scenarios=$(cargo sim list); then
  echo "sweep-sims.sh: FAILED: \`cargo sim list\` failed (build error above?)" >&2
  exit 1
fi
scenarios=$(echo "$scenarios" | awk 'NF {print $1}')
if [ -z "$scenarios" ]; then
  echo "sweep-sims.sh: FAILED: \`cargo sim list\` listed no scenario" >&2
  exit 1
fi
echo "sweep-sims.sh: $(wc -l <<<"$scenarios") scenarios"

status=0
total=0
from=${SWEEP_FROM:-10000}
for s in $scenarios; do
  n=${SWEEP_SEEDS:-290}; [ "$s" = hundred-members ] && n=${SWEEP_HUNDRED:-30}
  out=$(cargo sim run "$s" --seeds "$n" --from "$from" --jobs 2 2>&1 | tail -1)
  echo "$s: $out"
  total=$((total + n))
  case "$out" in *" 0 failed"*) ;; *) status=1 ;; esac
done
echo "seeds: $total; wall: $(( $(date +%s) - start )) s"
[ "$status" -eq 0 ] || echo "sweep-sims.sh: FAILED: see the scenarios above without \" 0 failed\"" >&2
exit $status
