#!/usr/bin/env bash
# The one command that runs every test of the workspace (README: "Test it").
# System packages it needs:
#   - dnsmasq (Debian package dnsmasq-base): the DNS discovery tests, which fail without it;
#   - nft and ip (nftables, iproute2): the network-namespace partition test, which also
#     needs root. Not root (and CI unset) it skips, saying why on stderr; as root or
#     with CI set it must run, and a missing tool or failed setup fails it;
#   - kubernetes-validate (PyPI, pinned in deploy/ci-deps.sh): scripts/validate-k8s.sh,
#     the schema check of deploy/kubernetes/ (skips, saying why, when missing and not
#     root with CI unset).
#   - chromium: the status page in a headless browser (shell-tokio/tests/ui_chromium.rs)
#     and the READMEs' mermaid diagrams (scripts/check-mermaid.sh, which fetches the
#     mermaid package with npm), skipped likewise without it when not root and CI is unset.
#   - promtool and prometheus (Debian package prometheus): the metrics test against a
#     real Prometheus; not root (and CI unset) it skips, saying why.
# As root (a fresh CI machine) it installs what is missing with
# discovery-adapters/ci-deps.sh and shell-tokio/ci-deps.sh (apt, Debian/Ubuntu). Not
# root and dnsmasq missing, it stops at once and prints the command to run.
# Static checks (fmt, clippy, docs, MSRV, core dependencies) are scripts/check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

have() { # a command on PATH or in one of the sbin directories (not on a user's PATH)
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

if [ "$(id -u)" -eq 0 ]; then
  have dnsmasq || bash discovery-adapters/ci-deps.sh
  { have nft && have ip && have chromium && have promtool && have prometheus; } || bash shell-tokio/ci-deps.sh
  [ "$(kubernetes-validate --version 2>/dev/null)" = "$(sed -n 's/^VERSION=//p' deploy/ci-deps.sh)" ] ||
    bash deploy/ci-deps.sh
else
  if ! have dnsmasq; then
    echo "test-all.sh: dnsmasq is missing (the DNS discovery tests need it); run:" >&2
    echo "  sudo apt-get install -y --no-install-recommends dnsmasq-base" >&2
    echo "or run this script as root, which installs every package the tests need." >&2
    exit 1
  fi
  echo "test-all.sh: not root: the network-namespace partition test will skip (it needs root)"
  have chromium || echo "test-all.sh: chromium missing: the status-page browser test will skip (sudo bash shell-tokio/ci-deps.sh installs it)"
  { have promtool && have prometheus; } ||
    echo "test-all.sh: promtool/prometheus missing: the Prometheus metrics test will skip (apt-get install prometheus)"
fi

# Any RUSTFLAGS, even empty, overrides the `simtest` alias's build.rustflags and would
# silently run the simulation suites in real mode (see .cargo/config.toml).
unset RUSTFLAGS

echo "== Kubernetes manifests (deploy/kubernetes) against the API schemas"
bash scripts/validate-k8s.sh

echo "== the READMEs' mermaid diagrams render (mermaid in headless Chromium)"
if have chromium || [ "$(id -u)" -eq 0 ] || [ -n "${CI:-}" ]; then
  bash scripts/check-mermaid.sh
else
  echo "test-all.sh: chromium missing: the diagram check skips" >&2
fi

echo "== unit, property, scenario, integration and process tests (all features)"
# The simulation packages are empty without --cfg madsim and their tests fail loudly
# on purpose when built that way; they run below.
cargo test --workspace --all-features --exclude cluster-mode-sims --exclude cluster-mode-madsim

echo "== the 1,000-member scenario (release: about a minute; in debug it would take many)"
cargo test --release -p cluster-mode-core --test scenarios -- --ignored

echo "== simulation suites (built with --cfg madsim into target/madsim)"
bash sims/ci-run.sh
# In release, like the simulation suites above: it reuses their madsim build instead
# of compiling every dependency a second time in debug.
cargo simtest -p cluster-mode --release
