# shellcheck shell=bash
# Shared by scripts/run, scripts/test, scripts/bench, scripts/chaos: install
# what is missing (Debian packages only), build, find free ports.

CM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Build and runtime dependencies (DESIGN.md).
CM_BUILD_PKGS="build-essential cmake pkg-config libnats-dev libuv1-dev libprotobuf-c-dev
  protobuf-c-compiler libsqlite3-dev libcjson-dev libhttp-parser-dev libcurl4-openssl-dev
  libcmocka-dev nats-server sqlite3 python3 curl libpq-dev"
# Tests also need clang's sanitizer/libFuzzer runtime, openssl (TLS tests
# generate their certificates) and a PostgreSQL server (the PostgreSQL sink's
# tests run a throwaway one: initdb + pg_ctl).
CM_TEST_PKGS="clang libclang-rt-14-dev openssl postgresql"

cm_log() { printf '==> %s\n' "$*" >&2; }

cm_ensure_pkgs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  cm_log "installing missing packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  # A fresh machine may have no package lists yet: update once on failure.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
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
