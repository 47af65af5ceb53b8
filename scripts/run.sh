#!/usr/bin/env bash
# `make run`: builds the four services and starts them on localhost with the embedded defaults
# (a SQLite file per service under var/). Prints the addresses; ctrl-c stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --quiet
mkdir -p "${DATA_DIR:-var}"
declare -A ports=([order]=50051 [payment]=50052 [inventory]=50053 [shipping]=50054)
pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping the mesh"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait || true
}
trap 'stop; exit 0' INT TERM
trap stop EXIT
for svc in order payment inventory shipping; do
  LISTEN_ADDR=127.0.0.1:${ports[$svc]} DATA_DIR=${DATA_DIR:-var} LOG_FORMAT=${LOG_FORMAT:-pretty} \
    ./target/debug/"$svc" > >(sed -u "s/^/[$svc] /") 2>&1 &
  pids+=($!)
done
# Wait until every port accepts connections, or a process has died.
for svc in order payment inventory shipping; do
  for _ in $(seq 1 100); do
    if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/${ports[$svc]}" 2>/dev/null; then break; fi
    sleep 0.1
  done
done
echo
echo "ordermesh is running (SQLite databases in ${DATA_DIR:-var}/):"
for svc in order payment inventory shipping; do
  printf '  %-10s grpc://127.0.0.1:%s\n' "$svc" "${ports[$svc]}"
done
echo "try: grpcurl -plaintext 127.0.0.1:50053 list     (ctrl-c stops the mesh)"
wait -n "${pids[@]}" || true
echo "a service exited; stopping the rest" >&2
exit 1
