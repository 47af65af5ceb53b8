#!/usr/bin/env bash
# Starts a whole mesh on ports of its own, for load runs that must leave a `make run` alone:
# mesh-dns, the four services over mTLS and the gateway, from one build profile, on a fresh data
# folder (SQLite files and certs). Prints one line `mesh ready: ...` with the loadgen flags to
# use once every port answers, then runs until TERM or INT and stops what it started.
#
#   scripts/loadgen-mesh.sh [--base PORT] [--data DIR] [--profile release|debug]
#
# Ports from --base (default 21080; below 32768, none of make run's): gateway BASE, order +1,
# payment +2, inventory +3, shipping +4, mesh-dns +5. Logs go to DIR/<process>.log (RUST_LOG
# defaults to warn: a log line per request would be measured too). The gateway's per-client
# rate limit is off unless GATEWAY_RATE_LIMIT says otherwise: one loadgen is one client.
# Needs the binaries built: cargo build [--release] --bins -p ordermesh -p ordermesh-order \
#   -p ordermesh-payment -p ordermesh-inventory -p ordermesh-shipping -p ordermesh-gateway
set -euo pipefail
cd "$(dirname "$0")/.."
base=21080
data=""
profile=release
while (($#)); do
  case "$1" in
    --base) base="$2"; shift ;;
    --data) data="$2"; shift ;;
    --profile) profile="$2"; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "loadgen-mesh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ $base =~ ^[0-9]+$ ]] && ((base >= 1024 && base + 5 < 32768)) \
  || { echo "loadgen-mesh: --base $base: must be a port from 1024 to 32762" >&2; exit 2; }
[[ $profile == release || $profile == debug ]] \
  || { echo "loadgen-mesh: --profile $profile: release or debug" >&2; exit 2; }
bin="${CARGO_TARGET_DIR:-target}/$profile"
for b in mesh-certs mesh-dns order payment inventory shipping ordermesh-gateway; do
  [[ -x $bin/$b ]] || { echo "loadgen-mesh: $bin/$b not built (see --help)" >&2; exit 1; }
done
data="${data:-var/loadgen-mesh}"
rm -rf "$data" && mkdir -p "$data"

declare -A port=([gateway]=$base [order]=$((base + 1)) [payment]=$((base + 2))
  [inventory]=$((base + 3)) [shipping]=$((base + 4)) [dns]=$((base + 5)))
for p in "${port[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "loadgen-mesh: 127.0.0.1:$p is taken; choose another --base" >&2; exit 1
  fi
done

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

"$bin/mesh-certs" --dir "$data/certs" >/dev/null
dns_args=()
for svc in order payment inventory shipping; do dns_args+=(--service "$svc=127.0.0.1:${port[$svc]}"); done
"$bin/mesh-dns" --listen "127.0.0.1:${port[dns]}" "${dns_args[@]}" >"$data/dns.log" 2>&1 &
pids+=($!)
for svc in order payment inventory shipping; do
  LISTEN_ADDR="127.0.0.1:${port[$svc]}" DATA_DIR="$data" TLS_DIR="$data/certs" \
    MESH_DNS="127.0.0.1:${port[dns]}" LOG_FORMAT=json RUST_LOG="${RUST_LOG:-warn}" \
    "$bin/$svc" >"$data/$svc.log" 2>&1 &
  pids+=($!)
done
GATEWAY_LISTEN="127.0.0.1:${port[gateway]}" DATA_DIR="$data" TLS_DIR="$data/certs" \
  MESH_DNS="127.0.0.1:${port[dns]}" GATEWAY_RATE_LIMIT="${GATEWAY_RATE_LIMIT:-off}" \
  LOG_FORMAT=json RUST_LOG="${RUST_LOG:-warn}" "$bin/ordermesh-gateway" >"$data/gateway.log" 2>&1 &
pids+=($!)

for svc in order payment inventory shipping gateway; do
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/${port[$svc]}") 2>/dev/null && break
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null || { tail -n 20 "$data"/*.log >&2; echo "loadgen-mesh: a process exited during start-up" >&2; exit 1; }
    done
    sleep 0.1
  done
done
echo "mesh ready: --target-rest http://127.0.0.1:${port[gateway]}" \
  "--target-grpc order=127.0.0.1:${port[order]},inventory=127.0.0.1:${port[inventory]},shipping=127.0.0.1:${port[shipping]}" \
  "--certs $data/certs"
wait -n "${pids[@]}" || true
echo "loadgen-mesh: a process exited; stopping the rest (logs in $data)" >&2
exit 1
