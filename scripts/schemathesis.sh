#!/usr/bin/env bash
# schemathesis (pip, in .deps/venv) against the gateway's /openapi.json of a running mesh
# (`make run` on a fresh data folder): no 5xx, and every answer matches the documented status
# codes, content types and schemas. Streams that stay open (watch, track) are left out: a
# generated request would hold them until the time budget ends.
set -euo pipefail
cd "$(dirname "$0")/.."
# Ports of its own (gateway on 22080), apart from make run's and readme-check's.
MESH_TEST_BASE=22000
# shellcheck source=scripts/mesh-up.sh
source scripts/mesh-up.sh
# The coverage phase is left out: on this Python it trips over an internal hypothesis error
# ("AST constructor recursion depth mismatch") that is about the tool, not the API.
.deps/venv/bin/schemathesis run "http://$GATEWAY_LISTEN/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,fuzzing,stateful \
  --exclude-path-regex '(:watch|:track)$' \
  --max-time "${SCHEMATHESIS_SECONDS:-60}" --workers 2 --seed "${SCHEMATHESIS_SEED:-20261125}" \
  --no-color 2>&1 | tee "$data/schemathesis.out" | grep -vE '^\s*$' | tail -40
status=${PIPESTATUS[0]}
[[ $status -eq 0 ]] || { echo "schemathesis failed (exit $status)"; grep -B2 -A12 -E '^_+ ' "$data/schemathesis.out" | head -80; }
exit "$status"
