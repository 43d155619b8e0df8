#!/usr/bin/env bash
# Runs every test of Supabase JIT Guard, installing what the tests need:
# unit and end-to-end tests (cargo), the Cedar CLI checks of policies/,
# cfn-lint and sam validate on template.yaml, and openapi-spec-validator on
# shared/openapi.yaml. Every server the tests start listens on 127.0.0.1.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
. tests/scripts/tools.sh

ensure_python_tools
ensure_cedar
ensure_prism

echo "== cargo build (the end-to-end tests run the function binaries)"
cargo build --locked --workspace --bins

echo "== cargo test"
# The end-to-end tests save every function log line and response here.
transcripts=$(mktemp -d)
trap 'rm -rf "$transcripts"' EXIT
export JIT_GUARD_TRANSCRIPT_DIR=$transcripts
cargo test --locked --workspace

echo "== secret scan of every log line and response the suite produced"
# Every token and signing secret the tests use starts with one of these prefixes.
files=$(find "$transcripts" -type f | wc -l)
lines=$(cat "$transcripts"/* | wc -l)
if [ "$files" -eq 0 ]; then
  echo "no transcripts were written; the end-to-end tests did not run" >&2
  exit 1
fi
if grep -rlE 'sbp_e2e|sbp_rotated|whsec_e2e' "$transcripts"; then
  echo "a secret appears in the files above" >&2
  exit 1
fi
echo "scanned $lines lines from $files test harnesses: no secret found"

echo "== the README's local run through cargo lambda watch"
tests/scripts/local-run-smoke.sh

echo "== cedar: strict validation, format and decision cases"
cedar validate --schema policies/schema.cedarschema --policies policies/policies.cedar --validation-mode strict
cedar format --check --policies policies/policies.cedar
cedar run-tests --schema policies/schema.cedarschema --policies policies/policies.cedar --tests policies/tests.json

echo "== cfn-lint"
cfn-lint template.yaml

echo "== sam validate --lint"
# It only transforms and lints the template: the dummy region and the
# disabled metadata lookup keep it from looking for AWS credentials.
AWS_EC2_METADATA_DISABLED=true SAM_CLI_TELEMETRY=0 sam validate --lint --region us-east-1 -t template.yaml

echo "== openapi-spec-validator"
openapi-spec-validator shared/openapi.yaml

echo "all tests passed"
