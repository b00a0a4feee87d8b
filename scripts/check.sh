#!/usr/bin/env bash
# The static checks (.ci/run runs them before the tests). A developer can run them too:
#   scripts/check.sh               every check
#   scripts/check.sh doc core-deps only the named ones (fmt clippy simclippy doc msrv core-deps)
# Every named check runs even when an earlier one failed; the script then lists the
# failed ones and exits non-zero. Run from anywhere; it works from the repository root.
# Needs cargo, clippy, rustfmt and jq (installed here as root when missing).
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# Any RUSTFLAGS, even empty, overrides build.rustflags: the madsim clippy would lint the
# empty plain build of the simulation packages and pass vacuously.
if [ -n "${RUSTFLAGS+x}" ]; then
  echo "check.sh: unsetting RUSTFLAGS (it overrides the --cfg madsim of the sim aliases)" >&2
  unset RUSTFLAGS
fi

# fmt: rustfmt's layout, no diff.
check_fmt() {
  cargo fmt --all --check
}

# clippy: every package, target and feature in the plain (tokio) build; every warning is
# an error. clippy::incompatible_msrv is named explicitly: see check_msrv.
check_clippy() {
  cargo clippy --workspace --all-targets --all-features -- -D warnings -D clippy::incompatible_msrv
}

# simclippy: the simulation packages as they are really compiled, with --cfg madsim (a
# plain build of them is empty), into target/madsim (the `simclippy` alias in
# .cargo/config.toml), every warning an error.
check_simclippy() {
  cargo simclippy -- -D warnings -D clippy::incompatible_msrv
}

# doc: the API docs build without a single rustdoc warning (broken intra-doc links,
# bad code-block attributes; missing docs are already lint warnings above): the whole
# workspace as published (plain build, all features), then the two simulation packages
# as they really compile (--cfg madsim, for rustdoc too; into target/madsim).
check_doc() {
  local status=0
  # The simulation packages are empty in a plain build (their docs link to items that
  # exist only with --cfg madsim): they are documented by the second run.
  RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --keep-going \
    --exclude cluster-mode-madsim --exclude cluster-mode-sims || status=1
  RUSTDOCFLAGS="-D warnings --cfg madsim" cargo doc --no-deps --keep-going \
    --config "build.rustflags=['--cfg','madsim']" --config "build.target-dir='target/madsim'" \
    -p cluster-mode-madsim -p cluster-mode-sims || status=1
  return $status
}

# msrv: the workspace says rust-version = 1.89 and only a newer toolchain is installed
# here, so nothing compiles the code with 1.89 itself. What is checked instead, for real:
#   1. every workspace package declares the same rust-version (clippy reads it from
#      there, per package);
#   2. clippy's incompatible_msrv lint, denied in both clippy steps above: it flags any
#      use of a standard-library item (function, method, type, const) whose stability
#      attribute says it became stable after that rust-version;
#   3. here: every package that the workspace builds on this platform, in either mode
#      (plain and --cfg madsim; normal, build and dev dependencies, all features), as
#      pinned in Cargo.lock, declares a rust-version no newer than ours (cargo refuses
#      to build a package that declares a newer one). Packages that declare none cannot
#      be judged and are not counted.
# Not covered: language features (syntax, trait-system changes) newer than 1.89, and
# dependencies that need a newer compiler without declaring it. Only building and
# testing with a 1.89 toolchain covers those: `cargo +1.89 test --workspace` where one
# can be installed.
check_msrv() {
  local meta msrv members
  # --all-features: the declared rust-version of every package any feature pulls in
  # (a default-feature resolve leaves optional dependencies out, and they then
  # went unjudged).
  meta=$(cargo metadata --format-version 1 --locked --all-features) || return 1
  members=$(jq -r '.workspace_members as $m | .packages[] | select(.id as $i | $m | index($i))
                   | "\(.name) \(.rust_version // "none")"' <<<"$meta")
  msrv=$(awk '{print $2}' <<<"$members" | sort -u)
  if [ "$(wc -l <<<"$msrv")" -ne 1 ] || [ "$msrv" = none ]; then
    echo "msrv: the workspace packages do not all declare one rust-version:" >&2
    echo "$members" >&2
    return 1
  fi
  # name version -> rust-version (or "none"), for every package in the lock file.
  local declared used bad
  declared=$(jq -r '.packages[] | "\(.name) v\(.version) \(.rust_version // "none")"' <<<"$meta")
  used=$( {
    cargo tree --locked --workspace --all-features -e normal,build,dev --prefix none -f '{p}' &&
    cargo tree --locked --workspace --all-features -e normal,build,dev --prefix none -f '{p}' \
      --config "build.rustflags=['--cfg','madsim']"
  } | awk 'NF {print $1, $2}' | sort -u) || return 1
  [ "$(wc -l <<<"$used")" -gt 10 ] || { echo "msrv: cargo tree listed almost nothing" >&2; return 1; }
  # Versions compared component by component (1.85 = 1.85.0).
  bad=$(awk -v msrv="$msrv" '
    function newer(a, b,   x, y, i) {
      split(a, x, "."); split(b, y, ".")
      for (i = 1; i <= 3; i++) { if (x[i] + 0 != y[i] + 0) return x[i] + 0 > y[i] + 0 }
      return 0
    }
    NR == FNR { rv[$1 " " $2] = $3; next }
    { r = rv[$1 " " $2]; if (r != "" && r != "none" && newer(r, msrv)) print "  " $1 " " $2 " needs Rust " r }
  ' <(echo "$declared") <(echo "$used"))
  echo "msrv: rust-version $msrv in every workspace package; $(wc -l <<<"$used") packages built on this platform checked"
  if [ -n "$bad" ]; then
    echo "msrv: Cargo.lock pins packages that need a newer Rust than $msrv:" >&2
    echo "$bad" >&2
    echo "msrv: pick versions that fit: CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback cargo update -p <package>" >&2
    return 1
  fi
}

# core-deps: the sans-IO core's normal dependencies (all features, every target
# platform, every cfg including madsim) hold no tokio, hyper or madsim crate.
check_core_deps() {
  local tree bad
  tree=$(cargo tree --locked -p cluster-mode-core -e normal --all-features --target all \
           --prefix none -f '{p}') || return 1
  grep -q '^cluster-mode-core ' <<<"$tree" || { echo "core-deps: cargo tree printed no cluster-mode-core" >&2; return 1; }
  bad=$(grep -E '^(tokio|hyper|madsim)([-_][A-Za-z0-9_-]*)? v' <<<"$tree" | sed 's/ (\*)$//' | sort -u)
  if [ -n "$bad" ]; then
    echo "core-deps: cluster-mode-core must not depend on tokio, hyper or madsim, but pulls in:" >&2
    echo "$bad" | sed 's/^/  /' >&2
    echo "core-deps: see \`cargo tree -p cluster-mode-core -e normal --all-features --target all -i <crate>\`" >&2
    return 1
  fi
  echo "core-deps: $(sed 's/ (\*)$//' <<<"$tree" | sort -u | wc -l) crates, none of them tokio, hyper or madsim"
}

need_jq() {
  command -v jq >/dev/null 2>&1 && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "check.sh: jq is missing and this is not root; run: sudo apt-get install -y --no-install-recommends jq" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends jq >/dev/null
}

all=(fmt clippy simclippy doc msrv core-deps)
[ "$#" -gt 0 ] && steps=("$@") || steps=("${all[@]}")
failed=()
for step in "${steps[@]}"; do
  case " ${all[*]} " in *" $step "*) ;; *) echo "check.sh: unknown check '$step' (one of: ${all[*]})" >&2; exit 2 ;; esac
  [ "$step" = msrv ] && need_jq
  echo "== check: $step"
  if "check_${step//-/_}"; then
    echo "== check: $step passed"
  else
    echo "== check: $step FAILED" >&2
    failed+=("$step")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "check.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "check.sh: all passed (${steps[*]})"
