#!/usr/bin/env bash
# Installs what the cluster-mode (shell-tokio) tests need on a fresh Debian bookworm
# machine. Run as root; idempotent (does nothing when everything is already there).
#   - nftables and iproute2: the network-namespace partition test
#     (tests/netns_partition.rs) cuts links with nft inside namespaces made with `ip`.
#     Without root that test prints why and skips; as root (or with CI set) it fails
#     when these tools are missing.
#   - chromium (and fonts-dejavu-core, the fonts the page names): the status page in a
#     real headless browser (tests/ui_chromium.rs). Without it that test skips when
#     not root and CI is unset; as root or with CI set it fails.
#   - prometheus (Debian package `prometheus`: /usr/bin/prometheus and
#     /usr/bin/promtool): tests/prometheus_processes.rs checks the metrics endpoint
#     with `promtool check metrics` and a real Prometheus server scraping node
#     processes. Without the tools it skips unless root or CI is set.
# Every other test needs nothing beyond cargo (real sockets on 127.0.0.1 and the
# cluster-node binary that cargo builds).
set -euo pipefail

missing=()
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || missing+=(nftables)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || missing+=(iproute2)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || missing+=(prometheus)

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "ci-deps.sh: missing ${missing[*]} and this is not root; run: apt-get install -y --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "ci-deps.sh: $(/usr/sbin/nft --version 2>/dev/null || nft --version); $(ip -V); $(chromium --version 2>/dev/null | tail -n 1); $(promtool --version 2>&1 | head -n 1)"
