#!/usr/bin/env bash
# Installs what the cluster-mode-discovery tests need on a fresh Debian bookworm machine.
# Run as root; idempotent (does nothing when everything is already there).
#   - dnsmasq (package dnsmasq-base): the real DNS server the DNS discovery tests start
#     on a loopback port. Installing it starts no system service.
# The Kubernetes tests need nothing: they run kube-rs against a fake API server
# written in the test itself.
set -euo pipefail

have_dnsmasq() {
    command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ]
}

if ! have_dnsmasq; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "ci-deps.sh: dnsmasq is missing and this is not root; run: apt-get install -y --no-install-recommends dnsmasq-base" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends dnsmasq-base >/dev/null
fi

have_dnsmasq || { echo "ci-deps.sh: dnsmasq still not found after install" >&2; exit 1; }
echo "ci-deps.sh: $( (command -v dnsmasq || echo /usr/sbin/dnsmasq) ) $(/usr/sbin/dnsmasq --version 2>/dev/null | head -1 || dnsmasq --version | head -1)"
