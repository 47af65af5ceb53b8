#!/usr/bin/env bash
# Copies protos from the PyPI wheel googleapis-common-protos into ignored folders under .deps/:
# google/api/{annotations,http}.proto into .deps/googleapis, where build.rs and buf find them for
# the contracts; google/rpc/error_details.proto into .deps/googleapis-rpc, where build.rs compiles
# it for reflection only (so grpcurl can print a BadRequest's field violations). The second folder
# is outside buf's modules: buf neither lints nor formats it.
set -euo pipefail
cd "$(dirname "$0")/.."
wanted=(googleapis/google/api/annotations.proto googleapis/google/api/http.proto
  googleapis-rpc/google/rpc/error_details.proto)
missing=()
for f in "${wanted[@]}"; do [[ -f .deps/$f ]] || missing+=("$f"); done
if [[ ${#missing[@]} -eq 0 ]]; then exit 0; fi
if [[ ! -f .deps/pip/google/rpc/error_details.proto ]]; then
  echo "fetching googleapis-common-protos (PyPI) into .deps/pip" >&2
  python3 -m pip install --quiet --disable-pip-version-check --target .deps/pip 'googleapis-common-protos>=1.60' >/dev/null
fi
for f in "${missing[@]}"; do
  mkdir -p ".deps/$(dirname "$f")"
  cp ".deps/pip/${f#*/}" ".deps/$f"
done
