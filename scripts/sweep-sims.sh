#!/usr/bin/env bash
# Sweeps every simulated scenario, one process per scenario (cluster-sim memory grows
# with the number of seeds in one process: see sims/FINDINGS.md #7). 10,000 seeds.
cd "$(dirname "$0")/.."
set -uo pipefail
start=$(date +%s)
status=0
for s in $(cargo sim list 2>/dev/null); do
  n=520; [ "$s" = hundred-members ] && n=120
  out=$(cargo sim run "$s" --seeds $n --from 10000 --jobs 2 2>&1 | tail -1)
  echo "$s: $out"
  case "$out" in *" 0 failed"*) ;; *) status=1 ;; esac
done
echo "wall: $(( $(date +%s) - start )) s"
exit $status
