# shellcheck shell=bash
# Shared by scripts/run, scripts/test, scripts/bench, scripts/chaos: install
# what is missing (Debian packages only), build, find free ports.

CM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Build and runtime dependencies (docs/design.md).
CM_BUILD_PKGS="build-essential cmake pkg-config libnats-dev libuv1-dev libprotobuf-c-dev
  protobuf-c-compiler libsqlite3-dev libcjson-dev libhttp-parser-dev libcurl4-openssl-dev
  libssl-dev libcmocka-dev nats-server sqlite3 python3 curl libpq-dev"
# Tests also need clang's sanitizer/libFuzzer runtime, openssl (TLS tests
# generate their certificates), docker-compose (deploy_compose_config runs
# `docker-compose config` on the compose files; no engine needed), a
# PostgreSQL server (the PostgreSQL sink's tests run a throwaway one: initdb +
# pg_ctl), prometheus for promtool and python3-yaml (integ_monitoring
# checks the alert rules with them), and chromium (integ_dashboard opens the
# web dashboard in it, headless).
CM_TEST_PKGS="clang libclang-rt-14-dev openssl docker-compose postgresql prometheus python3-yaml
  chromium"
# node >= 18 and npm: integ_dashboard drives chromium with playwright-core
# (npm, installed into the build tree at test time), and deploy_manifests
# (only where kubectl >= 1.27 with kustomize v5 is on PATH) validates the
# manifests with npm packages. scripts/test installs these by command, not by
# package: a node from elsewhere (e.g. NodeSource, which bundles npm) must
# not be replaced by Debian's.
CM_DEPLOY_PKGS="nodejs npm"

cm_log() { printf '==> %s\n' "$*" >&2; }

# cm_usage FILE: the comment block at the top of FILE (after the #! line),
# without the leading "# " - the script's --help.
cm_usage() {
  awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$1"
}

# cm_kubectl_check: 0 when kubectl >= 1.27 with kustomize v5 is on PATH;
# otherwise prints the reason (one line, naming the tool) and returns 1.
cm_kubectl_check() {
  local v
  if ! command -v kubectl >/dev/null 2>&1; then
    echo "kubectl not found on PATH (needs kubectl >= 1.27 with kustomize v5; Debian 12 ships 1.20)"
    return 1
  fi
  v="$(kubectl version --client -o json 2>/dev/null | python3 -c '
import json, re, sys
try:
    d = json.load(sys.stdin)
except ValueError:
    sys.exit("unreadable output of kubectl version --client -o json")
cv = d.get("clientVersion", {})
major = int(re.sub(r"[^0-9]", "", cv.get("major", "")) or 0)
minor = int(re.sub(r"[^0-9]", "", cv.get("minor", "")) or 0)
kz = d.get("kustomizeVersion", "")
m = re.match(r"v?([0-9]+)", kz)
if (major, minor) < (1, 27) or not m or int(m.group(1)) < 5:
    kz = kz or "(none)"
    sys.exit(f"kubectl {major}.{minor} with kustomize {kz} on PATH is too old "
             f"(needs kubectl >= 1.27 with kustomize v5)")
' 2>&1)" || { echo "${v:-kubectl version --client failed}"; return 1; }
  return 0
}

# cm_ensure_pkgs PKG...: installs the Debian packages that are missing, as
# root or through sudo; without either it names them and how to install
# them, and returns 1.
cm_ensure_pkgs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      printf 'scripts/%s: missing Debian packages: %s\n' "$(basename "$0")" "${missing[*]}" >&2
      printf 'Not root and no sudo to install them; as root, run:\n  apt-get update && apt-get install -y --no-install-recommends %s\n' \
        "${missing[*]}" >&2
      return 1
    fi
    sudo="sudo"
  fi
  cm_log "installing missing packages${sudo:+ with sudo}: ${missing[*]}"
  # A fresh machine may have no package lists yet: update once on failure.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } \
    || { printf 'scripts/%s: could not install %s (see the apt-get messages above)\n' "$(basename "$0")" "${missing[*]}" >&2; return 1; }
}

# cm_build DIR [cmake args...]: configure (once) and build.
cm_build() {
  local dir="$1"; shift
  if [ ! -f "$dir/CMakeCache.txt" ]; then
    cmake -S "$CM_ROOT" -B "$dir" "$@" >/dev/null
  fi
  cmake --build "$dir" -j"$(nproc)" >/dev/null || cmake --build "$dir" -j1
}

cm_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# cm_wait_port PORT SECONDS
cm_wait_port() {
  local i
  for ((i = 0; i < $2 * 20; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}
