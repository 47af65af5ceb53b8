#!/usr/bin/env bash
# `make loadgen`: one minute of Black Friday shoppers (open loop, 20 shoppers/s, REST through the
# gateway) against a running `make run`; the report goes to var/loadgen/<UTC time>/. Arguments are
# loadgen flags and override these (e.g. --transport grpc, --rate 40, --duration 2m).
set -euo pipefail
cd "$(dirname "$0")/.."
for hp in 127.0.0.1:8080 127.0.0.1:50051; do
  if ! (exec 3<>"/dev/tcp/${hp%:*}/${hp##*:}") 2>/dev/null; then
    echo "make loadgen: nothing listens on $hp; start the mesh with \`make run\` in another terminal first" >&2
    exit 1
  fi
done
cargo build --release --quiet -p loadgen
exec "${CARGO_TARGET_DIR:-target}/release/loadgen" --scenario black-friday --mode open --rate 20 --duration 60s "$@"
