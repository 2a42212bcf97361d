#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Installs the Debian 12 packages needed to build trainyard, run its tests and run the demo.
# Idempotent: installed packages are skipped, so a warm machine returns at once.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"

packages=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config git
  # libraries (CMakeLists.txt finds them)
  libboost-dev libcurl4-openssl-dev libsqlite3-dev libssl-dev libarchive-dev libyaml-cpp-dev
  nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev libsodium-dev libxml2-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev googletest libbenchmark-dev curl jq hyperfine python3 shellcheck
  openssl
  # installing the Python SDK offline (pip install --no-build-isolation)
  python3-venv python3-pip python3-setuptools python3-wheel
  # fuzzing (scripts/fuzz.sh): clang with its libFuzzer and sanitizer runtimes
  clang libclang-rt-14-dev
  # real services for the integration tests and the demo
  apache2-utils docker-registry docker.io debootstrap ca-certificates
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

# Name a package apt does not know before apt-get fails on the whole list.
no_candidate() {
  local p c out=()
  for p in "$@"; do
    c=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ { print $2 }')
    { [ -z "$c" ] || [ "$c" = "(none)" ]; } && out+=("$p")
  done
  printf '%s\n' "${out[@]}"
}
unknown=$(no_candidate "${missing[@]}")
if [ -n "$unknown" ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -q >/dev/null && touch /tmp/.trainyard-apt-updated
  unknown=$(no_candidate "${missing[@]}")
  if [ -n "$unknown" ]; then
    ty_log "apt has no candidate for: $(echo "$unknown" | tr '\n' ' ')(is this Debian 12 with main enabled?)"
    exit 1
  fi
fi

ty_apt_install "${missing[@]}"
