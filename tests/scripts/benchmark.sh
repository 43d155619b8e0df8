#!/usr/bin/env bash
# Builds release binaries and runs the benchmark: every function's real
# binary under a local Lambda Runtime API against the Supabase stand-in with
# 20 ms added latency, side by side with direct calls to the stand-in.
# The Markdown report goes to stdout and to target/benchmark.md.
# BENCHMARK_ITERATIONS sets the warm invocations per operation (default 1000).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
. tests/scripts/tools.sh
ensure_python_tools

cargo build --locked --release --workspace --bins
JIT_GUARD_PROFILE=release target/release/benchmark | tee target/benchmark.md
