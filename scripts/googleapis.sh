#!/usr/bin/env bash
# Puts google/api/{annotations,http}.proto from the PyPI wheel googleapis-common-protos
# into .deps/googleapis (ignored by git), where build.rs and buf find them.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.deps/googleapis/google/api
if [[ -f $dest/annotations.proto && -f $dest/http.proto ]]; then exit 0; fi
mkdir -p .deps "$dest"
python3 -m pip install --quiet --disable-pip-version-check --target .deps/pip 'googleapis-common-protos>=1.60' >/dev/null
cp .deps/pip/google/api/annotations.proto .deps/pip/google/api/http.proto "$dest/"
