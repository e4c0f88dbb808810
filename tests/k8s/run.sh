#!/usr/bin/env bash
# tests/k8s/run.sh - offline checks of the Kubernetes files: every k8s/ base
# and overlay renders (kubectl kustomize), validates against the Kubernetes /
# Argo Rollouts / KEDA / Prometheus Operator schemas, has no unknown fields,
# and passes the policy checks; broken test data is rejected (check.js).
#
# Needs kubectl >= 1.27 with kustomize v5 (not a Debian package: bookworm's
# kubernetes-client is 1.20), node >= 18 and npm (Debian: nodejs npm), and the
# npm registry for `npm ci` (package-lock.json) on the first run. Installs no
# packages itself: scripts/test installs nodejs and npm when kubectl is there
# (scripts/lib.sh CM_DEPLOY_PKGS).
# A missing tool is checked first: the test then prints one "SKIP: ..." line
# naming it and exits 77, which ctest reports as skipped (SKIP_RETURN_CODE).
# Otherwise closes with "N passed, M failed"; exits non-zero if anything failed.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
. "$ROOT/scripts/lib.sh"
SKIP=77
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok - $*"; }
notok() { failed=$((failed + 1)); echo "not ok - $*"; }

finish() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit $?
}
skip() { echo "SKIP: $*"; exit "$SKIP"; }

# ---- prerequisites, before anything is installed or fetched ----------------
why="$(cm_kubectl_check)" || skip "deploy_manifests: $why"
command -v node >/dev/null && command -v npm >/dev/null ||
  skip "deploy_manifests: node and npm not found (Debian: apt-get install nodejs npm; scripts/test installs them when kubectl >= 1.27 is on PATH)"
node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
[ "$node_major" -ge 18 ] 2>/dev/null || skip "deploy_manifests: node $(node --version 2>/dev/null) is too old (needs node >= 18)"

if [ ! -d "$HERE/node_modules/@kubernetes-models/validate" ] || [ "$HERE/package-lock.json" -nt "$HERE/node_modules/.package-lock.json" ]; then
  echo "# npm ci in tests/k8s"
  if ! (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
    notok "npm ci in tests/k8s (needs the npm registry on the first run)"
    finish
  fi
fi

# ---- NATS authorization in docker-compose.yml (check-compose.js) -----------
# Needs the npm packages above and docker-compose to render the file
# (tests/compose/check.sh validates the compose files on their own).
if command -v docker-compose >/dev/null; then
  if rendered="$(cd "$ROOT" && docker-compose -f docker-compose.yml config 2>&1)"; then
    out="$(printf '%s\n' "$rendered" | (cd "$HERE" && node check-compose.js -) 2>&1)"
    while IFS= read -r l; do
      case "$l" in
        "ok - "*) ok "${l#ok - }" ;;
        "not ok - "*) notok "${l#not ok - }" ;;
        "    #"*) printf '%s\n' "$l" ;;
      esac
    done <<<"$out"
  else
    notok "docker-compose config renders docker-compose.yml"; printf '    # %s\n' "$rendered"
  fi
else
  echo "# docker-compose not found: compose authorization checks not run"
fi

# ---- Kubernetes manifests ------------------------------------------------------
out="$(cd "$HERE" && node check.js --repo "$ROOT" 2>&1)"
rc=$?
printf '%s\n' "$out" | grep -v '^k8s: [0-9]* passed, [0-9]* failed$'
line="$(printf '%s\n' "$out" | grep -E '^k8s: [0-9]+ passed, [0-9]+ failed$' | tail -n 1)"
if [ -n "$line" ]; then
  p="$(sed -E 's/^k8s: ([0-9]+) passed.*/\1/' <<<"$line")"
  f="$(sed -E 's/.* ([0-9]+) failed$/\1/' <<<"$line")"
  passed=$((passed + p)); failed=$((failed + f))
  [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && notok "check.js exited $rc"
else
  notok "check.js ran to the end (exit $rc)"
fi
finish
