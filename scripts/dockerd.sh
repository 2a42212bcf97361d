#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Installs Debian's docker.io and makes sure dockerd answers on /var/run/docker.sock. Idempotent.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

ty_apt_install docker.io ca-certificates

engine_up() { curl -sf --unix-socket /var/run/docker.sock http://localhost/_ping >/dev/null 2>&1; }

if engine_up; then exit 0; fi
ty_apt_install curl
if ! engine_up; then
  ty_log "starting dockerd"
  # Not under systemd in containers/CI: run the daemon directly, detached from this shell.
  mkdir -p /var/log
  setsid nohup dockerd >/var/log/trainyard-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    engine_up && break
    sleep 0.5
  done
fi
engine_up || { ty_log "dockerd did not come up; see /var/log/trainyard-dockerd.log"; tail -n 20 /var/log/trainyard-dockerd.log >&2; exit 1; }
ty_log "dockerd is up"
