#!/usr/bin/env bash
# `make run`: builds the four services and the edge gateway and starts them on localhost with the
# embedded defaults (a SQLite file per service under var/). Prints the addresses; ctrl-c stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --quiet
mkdir -p "${DATA_DIR:-var}"
# The dev mesh CA and one leaf per service, created on first use (make certs does the same).
"${CARGO_TARGET_DIR:-target}"/debug/mesh-certs --dir "${DATA_DIR:-var}/certs" >/dev/null
declare -A ports=([order]=50051 [payment]=50052 [inventory]=50053 [shipping]=50054)
# Prometheus /metrics of each service (the gateway serves its own on its HTTP port).
declare -A metrics_ports=([order]=9461 [payment]=9462 [inventory]=9463 [shipping]=9464)
# All four by default; SERVICES="..." starts a subset.
read -r -a services <<<"${SERVICES:-order payment inventory shipping}"
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
# The mesh's DNS zone: SRV _grpc._tcp.<service>.mesh.local. for every service, as in a cluster.
dns_args=()
for svc in order payment inventory shipping; do dns_args+=(--service "$svc=127.0.0.1:${ports[$svc]}"); done
"${CARGO_TARGET_DIR:-target}"/debug/mesh-dns --listen "${MESH_DNS_LISTEN:-127.0.0.1:5354}" "${dns_args[@]}" \
  > >(sed -u "s/^/[dns] /") 2>&1 &
pids+=($!)
for svc in "${services[@]}"; do
  # MESH_DNS: the order service finds its saga participants through the mesh zone.
  LISTEN_ADDR=127.0.0.1:${ports[$svc]} DATA_DIR=${DATA_DIR:-var} TLS_DIR=${DATA_DIR:-var}/certs \
    METRICS_ADDR=127.0.0.1:${metrics_ports[$svc]} \
    MESH_DNS=${MESH_DNS_LISTEN:-127.0.0.1:5354} \
    LOG_FORMAT=${LOG_FORMAT:-pretty} \
    "${CARGO_TARGET_DIR:-target}"/debug/"$svc" > >(sed -u "s/^/[$svc] /") 2>&1 &
  pids+=($!)
done
# The edge gateway: REST/JSON (and native gRPC) on :8080, to the services through the mesh zone,
# as the mesh identity "gateway". GATEWAY=off leaves it out.
gateway_addr=${GATEWAY_LISTEN:-127.0.0.1:8080}
if [[ ${GATEWAY:-on} != off ]]; then
  GATEWAY_LISTEN=$gateway_addr DATA_DIR=${DATA_DIR:-var} TLS_DIR=${DATA_DIR:-var}/certs \
    MESH_DNS=${MESH_DNS_LISTEN:-127.0.0.1:5354} LOG_FORMAT=${LOG_FORMAT:-pretty} \
    "${CARGO_TARGET_DIR:-target}"/debug/ordermesh-gateway > >(sed -u "s/^/[gateway] /") 2>&1 &
  pids+=($!)
fi
# Wait until every port accepts connections, or a process has died.
wait_ports=()
for svc in "${services[@]}"; do wait_ports+=("${ports[$svc]}"); done
[[ ${GATEWAY:-on} != off ]] && wait_ports+=("${gateway_addr##*:}")
for port in "${wait_ports[@]}"; do
  for _ in $(seq 1 100); do
    if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then break; fi
    sleep 0.1
  done
done
echo
echo "ordermesh is running over mTLS (SQLite databases and certs/ in ${DATA_DIR:-var}/):"
for svc in "${services[@]}"; do
  printf '  %-10s grpc://127.0.0.1:%s  metrics http://127.0.0.1:%s/metrics\n' "$svc" "${ports[$svc]}" "${metrics_ports[$svc]}"
done
[[ ${GATEWAY:-on} != off ]] && echo "  gateway    http://$gateway_addr (REST/JSON from the google.api.http rules; /openapi.json, /readyz, /metrics)"
echo "  dns        udp+tcp://${MESH_DNS_LISTEN:-127.0.0.1:5354} (zone mesh.local., e.g. _grpc._tcp.payment.mesh.local. SRV)"
echo "try: grpcurl -cacert ${DATA_DIR:-var}/certs/ca.pem -cert ${DATA_DIR:-var}/certs/operator.pem -key ${DATA_DIR:-var}/certs/operator-key.pem -servername inventory 127.0.0.1:50053 list"
echo "(ctrl-c stops the mesh)"
wait -n "${pids[@]}" || true
echo "a service exited; stopping the rest" >&2
exit 1
