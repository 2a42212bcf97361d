#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Runs a private registry with htpasswd auth for the tests, from Debian's docker-registry
# binary (not a container), on 127.0.0.1:5000 only, and pushes python:3.11-slim into it.
#   config     /var/lib/trainyard-test/registry/config.yml
#   storage    /var/lib/trainyard-test/registry/data
#   users      /var/lib/trainyard-test/registry/htpasswd (bcrypt)
#   log        /var/log/trainyard-registry.log
#   for tests  /var/lib/trainyard-test/registry.env (0600, shell-sourceable):
#              REGISTRY, REGISTRY_USER, REGISTRY_PASSWORD, REGISTRY_IMAGE
# The password is random, made once, and never put in a process's arguments.
# Idempotent: a registry that answers with our credentials and already holds the image is left alone.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"

top=/var/lib/trainyard-test
dir=$top/registry
envfile=$top/registry.env
config=$dir/config.yml
htpasswd_file=$dir/htpasswd
pidfile=$dir/registry.pid
logfile=/var/log/trainyard-registry.log
addr=127.0.0.1:5000
user=trainyard
image=$addr/trainyard-test/python:3.11-slim
source_image=python:3.11-slim

ty_apt_install docker-registry apache2-utils curl ca-certificates
"$here/dockerd.sh"
"$here/base-images.sh"

umask 077
mkdir -p "$dir/data"

# --- credentials: made once, kept in registry.env ---------------------------------------
password=""
if [ -f "$envfile" ]; then
  password=$(sed -n 's/^REGISTRY_PASSWORD=//p' "$envfile" | head -n1)
fi
if [ -z "$password" ]; then
  password=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  ty_log "generated a password for registry user $user"
fi
envtmp=$(mktemp "$top/.registry.env.XXXXXX")
cat >"$envtmp" <<EOF
# Private test registry made by scripts/registry.sh. Source it: . $envfile
REGISTRY=$addr
REGISTRY_USER=$user
REGISTRY_PASSWORD=$password
REGISTRY_IMAGE=$image
EOF
chmod 0600 "$envtmp"
if cmp -s "$envtmp" "$envfile"; then rm -f "$envtmp"; else mv -f "$envtmp" "$envfile"; fi

restart=0
# htpasswd -i reads the password from stdin; -v checks it without rewriting the file.
if ! printf '%s' "$password" | htpasswd -v -i "$htpasswd_file" "$user" >/dev/null 2>&1; then
  printf '%s' "$password" | htpasswd -B -c -i "$htpasswd_file" "$user" >/dev/null 2>&1
  restart=1
fi

# --- config ------------------------------------------------------------------------------
cfgtmp=$(mktemp "$dir/.config.yml.XXXXXX")
cat >"$cfgtmp" <<EOF
# Written by scripts/registry.sh; edits are overwritten.
version: 0.1
log:
  level: info
  fields:
    service: trainyard-test-registry
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: $addr
  headers:
    X-Content-Type-Options: [nosniff]
auth:
  htpasswd:
    realm: trainyard-test-registry
    path: $htpasswd_file
EOF
chmod 0600 "$cfgtmp"
if cmp -s "$cfgtmp" "$config"; then rm -f "$cfgtmp"; else mv -f "$cfgtmp" "$config"; restart=1; fi

# --- process -----------------------------------------------------------------------------
# Status code of GET /v2/ without credentials (000 when nothing answers).
probe() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$addr/v2/" 2>/dev/null || true; }
# curl with our credentials given through a config on stdin, never on the command line.
curl_auth() { printf 'user = "%s:%s"\n' "$user" "$password" | curl -K - "$@"; }
auth_ok() { [ "$(curl_auth -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$addr/v2/")" = 200 ]; }

# On a systemd machine Debian's own docker-registry service wants port 5000 (no auth, all
# interfaces); this test registry replaces it.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
  ty_log "stopping Debian's docker-registry service; the test registry takes port 5000"
  systemctl disable --now docker-registry >/dev/null 2>&1 || systemctl stop docker-registry
fi

# The registry this script started, if it still runs with our config.
pid=$(ty_service_pid "$pidfile" "$config" || true)
if [ -n "$pid" ] && { [ "$restart" = 1 ] || ! auth_ok; }; then
  ty_log "restarting the test registry (pid $pid) for a new config or password"
  ty_stop_pid "$pid"
  pid=""
fi

code=$(probe)
if [ "$code" = 000 ]; then
  ty_log "starting the test registry on $addr"
  setsid nohup docker-registry serve "$config" >>"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    code=$(probe)
    [ "$code" = 401 ] && break
    sleep 0.2
  done
fi
if [ "$code" != 401 ]; then
  ty_log "GET http://$addr/v2/ answered $code, expected 401 (auth required); see $logfile"
  tail -n 20 "$logfile" >&2 2>/dev/null || true
  exit 1
fi
if ! auth_ok; then
  ty_log "a registry on $addr rejects the credentials in $envfile and was not started by this script;"
  ty_log "stop it (e.g. ss -ltnp 'sport = :5000' shows its pid) and run this script again"
  exit 1
fi

# --- image -------------------------------------------------------------------------------
repo_path=${image#"$addr"/}
repo_path=${repo_path%:*}
tag=${image##*:}
have_manifest() {
  [ "$(curl_auth -s -o /dev/null -w '%{http_code}' --max-time 10 -I \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        -H 'Accept: application/vnd.docker.distribution.manifest.list.v2+json' \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        -H 'Accept: application/vnd.oci.image.index.v1+json' \
        "http://$addr/v2/$repo_path/manifests/$tag")" = 200 ]
}

if ! have_manifest; then
  ty_log "pushing $source_image to $image"
  # A throwaway client config keeps the credentials out of ~/.docker; removed on exit.
  dockercfg=$(mktemp -d /tmp/trainyard-docker-config.XXXXXX)
  trap 'rm -rf "$dockercfg"' EXIT
  if ! printf '%s' "$password" \
       | docker --config "$dockercfg" login "$addr" -u "$user" --password-stdin >"$dockercfg/out.log" 2>&1; then
    cat "$dockercfg/out.log" >&2
    exit 1
  fi
  docker tag "$source_image" "$image"
  if ! docker --config "$dockercfg" push "$image" >"$dockercfg/out.log" 2>&1; then
    tail -n 20 "$dockercfg/out.log" >&2
    docker rmi "$image" >/dev/null 2>&1 || true
    exit 1
  fi
  docker --config "$dockercfg" logout "$addr" >/dev/null 2>&1 || true
  # Drop the local tag so tests that pull REGISTRY_IMAGE really go through the registry.
  docker rmi "$image" >/dev/null
  rm -rf "$dockercfg"; trap - EXIT
  have_manifest || { ty_log "pushed, but the registry does not list $image"; exit 1; }
  ty_log "pushed $image"
fi
