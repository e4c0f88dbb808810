#!/usr/bin/env bash
# tests/k8s/test_skip.sh - deploy_manifests without the tools it needs is
# skipped, not failed, and installs nothing first: with kubectl hidden from
# PATH, and with a kubectl that is too old (1.20, Debian 12's), run.sh must
# print one "SKIP: ..." line naming kubectl and exit 77, before it looks for
# node/npm (no "npm ci", no apt-get). With node hidden as well (kubectl
# present), it must skip naming node and npm. Runs anywhere (no kubectl
# needed). Closes with "N passed, M failed".
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/cm-k8s-skip.XXXXXX")"
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok - $*"; }
notok() { failed=$((failed + 1)); echo "not ok - $*"; }

# bin/: every command of PATH except kubectl, node, npm, apt-get and sudo
# (a trap records any call of apt-get or npm).
mkdir -p "$work/bin" "$work/old"
IFS=: read -r -a dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  [ -d "$d" ] || continue
  for f in "$d"/*; do
    n="${f##*/}"
    case "$n" in kubectl|node|nodejs|npm|npx|apt-get|apt|sudo) continue ;; esac
    [ -x "$f" ] && [ ! -e "$work/bin/$n" ] && ln -s "$f" "$work/bin/$n"
  done
done
for n in apt-get npm; do
  printf '#!/bin/sh\necho "%s $*" >> "%s/calls"\nexit 1\n' "$n" "$work" >"$work/bin/$n"
  chmod +x "$work/bin/$n"
done
# A kubectl 1.20 as Debian 12's kubernetes-client reports itself.
cat >"$work/old/kubectl" <<'K'
#!/bin/sh
echo '{"clientVersion":{"major":"1","minor":"20","gitVersion":"v1.20.15"}}'
K
chmod +x "$work/old/kubectl"

case_run() { # NAME PATH WANT-REGEX
  local out rc
  out="$(PATH="$2" "$HERE/run.sh" 2>&1)"; rc=$?
  if [ "$rc" -eq 77 ] && [ "$(printf '%s\n' "$out" | grep -c '^SKIP: ')" -eq 1 ] &&
     printf '%s\n' "$out" | grep -Eq "^SKIP: .*$3" && [ ! -e "$work/calls" ]; then
    ok "$1: exit 77, $(printf '%s\n' "$out" | grep '^SKIP: ')"
  else
    notok "$1: want exit 77 and one SKIP line matching /$3/ and no apt-get/npm call; got exit $rc"
    printf '    # %s\n' "$out" | tail -n 8
    [ -e "$work/calls" ] && sed 's/^/    # called: /' "$work/calls"
  fi
  rm -f "$work/calls"
}

case_run "no kubectl on PATH" "$work/bin" "kubectl not found"
case_run "kubectl 1.20 on PATH" "$work/old:$work/bin" "kubectl 1\\.20 .*too old"
if command -v kubectl >/dev/null && (. "$HERE/../../scripts/lib.sh"; cm_kubectl_check >/dev/null); then
  mkdir -p "$work/new" && ln -s "$(command -v kubectl)" "$work/new/kubectl"
  case_run "kubectl >= 1.27 but no node/npm" "$work/new:$work/bin" "node and npm not found"
else
  echo "# no kubectl >= 1.27 here: the no-node case is not exercised"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
