#!/usr/bin/env bash
# Validates every Kubernetes manifest of deploy/kubernetes/ against the schemas of the
# Kubernetes versions below, in strict mode (an unknown field is an error), with
# kubernetes-validate (PyPI, pinned in deploy/ci-deps.sh; it bundles the schemas, no
# network). A warning (a kind with no schema: a misspelled kind or apiVersion) fails
# too. Then it checks that the validator still rejects the deliberately broken manifests
# of deploy/kubernetes/testdata/ (one per kind of mistake), so this check can fail, and
# that every kustomization.yaml lists exactly the manifests beside it.
# scripts/test-all.sh runs it. Without the tool: not root and CI unset, it says why and
# skips; as root or with CI set it fails (test-all.sh installs the tool first).
set -euo pipefail
cd "$(dirname "$0")/.."

# The oldest Kubernetes the manifests are meant for, and the newest the tool bundles.
K8S_VERSIONS=(1.30.0 1.37.0)
dir=deploy/kubernetes

if ! command -v kubernetes-validate >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ] && [ -z "${CI:-}" ]; then
    echo "validate-k8s.sh: SKIPPED: kubernetes-validate is missing (run: bash deploy/ci-deps.sh)" >&2
    exit 0
  fi
  echo "validate-k8s.sh: kubernetes-validate is missing (bash deploy/ci-deps.sh installs it)" >&2
  exit 1
fi

# Every manifest; kustomization.yaml files are kustomize's, not the API's.
mapfile -t manifests < <(find "$dir" -name '*.yaml' ! -name kustomization.yaml ! -path "$dir/testdata/*" | sort)
mapfile -t broken < <(find "$dir/testdata" -name 'invalid-*.yaml' | sort)
[ "${#manifests[@]}" -ge 8 ] || { echo "validate-k8s.sh: found only ${#manifests[@]} manifests in $dir" >&2; exit 1; }
[ "${#broken[@]}" -ge 1 ] || { echo "validate-k8s.sh: no invalid-*.yaml fixtures in $dir/testdata" >&2; exit 1; }

# One run of the validator; fails on an error or on any warning.
validate() { # version file...
  local version=$1 out
  shift
  if ! out=$(kubernetes-validate --strict -k "$version" "$@" 2>&1); then
    echo "$out" >&2
    return 1
  fi
  if grep -q '^WARN' <<<"$out"; then
    echo "$out" >&2
    return 1
  fi
  grep -c '^INFO .* passed for resource' <<<"$out"
}

failed=0
for v in "${K8S_VERSIONS[@]}"; do
  if n=$(validate "$v" "${manifests[@]}"); then
    echo "validate-k8s.sh: Kubernetes $v: ${#manifests[@]} files, $n resources valid (strict)"
  else
    echo "validate-k8s.sh: Kubernetes $v: INVALID manifests (above)" >&2
    failed=1
  fi
done

# The check itself: each broken fixture must be rejected.
for f in "${broken[@]}"; do
  if validate "${K8S_VERSIONS[0]}" "$f" >/dev/null 2>&1; then
    echo "validate-k8s.sh: $f was ACCEPTED; the validation no longer catches this mistake" >&2
    failed=1
  else
    echo "validate-k8s.sh: $f rejected, as it must be"
  fi
done

# Each kustomization.yaml lists every manifest beside it, and nothing that is missing.
while read -r k; do
  d=$(dirname "$k")
  listed=$(awk '/^resources:/ {on=1; next} /^[^ #-]/ {on=0} on && /^ *- / {print $2}' "$k" | sort)
  for r in $listed; do
    [ -e "$d/$r" ] || { echo "validate-k8s.sh: $k lists $r, which does not exist" >&2; failed=1; }
  done
  for m in "$d"/*.yaml; do
    b=$(basename "$m")
    [ "$b" = kustomization.yaml ] && continue
    grep -qx "$b" <<<"$listed" || { echo "validate-k8s.sh: $k does not list $b" >&2; failed=1; }
  done
done < <(find "$dir" -name kustomization.yaml | sort)

[ "$failed" -eq 0 ] || { echo "validate-k8s.sh: FAILED" >&2; exit 1; }
echo "validate-k8s.sh: passed (kubernetes-validate $(kubernetes-validate --version), Kubernetes ${K8S_VERSIONS[*]})"
