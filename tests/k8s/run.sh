#!/usr/bin/env bash
# tests/k8s/run.sh - offline checks of the deployment files:
#   - k8s/: every base/overlay renders (kubectl kustomize), validates against
#     the Kubernetes / Argo Rollouts / KEDA / Prometheus Operator schemas, has
#     no unknown fields, and passes the policy checks; broken test data is
#     rejected (check.js);
#   - docker-compose.yml and docker-compose.yml + docker-compose.test.yml are
#     accepted by `docker-compose config -q`, and docker-compose.yml runs NATS
#     with authorization, credentials from secrets (check-compose.js).
# Installs what it needs: npm packages (npm ci, from package-lock.json) and
# docker-compose (Debian package) when missing. Needs node >= 18 and kubectl
# with kustomize v5 (kubectl >= 1.27).
# Closes with "N passed, M failed"; exits non-zero if anything failed.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok - $*"; }
notok() { failed=$((failed + 1)); echo "not ok - $*"; }

finish() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit $?
}

# ---- prerequisites --------------------------------------------------------
SUDO=()
[ "$(id -u)" != 0 ] && SUDO=(sudo)
apt_install() {
  command -v apt-get >/dev/null || return 1
  "${SUDO[@]}" apt-get update -qq >/dev/null && \
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm || { notok "node and npm are installed"; finish; }
fi
if ! command -v kubectl >/dev/null; then
  notok "kubectl (>= 1.27, kustomize v5) is on PATH"
  finish
fi
if [ ! -d "$HERE/node_modules/@kubernetes-models/validate" ] || [ "$HERE/package-lock.json" -nt "$HERE/node_modules/.package-lock.json" ]; then
  echo "# npm ci in tests/k8s"
  if ! (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
    notok "npm ci in tests/k8s"
    finish
  fi
fi

# ---- docker-compose config ---------------------------------------------------
if ! command -v docker-compose >/dev/null; then
  echo "# installing docker-compose (Debian package)"
  apt_install docker-compose || true
fi
if command -v docker-compose >/dev/null; then
  if out="$(cd "$ROOT" && docker-compose -f docker-compose.yml config -q 2>&1)"; then
    ok "docker-compose config accepts docker-compose.yml"
  else
    notok "docker-compose config accepts docker-compose.yml"; printf '    # %s\n' "$out"
  fi
  if out="$(cd "$ROOT" && CHUNKMILL_TEST_DIR=/tmp/chunkmill-compose-config docker-compose \
      -f docker-compose.yml -f docker-compose.test.yml config -q 2>&1)"; then
    ok "docker-compose config accepts docker-compose.yml + docker-compose.test.yml"
  else
    notok "docker-compose config accepts docker-compose.yml + docker-compose.test.yml"; printf '    # %s\n' "$out"
  fi
  # NATS authorization in the rendered compose file (check-compose.js).
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
  # The check can fail: a compose file with a wrong type is rejected.
  bad="$(mktemp -d)"
  printf 'services:\n  mapper:\n    image: chunkmill:latest\n    stop_grace_period: [35s]\n    ports: 8080\n' >"$bad/docker-compose.yml"
  if (cd "$bad" && docker-compose config -q >/dev/null 2>&1); then
    notok "docker-compose config rejects a broken compose file"
  else
    ok "docker-compose config rejects a broken compose file"
  fi
  rm -rf "$bad"
else
  notok "docker-compose is installed (apt-get install docker-compose)"
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
