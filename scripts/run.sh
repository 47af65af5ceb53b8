#!/usr/bin/env bash
# `make run`: builds the four services and the edge gateway and starts them on localhost with the
# embedded defaults (a SQLite file per service under var/). Prints the addresses; ctrl-c stops them.
#
# Where it listens: gRPC 50051-50054 and metrics 9461-9464 (order, payment, inventory,
# shipping), the gateway on 127.0.0.1:8080, the mesh DNS on 127.0.0.1:5354 (UDP and TCP).
# GRPC_PORTS="a b c d", METRICS_PORTS="a b c d", GATEWAY_LISTEN and MESH_DNS_LISTEN move them
# (the test scripts do, so `make test` runs beside a `make run`); DATA_DIR moves var/.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DATA_DIR:-var}
bin=${CARGO_TARGET_DIR:-target}/debug
all=(order payment inventory shipping)
read -r -a grpc_list <<<"${GRPC_PORTS:-50051 50052 50053 50054}"
read -r -a metrics_list <<<"${METRICS_PORTS:-9461 9462 9463 9464}"
[[ ${#grpc_list[@]} -eq 4 && ${#metrics_list[@]} -eq 4 ]] \
  || { echo "make run: GRPC_PORTS and METRICS_PORTS need four ports each (order payment inventory shipping)" >&2; exit 2; }
declare -A ports metrics_ports
for i in 0 1 2 3; do
  ports[${all[$i]}]=${grpc_list[$i]}
  # Prometheus /metrics of each service (the gateway serves its own on its HTTP port).
  metrics_ports[${all[$i]}]=${metrics_list[$i]}
done
dns_addr=${MESH_DNS_LISTEN:-127.0.0.1:5354}
gateway_addr=${GATEWAY_LISTEN:-127.0.0.1:8080}
# All four by default; SERVICES="..." starts a subset.
read -r -a services <<<"${SERVICES:-order payment inventory shipping}"

# Every address this run listens on, as "who|setting|address|protocol".
listens=()
for svc in "${services[@]}"; do
  listens+=("$svc|LISTEN_ADDR|127.0.0.1:${ports[$svc]}|tcp" "$svc|METRICS_ADDR|127.0.0.1:${metrics_ports[$svc]}|tcp")
done
[[ ${GATEWAY:-on} != off ]] && listens+=("gateway|GATEWAY_LISTEN|$gateway_addr|tcp")
listens+=("mesh-dns|MESH_DNS_LISTEN|$dns_addr|udp" "mesh-dns|MESH_DNS_LISTEN|$dns_addr|tcp")

# Stops before starting anything when one of them is taken, naming each taken address (a bind
# test, as the processes bind: a port held by another `make run`, or by anything else).
check_ports() {
  python3 - "${listens[@]}" <<'PY' && return 0
import socket, sys
taken = []
for spec in sys.argv[1:]:
    who, setting, addr, proto = spec.split("|")
    host, port = addr.rsplit(":", 1)
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM)
    if proto == "tcp":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, int(port)))
    except OSError as e:
        taken.append((f"{addr} ({proto})", who, setting, (e.strerror or str(e)).lower()))
    finally:
        s.close()
if taken:
    where, who, setting, why = taken[0]
    print(f"make run: {setting} {where} for {who}: {why}", file=sys.stderr)
    if len(taken) > 1:
        print("  also taken: " + ", ".join(t[0] for t in taken[1:]), file=sys.stderr)
sys.exit(1 if taken else 0)
PY
  echo "make run: not started. Is another \`make run\` running (ctrl-c it), or another program on these ports?" >&2
  echo "  To run a second mesh beside it: GRPC_PORTS=\"a b c d\" METRICS_PORTS=\"a b c d\" GATEWAY_LISTEN=127.0.0.1:port MESH_DNS_LISTEN=127.0.0.1:port DATA_DIR=other-folder make run" >&2
  exit 1
}
check_ports

echo "make run: building the services, the gateway and the mesh tools (cargo build --workspace --bins;"
echo "  the first build compiles every dependency and takes a few minutes, later ones seconds)"
cargo build --workspace --bins
mkdir -p "$data"
# The dev mesh CA and one leaf per service, created on first use (make certs does the same).
"$bin"/mesh-certs --dir "$data/certs" >/dev/null
# The build may have taken minutes: check again right before binding.
check_ports

pids=()
declare -A name_of
# Each process's lines get a [name] prefix. The prefixer ignores ctrl-c (the terminal sends it to
# the whole group) so it still shows what the process logs while it drains.
start() { # name, then the command
  local name=$1
  shift
  "$@" > >(trap '' INT; exec sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)
  name_of[$!]=$name
}
stop() {
  trap - INT TERM EXIT
  echo
  local left=("${pids[@]+"${pids[@]}"}") names=()
  for pid in "${left[@]+"${left[@]}"}"; do names+=("${name_of[$pid]}"); done
  [[ ${#left[@]} -gt 0 ]] && echo "make run: stopping ${names[*]} (each drains: health turns NOT_SERVING, streams end, calls in flight finish)"
  for pid in "${left[@]+"${left[@]}"}"; do kill -TERM "$pid" 2>/dev/null || true; done
  while [[ ${#left[@]} -gt 0 ]]; do
    sleep 0.1
    local still=()
    for pid in "${left[@]}"; do
      if kill -0 "$pid" 2>/dev/null; then still+=("$pid"); else echo "make run: ${name_of[$pid]} stopped"; fi
    done
    left=("${still[@]+"${still[@]}"}")
  done
  wait || true
  echo "make run: all stopped"
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

echo "make run: starting ${services[*]}$([[ ${GATEWAY:-on} != off ]] && echo " gateway") and the mesh DNS (logs below, each line prefixed with its process)"
# The mesh's DNS zone: SRV _grpc._tcp.<service>.mesh.local. for every service, as in a cluster.
dns_args=()
for svc in "${all[@]}"; do dns_args+=(--service "$svc=127.0.0.1:${ports[$svc]}"); done
# MESH_DNS_EXTRA="name=host:port ...": more records, e.g. a canary (inventory-canary=...) or
# per-zone names (inventory-zone-a=..., inventory-zone-b=...) for a TRAFFIC_POLICY to use;
# MESH_DNS_RECORDS=<file> (read by mesh-dns itself): the same, re-read every second.
read -r -a extra_records <<<"${MESH_DNS_EXTRA:-}"
for rec in "${extra_records[@]+"${extra_records[@]}"}"; do dns_args+=(--service "$rec"); done
start dns "$bin"/mesh-dns --listen "$dns_addr" "${dns_args[@]}"
for svc in "${services[@]}"; do
  # MESH_DNS: the order service finds its saga participants through the mesh zone.
  start "$svc" env LISTEN_ADDR="127.0.0.1:${ports[$svc]}" DATA_DIR="$data" TLS_DIR="$data/certs" \
    METRICS_ADDR="127.0.0.1:${metrics_ports[$svc]}" MESH_DNS="$dns_addr" LOG_FORMAT="${LOG_FORMAT:-pretty}" \
    "$bin/$svc"
done
# The edge gateway: REST/JSON (and native gRPC) on :8080, to the services through the mesh zone,
# as the mesh identity "gateway". GATEWAY=off leaves it out.
if [[ ${GATEWAY:-on} != off ]]; then
  start gateway env GATEWAY_LISTEN="$gateway_addr" DATA_DIR="$data" TLS_DIR="$data/certs" \
    MESH_DNS="$dns_addr" LOG_FORMAT="${LOG_FORMAT:-pretty}" "$bin"/ordermesh-gateway
fi
# Ready when every metrics port and the gateway's HTTP port accept a connection: plain HTTP, so
# the wait does not knock on the mTLS ports (a service binds its gRPC port before its metrics).
wait_for=()
for svc in "${services[@]}"; do wait_for+=("127.0.0.1:${metrics_ports[$svc]}"); done
[[ ${GATEWAY:-on} != off ]] && wait_for+=("$gateway_addr")
for addr in "${wait_for[@]}"; do
  host=${addr%:*}
  for try in $(seq 1 300); do
    if timeout 1 bash -c "exec 3<>/dev/tcp/${host//[\[\]]/}/${addr##*:}" 2>/dev/null; then break; fi
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null || { echo "make run: ${name_of[$pid]} exited during start-up (its lines above say why)" >&2; exit 1; }
    done
    [[ $try -eq 300 ]] && { echo "make run: nothing listens on $addr after 30 s" >&2; exit 1; }
    sleep 0.1
  done
done
echo
echo "ordermesh is running over mTLS (SQLite databases and certs/ in $data/):"
for svc in "${services[@]}"; do
  printf '  %-10s grpc://127.0.0.1:%s  metrics http://127.0.0.1:%s/metrics\n' "$svc" "${ports[$svc]}" "${metrics_ports[$svc]}"
done
[[ ${GATEWAY:-on} != off ]] && echo "  gateway    http://$gateway_addr (REST/JSON from the google.api.http rules; /openapi.json, /readyz, /metrics)"
echo "  dns        udp+tcp://$dns_addr (zone mesh.local., e.g. _grpc._tcp.payment.mesh.local. SRV)"
[[ -n ${MESH_DNS_EXTRA:-} ]] && echo "             also: ${MESH_DNS_EXTRA}"
[[ -n ${MESH_DNS_RECORDS:-} ]] && echo "             and the records of $MESH_DNS_RECORDS (re-read every second)"
[[ -n ${TRAFFIC_POLICY:-} ]] && echo "  traffic    $TRAFFIC_POLICY (re-read while running; caller zone: ${TOPOLOGY_ZONE:-none})"
echo "try: grpcurl -cacert $data/certs/ca.pem -cert $data/certs/operator.pem -key $data/certs/operator-key.pem -servername inventory 127.0.0.1:${ports[inventory]} list"
echo "(make tools installs grpcurl into .deps/venv/bin; ctrl-c stops the mesh)"
# A process that exits with 0 was asked to stop (ctrl-c reaches every process of the terminal's
# group, sometimes before this script's own trap runs): stop the rest the same way.
status=0
wait -n "${pids[@]}" || status=$?
[[ $status -eq 0 ]] && { stop; exit 0; }
for pid in "${pids[@]}"; do
  kill -0 "$pid" 2>/dev/null || echo "make run: ${name_of[$pid]} exited (status $status); stopping the rest" >&2
done
exit 1
