#!/usr/bin/env bash
# Runs every test of Supabase JIT Guard, installing what the tests need:
# unit and end-to-end tests (cargo), the Cedar CLI checks of policies/, and
# cfn-lint on template.yaml. Every server the tests start listens on 127.0.0.1.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
. tests/scripts/tools.sh

ensure_python_tools
ensure_cedar

echo "== cargo build (the end-to-end tests run the function binaries)"
cargo build --locked --workspace --bins

echo "== cargo test"
cargo test --locked --workspace

echo "== cedar: strict validation, format and decision cases"
cedar validate --schema policies/schema.cedarschema --policies policies/policies.cedar --validation-mode strict
cedar format --check --policies policies/policies.cedar
cedar run-tests --schema policies/schema.cedarschema --policies policies/policies.cedar --tests policies/tests.json

echo "== cfn-lint"
cfn-lint template.yaml

echo "all tests passed"
