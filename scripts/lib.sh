#!/usr/bin/env bash
# Shared helpers for trainyard's setup scripts. Source it; it defines functions only.

ty_log() { printf '[trainyard] %s\n' "$*" >&2; }

# Runs apt-get install for the packages that are not installed yet. Idempotent.
ty_apt_install() {
  local missing=()
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  ty_log "installing: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  if [ ! -f /tmp/.trainyard-apt-updated ]; then
    $sudo apt-get update -q >/dev/null && touch /tmp/.trainyard-apt-updated
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# Prints the pid recorded in the file $1 when that process still runs with $2 in its command
# line (a test service this project started); fails otherwise.
ty_service_pid() {
  local pid
  pid=$(cat "$1" 2>/dev/null || true)
  [ -n "$pid" ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "$2" && printf '%s\n' "$pid"
}

# Stops process $1: SIGTERM, up to 5 s, then SIGKILL.
ty_stop_pid() {
  kill "$1" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
}

# Prints the Debian mirror this machine's apt uses (first non-security URI).
ty_debian_mirror() {
  local m
  m=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v security | grep -i debian | head -n1)
  if [ -z "$m" ]; then
    m=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
          | awk '{ for (i=2;i<=NF;i++) if ($i ~ /^https?:/) { print $i; exit } }' \
          | grep -v security | grep -i debian | head -n1)
  fi
  [ -n "$m" ] || { ty_log "no Debian mirror found in apt sources"; return 1; }
  printf '%s\n' "${m%/}"
}

# Sets up what a Docker benchmark needs (packages, dockerd, the base images, hyperfine and jq)
# and builds the release trainyard binary (incrementally), whose path it prints.
ty_bench_setup() {
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  # Run inside $(...), where errexit does not reach: each step returns on failure itself.
  "$root/scripts/deps.sh" >&2 || return 1
  "$root/scripts/dockerd.sh" >&2 || return 1
  "$root/scripts/base-images.sh" >&2 || return 1
  ty_apt_install hyperfine jq >&2 || return 1
  (cd "$root" && cmake --preset release >/dev/null &&
    cmake --build --preset release --target trainyard >/dev/null) || return 1
  echo "$root/build/release/src/main/trainyard"
}

# Makes a benchmark's scratch folder ($work, /tmp/trainyard-bench-NAME.*) with a workspace in it
# (exported as TRAINYARD_HOME); on exit the workspace's daemon is stopped and both are removed.
ty_bench_workspace() {
  work=$(mktemp -d "/tmp/trainyard-bench-$1.XXXXXX")
  export TRAINYARD_HOME="$work/ws"
  trap ty_bench_cleanup EXIT
}
ty_bench_cleanup() {
  if [ -f "$TRAINYARD_HOME/server.json" ]; then
    kill "$(jq -r .pid "$TRAINYARD_HOME/server.json")" 2>/dev/null || true
  fi
  rm -rf "$work"
}
