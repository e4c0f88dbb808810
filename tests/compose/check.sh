#!/usr/bin/env bash
# tests/compose/check.sh - `docker-compose config -q` accepts
# docker-compose.yml and docker-compose.yml + docker-compose.test.yml, the
# `cluster` profile has three routed NATS nodes, and
# rejects a compose file with a wrong type (so the check can fail). Needs
# docker-compose (Debian package, in scripts/lib.sh CM_TEST_PKGS), no engine.
# Without it: one "SKIP: ..." line naming it and exit 77 (ctest: skipped).
# Closes with "N passed, M failed"; exits non-zero if anything failed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok - $*"; }
notok() { failed=$((failed + 1)); echo "not ok - $*"; }

command -v docker-compose >/dev/null ||
  { echo "SKIP: deploy_compose_config: docker-compose not found (Debian: apt-get install docker-compose)"; exit 77; }

bad="$(mktemp -d "${TMPDIR:-/tmp}/cm-compose-check.XXXXXX")"
trap 'rm -rf "$bad"' EXIT

if out="$(cd "$ROOT" && docker-compose -f docker-compose.yml config -q 2>&1)"; then
  ok "docker-compose config accepts docker-compose.yml"
else
  notok "docker-compose config accepts docker-compose.yml"; printf '    # %s\n' "$out"
fi
# The `cluster` profile: three NATS nodes routed to each other.
if out="$(cd "$ROOT" && docker-compose -f docker-compose.yml --profile cluster config 2>&1)" &&
   svcs="$(cd "$ROOT" && docker-compose -f docker-compose.yml --profile cluster config --services 2>&1)" &&
   [ "$(grep -c '^nats' <<<"$svcs")" -eq 3 ] &&
   [ "$(grep -c 'nats-route://' <<<"$out")" -ge 2 ]; then
  ok "docker-compose --profile cluster: three routed NATS nodes"
else
  notok "docker-compose --profile cluster: three routed NATS nodes"; printf '    # %s\n' "$out" | tail -5
fi
# The test override bind-mounts $CHUNKMILL_TEST_DIR; `config` only renders
# the path, it creates nothing there.
if out="$(cd "$ROOT" && CHUNKMILL_TEST_DIR="$bad/test-dir" docker-compose \
    -f docker-compose.yml -f docker-compose.test.yml config -q 2>&1)"; then
  ok "docker-compose config accepts docker-compose.yml + docker-compose.test.yml"
else
  notok "docker-compose config accepts docker-compose.yml + docker-compose.test.yml"; printf '    # %s\n' "$out"
fi
printf 'services:\n  mapper:\n    image: chunkmill:latest\n    stop_grace_period: [35s]\n    ports: 8080\n' >"$bad/docker-compose.yml"
if (cd "$bad" && docker-compose config -q >/dev/null 2>&1); then
  notok "docker-compose config rejects a broken compose file"
else
  ok "docker-compose config rejects a broken compose file"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
