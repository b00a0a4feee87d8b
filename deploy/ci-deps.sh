#!/usr/bin/env bash
# Installs what the deploy/ checks need (scripts/validate-k8s.sh): kubernetes-validate
# from PyPI, pinned, which bundles the Kubernetes JSON schemas (1.25 to 1.37) and so
# validates offline. Idempotent. scripts/test-all.sh runs it as root when the tool is
# missing or of another version.
set -euo pipefail
VERSION=1.37.0

have_it() {
  command -v kubernetes-validate >/dev/null 2>&1 &&
    [ "$(kubernetes-validate --version 2>/dev/null)" = "$VERSION" ]
}
if ! have_it; then
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "deploy/ci-deps.sh: python3 with pip is missing and this is not root; run: apt-get install -y --no-install-recommends python3-pip" >&2
      exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  # Debian's own python3 is "externally managed" (PEP 668): pip then needs
  # --break-system-packages; other pythons (pyenv) take the plain command.
  python3 -m pip install -q "kubernetes-validate==$VERSION" 2>/dev/null ||
    python3 -m pip install -q --break-system-packages "kubernetes-validate==$VERSION"
  hash -r
fi
have_it || { echo "deploy/ci-deps.sh: kubernetes-validate $VERSION is still not on PATH" >&2; exit 1; }
echo "deploy/ci-deps.sh: kubernetes-validate $(kubernetes-validate --version)"
