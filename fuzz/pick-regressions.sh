#!/usr/bin/env bash
# Picks the committed replay corpus (fuzz/regressions/<target>/) from the fuzzing
# corpus (fuzz/corpus/<target>/): libFuzzer's merge pass records the coverage
# features of every input, and a greedy set cover keeps the N inputs that add the
# most features, smallest first on ties. Seeds (seed-*) and found-* files already in
# the regressions directory are kept.
#   fuzz/pick-regressions.sh core_steps 40
set -euo pipefail
target=${1:?target}; n=${2:-40}
cd "$(dirname "$0")"
bin=target/x86_64-unknown-linux-gnu/release/$target
ctl=$(mktemp); empty=$(mktemp -d); snap=$(mktemp -d)
# A snapshot: a running fuzzer replaces corpus files as it reduces them.
cp -r "corpus/$target/." "$snap/" 2>/dev/null || true
"$bin" -merge=1 -merge_control_file="$ctl" "$empty" "$snap" >/dev/null 2>&1 || true
python3 - "$ctl" "$n" "regressions/$target" <<'PY'
import os, shutil, sys
ctl, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lines = open(ctl).read().split("\n")
count = int(lines[0]); files = lines[2:2 + count]
feats = {}
for l in lines[2 + count:]:
    p = l.split()
    if p and p[0] == "FT":
        feats[int(p[1])] = set(map(int, p[2:]))
total = set().union(*feats.values())
have, picked = set(), []
for _ in range(n):
    best = max(feats, key=lambda i: (len(feats[i] - have), -os.path.getsize(files[i])), default=None)
    if best is None or not feats[best] - have:
        break
    have |= feats.pop(best); picked.append(best)
os.makedirs(out, exist_ok=True)
for old in os.listdir(out):
    if old.startswith("cov-"):
        os.remove(os.path.join(out, old))
for i in picked:
    shutil.copy(files[i], os.path.join(out, "cov-" + os.path.basename(files[i])[:16]))
print(f"{len(picked)} inputs keep {len(have)} of {len(total)} features of {len(files)} inputs")
PY
rm -rf "$ctl" "$empty" "$snap"
