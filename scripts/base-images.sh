#!/usr/bin/env bash
# Builds the base images that tests and the demo pull by their usual names, from Debian packages:
#   debian:bookworm-slim  (debootstrap minbase -> docker import)
#   python:3.11-slim      (debian:bookworm-slim + python3, pip, venv)
# No public registry is reachable here, so these stand in for the images users would pull.
# Idempotent: an image that exists is left alone (TRAINYARD_REBUILD_BASE=1 forces a rebuild).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
"$(dirname "$0")/dockerd.sh"

have_image() { [ "${TRAINYARD_REBUILD_BASE:-0}" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; }

if ! have_image debian:bookworm-slim; then
  ty_apt_install debootstrap
  mirror=$(ty_debian_mirror)
  root=$(mktemp -d /tmp/trainyard-rootfs.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  ty_log "debootstrap bookworm (minbase) from the machine's mirror into $root"
  debootstrap --variant=minbase bookworm "$root" "$mirror" >/tmp/trainyard-debootstrap.log 2>&1 \
    || { tail -n 30 /tmp/trainyard-debootstrap.log >&2; exit 1; }
  # Keep images small: no apt lists, no docs.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* "$root"/usr/share/man/*
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["bash"]' - debian:bookworm-slim >/dev/null
  rm -rf "$root"; trap - EXIT
  ty_log "imported debian:bookworm-slim"
fi

if ! have_image python:3.11-slim; then
  ty_log "building python:3.11-slim from debian:bookworm-slim"
  ctx=$(mktemp -d /tmp/trainyard-pyctx.XXXXXX)
  cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM debian:bookworm-slim
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      python3 python3-pip python3-venv python-is-python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV PYTHONUNBUFFERED=1
CMD ["python3"]
DOCKERFILE
  docker build -q -t python:3.11-slim "$ctx" >/dev/null
  rm -rf "$ctx"
  ty_log "built python:3.11-slim"
fi
