# Sourced by the other scripts: installs the tools the tests and local runs
# need into one folder outside the checkout, and puts them on PATH.
#
# JIT_GUARD_TOOLS sets that folder (default ~/.cache/jit-guard). The
# virtualenv path stays fixed because cargo-lambda records the path of its
# zig, and a new path forces a full arm64 rebuild.

tools_dir=${JIT_GUARD_TOOLS:-$HOME/.cache/jit-guard}
venv=$tools_dir/venv
cedar_root=$tools_dir/cedar
cedar_version=4.14.1

# Installs moto server, cargo-lambda, cfn-lint, the SAM CLI and
# openapi-spec-validator from PyPI unless present.
ensure_python_tools() {
  if [ ! -x "$venv/bin/moto_server" ] || [ ! -x "$venv/bin/cargo-lambda" ] || [ ! -x "$venv/bin/cfn-lint" ] \
    || [ ! -x "$venv/bin/sam" ] || [ ! -x "$venv/bin/openapi-spec-validator" ]; then
    echo "installing moto server, cargo-lambda, cfn-lint, the SAM CLI and openapi-spec-validator into $venv"
    mkdir -p "$tools_dir"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5.1,<6' 'cargo-lambda>=1.8,<2' 'cfn-lint>=1.30,<2' \
      'aws-sam-cli>=1.140,<2' 'openapi-spec-validator>=0.7,<1'
  fi
  export PATH="$venv/bin:$PATH"
  export MOTO_SERVER="$venv/bin/moto_server"
}

# Installs the Cedar CLI (binary `cedar`) from crates.io unless present.
ensure_cedar() {
  if ! "$cedar_root/bin/cedar" --version 2>/dev/null | grep -q "$cedar_version"; then
    echo "installing cedar-policy-cli $cedar_version into $cedar_root (about 150 s)"
    cargo install --quiet --locked cedar-policy-cli --version "$cedar_version" --root "$cedar_root"
  fi
  export PATH="$cedar_root/bin:$PATH"
}

# Installs Stoplight Prism 5 (binary `prism`) from the npm registry unless
# present, and exports PRISM for tests/e2e/prism.rs. Needs node and npm.
ensure_prism() {
  local node_root=$tools_dir/node
  local prism=$node_root/node_modules/.bin/prism
  if ! "$prism" --version 2>/dev/null | grep -q '^5\.'; then
    echo "installing @stoplight/prism-cli@5 into $node_root"
    mkdir -p "$node_root"
    npm install --prefix "$node_root" --no-audit --no-fund --loglevel=error '@stoplight/prism-cli@5'
  fi
  export PRISM=$prism
}
