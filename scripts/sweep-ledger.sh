#!/usr/bin/env bash
# The long sweep (issue 13's million seeds), run in chunks that add up across runs and
# sessions. Chunk k runs `cluster-sim sweep all --seeds LEDGER_CHUNK --from
# LEDGER_BASE + k * LEDGER_CHUNK` (every scenario, hundred-members at weight 20, so
# about 40 * LEDGER_CHUNK seeds per chunk) and keeps its markdown summary as
# LEDGER_DIR/chunk-<from>.md, headed by the commit it ran on. A chunk whose file
# exists is skipped, so rerunning continues where the last run stopped; no seed runs
# twice (a chunk that would overlap one held, of another size, is refused). The
# first failing seed stops the run: its summary (with the replay command)
# is kept as chunk-<from>.FAILED.md and the exit status is 1.
#
#   scripts/sweep-ledger.sh run      # run chunks until the ledger holds LEDGER_TARGET seeds
#   scripts/sweep-ledger.sh tally    # seeds, failures, wall time and commits so far
#
# Settings (environment): LEDGER_DIR (sims/sweeps), LEDGER_BASE (1000000),
# LEDGER_CHUNK (500 seeds per scenario), LEDGER_TARGET (1000000 seeds in all),
# LEDGER_MAX_CHUNKS (stop after this many chunks in this run; default no limit),
# LEDGER_BIN (a prebuilt cluster-sim; default: build with `cargo sim` and use
# target/madsim/release/cluster-sim) and LEDGER_COMMIT (the commit LEDGER_BIN was
# built from; default HEAD, with "+dirty" when tracked files differ from it).
# Further arguments after `run` go to `cluster-sim sweep` (e.g. --jobs 1).
cd "$(dirname "$0")/.."
set -uo pipefail
unset RUSTFLAGS # it would override the alias's --cfg madsim (see .cargo/config.toml)
dir=${LEDGER_DIR:-sims/sweeps}
base=${LEDGER_BASE:-1000000}
chunk=${LEDGER_CHUNK:-500}
target=${LEDGER_TARGET:-1000000}
max_chunks=${LEDGER_MAX_CHUNKS:-0}
mode=${1:-tally}
[ $# -gt 0 ] && shift

# Prints "<seeds run> <failed> <wall seconds> <chunks>" over the ledger's chunk files.
totals() {
  local seeds=0 failed=0 wall=0 n=0 line s f w
  for file in "$dir"/chunk-*.md; do
    [ -e "$file" ] || continue
    line=$(grep -m1 -E '^[0-9]+ of [0-9]+ seeds' "$file") || continue
    s=$(sed -E 's/^([0-9]+) of .*/\1/' <<<"$line")
    f=$(sed -E 's/.*\*\*([0-9]+) failed\*\*.*/\1/' <<<"$line")
    w=$(sed -E 's/.* ([0-9.]+) s wall.*/\1/' <<<"$line")
    seeds=$((seeds + s))
    failed=$((failed + f))
    wall=$(awk -v a="$wall" -v b="$w" 'BEGIN { printf "%.1f", a + b }')
    n=$((n + 1))
  done
  echo "$seeds $failed $wall $n"
}

# The held chunk file whose seeds overlap `from .. from + chunk` (of every scenario),
# if any: a chunk of another size on the same base would run seeds twice.
overlapping() {
  local from=$1 file s f
  for file in "$dir"/chunk-*.md; do
    [ -e "$file" ] || continue
    read -r s f < <(sed -nE 's/^command: cluster-sim sweep all --seeds ([0-9]+) --from ([0-9]+).*/\1 \2/p' "$file")
    [ -n "${s:-}" ] || continue
    if [ "$from" -lt $((f + s)) ] && [ "$f" -lt $((from + chunk)) ]; then
      echo "$file"
      return 0
    fi
  done
  return 1
}

tally() {
  read -r seeds failed wall n < <(totals)
  echo "ledger $dir: $n chunk(s), $seeds seeds run, $failed failed, ${wall} s wall (target $target)"
  if [ "$n" -gt 0 ]; then
    echo "commits:"
    grep -h -m1 '^commit: ' "$dir"/chunk-*.md | sort | uniq -c
  fi
  [ "$failed" -eq 0 ]
}

case "$mode" in
  tally)
    tally
    exit $?
    ;;
  run) ;;
  *)
    echo "usage: scripts/sweep-ledger.sh run|tally [cluster-sim sweep arguments]" >&2
    exit 2
    ;;
esac

mkdir -p "$dir"
if ls "$dir"/chunk-*.FAILED.md >/dev/null 2>&1; then
  echo "the ledger holds a failed chunk; fix it (FINDINGS.md) and move its file away first:" >&2
  ls "$dir"/chunk-*.FAILED.md >&2
  exit 1
fi
bin=${LEDGER_BIN:-}
if [ -z "$bin" ]; then
  cargo sim --help >/dev/null || exit 1
  bin=target/madsim/release/cluster-sim
fi
if [ ! -x "$bin" ]; then
  echo "no cluster-sim binary at $bin (LEDGER_BIN is read from the repository root)" >&2
  exit 1
fi
commit=${LEDGER_COMMIT:-$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo +dirty)}

ran=0
k=0
while :; do
  read -r seeds _ _ _ < <(totals)
  if [ "$seeds" -ge "$target" ]; then
    echo "ledger holds $seeds seeds (target $target): done"
    break
  fi
  if [ "$max_chunks" -gt 0 ] && [ "$ran" -ge "$max_chunks" ]; then
    echo "ran $ran chunk(s) as asked; the ledger holds $seeds seeds"
    break
  fi
  from=$((base + k * chunk))
  k=$((k + 1))
  file="$dir/chunk-$from.md"
  [ -e "$file" ] && continue
  if other=$(overlapping "$from"); then
    echo "seeds $from.. would run again: $other holds some (another LEDGER_CHUNK on the same LEDGER_BASE?); choose another LEDGER_BASE" >&2
    exit 1
  fi
  echo "[ledger] chunk from seed $from ($chunk per scenario) on $commit; ledger holds $seeds seeds" >&2
  tmp="$dir/.chunk-$from.tmp"
  started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  "$bin" sweep all --seeds "$chunk" --from "$from" --summary "$tmp.summary" "$@" >/dev/null
  status=$?
  {
    echo "commit: $commit"
    echo "started: $started, ended: $(date -u +%Y-%m-%dT%H:%M:%SZ), host load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "command: cluster-sim sweep all --seeds $chunk --from $from $*"
    echo
    cat "$tmp.summary" 2>/dev/null
  } >"$tmp"
  rm -f "$tmp.summary"
  if [ "$status" -ne 0 ]; then
    mv "$tmp" "$dir/chunk-$from.FAILED.md"
    echo "[ledger] chunk $from FAILED: see $dir/chunk-$from.FAILED.md" >&2
    exit 1
  fi
  mv "$tmp" "$file"
  ran=$((ran + 1))
done
tally
