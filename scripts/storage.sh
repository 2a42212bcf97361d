#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Runs the object stores the datastore tests and benches use, on 127.0.0.1 only:
#   Azurite (Microsoft's Azure Storage emulator, blob service) on :10000, with one account of
#     its own whose key is random and made once;
#   an S3-compatible server on :9100: s3rver behind a Signature V4 check
#     (scripts/storage/s3-server.js), one key pair, random and made once, bucket trainyard-test.
#     Node runs it with OpenSSL's legacy provider: s3rver makes its listing continuation tokens
#     with DES, which OpenSSL 3 keeps there (without it every second page of a listing is a 500).
# Both come from the npm registry (scripts/storage/package-lock.json) and keep their data under
# /var/lib/trainyard-test/storage. For tests, /var/lib/trainyard-test/storage.env (0600,
# shell-sourceable) holds AZURITE_ACCOUNT, AZURITE_KEY, AZURITE_URL, S3_URL, S3_BUCKET,
# S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY. Secrets reach the servers through their environment,
# never their arguments. Idempotent: services that answer with the current keys are left alone.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"

top=/var/lib/trainyard-test
dir=$top/storage
envfile=$top/storage.env
pkg=$here/storage
azurite_log=/var/log/trainyard-azurite.log
s3_log=/var/log/trainyard-s3.log
azurite_addr=127.0.0.1:10000
s3_addr=127.0.0.1:9100
account=trainyardtest
bucket=trainyard-test

ty_apt_install curl ca-certificates
command -v npm >/dev/null 2>&1 || ty_apt_install nodejs npm

# --- packages: installed from the lock file, again only when it changes --------------------
stamp=$pkg/node_modules/.trainyard-lock.sha256
want=$(sha256sum "$pkg/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  ty_log "installing the storage services from the npm registry (scripts/storage)"
  (cd "$pkg" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$want" >"$stamp"
fi

umask 077
mkdir -p "$dir/azurite" "$dir/s3"

# --- credentials: made once, kept in storage.env --------------------------------------------
get() { [ -f "$envfile" ] || return 0; sed -n "s/^$1=//p" "$envfile" | head -n1; }
azurite_key=$(get AZURITE_KEY)
[ -n "$azurite_key" ] || azurite_key=$(head -c 64 /dev/urandom | base64 -w0)
s3_key_id=$(get S3_ACCESS_KEY_ID)
[ -n "$s3_key_id" ] || s3_key_id=TY$(head -c 9 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)
s3_secret=$(get S3_SECRET_ACCESS_KEY)
[ -n "$s3_secret" ] || s3_secret=$(head -c 30 /dev/urandom | base64 -w0 | tr '+/' 'AB')
envtmp=$(mktemp "$top/.storage.env.XXXXXX")
cat >"$envtmp" <<EOF
# Object-store test services made by scripts/storage.sh. Source it: . $envfile
AZURITE_ACCOUNT=$account
AZURITE_KEY=$azurite_key
AZURITE_URL=http://$azurite_addr/$account
S3_URL=http://$s3_addr
S3_BUCKET=$bucket
S3_ACCESS_KEY_ID=$s3_key_id
S3_SECRET_ACCESS_KEY=$s3_secret
EOF
chmod 0600 "$envtmp"
if cmp -s "$envtmp" "$envfile"; then rm -f "$envtmp"; else mv -f "$envtmp" "$envfile"; fi

code_of() { curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$@" 2>/dev/null || true; }

# Signs a GET of the account's container list with the Shared Key (as the datastore client
# does) and prints the status: 200 when Azurite holds our key.
azurite_auth_code() {
  local date sig
  date=$(LC_ALL=C TZ=GMT date '+%a, %d %b %Y %H:%M:%S GMT')
  # HMAC by node, the key from its environment (openssl would want it in its arguments).
  sig=$(printf 'GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:%s\nx-ms-version:2021-08-06\n/%s/%s/\ncomp:list' \
          "$date" "$account" "$account" |
        TY_KEY="$azurite_key" node -e '
          const c = require("crypto"); let d = "";
          process.stdin.on("data", x => { d += x; }).on("end", () => process.stdout.write(
            c.createHmac("sha256", Buffer.from(process.env.TY_KEY, "base64")).update(d)
             .digest("base64")));')
  # The signature goes through a curl config on stdin, not the command line.
  printf 'header = "Authorization: SharedKey %s:%s"\n' "$account" "$sig" |
    curl -K - -s -o /dev/null -w '%{http_code}' --max-time 3 \
      -H "x-ms-date: $date" -H "x-ms-version: 2021-08-06" \
      "http://$azurite_addr/$account/?comp=list" 2>/dev/null || true
}

# --- Azurite ----------------------------------------------------------------------------
azurite_pidfile=$dir/azurite.pid
pid=$(ty_service_pid "$azurite_pidfile" azurite-blob || true)
if [ -n "$pid" ] && [ "$(azurite_auth_code)" != 200 ]; then
  ty_log "restarting Azurite (pid $pid) for a new key"
  ty_stop_pid "$pid"
  pid=""
fi
if [ -z "$pid" ] && [ "$(code_of "http://$azurite_addr/")" != 000 ]; then
  ty_log "something else answers on $azurite_addr; stop it and run this script again"
  exit 1
fi
if [ -z "$pid" ]; then
  ty_log "starting Azurite on $azurite_addr"
  AZURITE_ACCOUNTS="$account:$azurite_key" setsid nohup "$pkg/node_modules/.bin/azurite-blob" \
    --blobHost 127.0.0.1 --blobPort 10000 --location "$dir/azurite" --disableTelemetry \
    --skipApiVersionCheck --silent >>"$azurite_log" 2>&1 </dev/null &
  echo $! >"$azurite_pidfile"
  for _ in $(seq 1 100); do [ "$(azurite_auth_code)" = 200 ] && break; sleep 0.2; done
fi
if [ "$(azurite_auth_code)" != 200 ]; then
  ty_log "Azurite on $azurite_addr does not accept the key in $envfile; see $azurite_log"
  tail -n 20 "$azurite_log" >&2 2>/dev/null || true
  exit 1
fi

# --- S3 ---------------------------------------------------------------------------------
s3_pidfile=$dir/s3.pid
s3_auth_code() {
  local e=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
  printf 'user = "%s:%s"\n' "$s3_key_id" "$s3_secret" |
    curl -K - -s -o /dev/null -w '%{http_code}' --max-time 3 --aws-sigv4 "aws:amz:us-east-1:s3" \
      -H "x-amz-content-sha256: $e" "http://$s3_addr/$bucket?list-type=2&max-keys=1" 2>/dev/null ||
    true
}
pid=$(ty_service_pid "$s3_pidfile" s3-server.js || true)
if [ -n "$pid" ] && [ "$(s3_auth_code)" != 200 ]; then
  ty_log "restarting the S3 server (pid $pid) for a new key"
  ty_stop_pid "$pid"
  pid=""
fi
if [ -z "$pid" ] && [ "$(code_of "http://$s3_addr/")" != 000 ]; then
  ty_log "something else answers on $s3_addr; stop it and run this script again"
  exit 1
fi
if [ -z "$pid" ]; then
  ty_log "starting the S3 server on $s3_addr"
  S3_ADDRESS=127.0.0.1 S3_PORT=9100 S3_DIRECTORY="$dir/s3" S3_BUCKETS=$bucket \
    S3_ACCESS_KEY_ID="$s3_key_id" S3_SECRET_ACCESS_KEY="$s3_secret" \
    setsid nohup node --openssl-legacy-provider "$pkg/s3-server.js" >>"$s3_log" 2>&1 </dev/null &
  echo $! >"$s3_pidfile"
  for _ in $(seq 1 100); do [ "$(s3_auth_code)" = 200 ] && break; sleep 0.2; done
fi
if [ "$(s3_auth_code)" != 200 ]; then
  ty_log "the S3 server on $s3_addr does not accept the key in $envfile; see $s3_log"
  tail -n 20 "$s3_log" >&2 2>/dev/null || true
  exit 1
fi
