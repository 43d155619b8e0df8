#!/usr/bin/env bash
# Checks the README's local run: starts tests/scripts/local-run.sh on free
# ports, calls two functions through cargo lambda watch as the README's curl
# examples do, and stops everything it started.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

# Ports the README does not use, so a local run of the reader's is left alone.
export STAND_IN_PORT=${SMOKE_STAND_IN_PORT:-18787}
export WATCH_PORT=${SMOKE_WATCH_PORT:-19000}
log=$(mktemp)
setsid tests/scripts/local-run.sh >"$log" 2>&1 &
leader=$!
stop() {
  kill -- "-$leader" 2>/dev/null || true
  rm -f "$log"
}
trap stop EXIT

base=http://127.0.0.1:$WATCH_PORT/lambda-url
ref=abcdefghijklmnopqrst
# The first call waits for the stand-in build and for watch to build the function.
status=$(curl -s -o /dev/null -w '%{http_code}' -m 600 --retry 60 --retry-delay 5 --retry-connrefused \
  "$base/get-project/v1/projects/$ref")
if [ "$status" != 200 ]; then
  echo "get-project answered $status through cargo lambda watch; its log:" >&2
  cat "$log" >&2
  exit 1
fi

body='{"user_id":"33333333-3333-4333-8333-333333333333","roles":[{"role":"postgres","expires_at":'$(( $(date +%s) + 7200 ))',"allowed_networks":{"allowed_cidrs":[{"cidr":"0.0.0.0/0"}]}}]}'
answer=$(curl -s -m 600 -X PUT "$base/update-jit-access/v1/projects/$ref/database/jit" \
  -H 'content-type: application/json' -d "$body")
case "$answer" in
  *'"code":"policy_denied"'*) ;;
  *)
    echo "the denied update answered: $answer; the log:" >&2
    cat "$log" >&2
    exit 1
    ;;
esac
echo "local run: get-project 200, denied update 403 policy_denied"
