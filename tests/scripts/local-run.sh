#!/usr/bin/env bash
# Runs the bundle locally with no AWS or Supabase account: the Supabase
# Management API stand-in on 127.0.0.1:8787 and `cargo lambda watch` on
# 127.0.0.1:9000, which builds and serves every function at
# http://127.0.0.1:9000/lambda-url/<binary>/v1/...
# Ctrl-C stops both.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
. tests/scripts/tools.sh
ensure_python_tools

stand_in_port=${STAND_IN_PORT:-8787}
watch_port=${WATCH_PORT:-9000}
# A fixed token shared by the stand-in and the functions; it opens nothing real.
export SUPABASE_ACCESS_TOKEN=${SUPABASE_ACCESS_TOKEN:-sbp_local_stand_in_token}
export SUPABASE_API_URL=http://127.0.0.1:$stand_in_port
unset SUPABASE_TOKEN_SECRET_ID

cargo build --quiet -p jit-guard-tests --bin supabase-stand-in
target/debug/supabase-stand-in --host 127.0.0.1 --port "$stand_in_port" &
stand_in_pid=$!
trap 'kill "$stand_in_pid" 2>/dev/null || true' EXIT

echo "functions: http://127.0.0.1:$watch_port/lambda-url/<binary>/v1/..."
cargo lambda watch --invoke-address 127.0.0.1 --invoke-port "$watch_port"
