#!/usr/bin/env bash
# Side-by-side REST benchmark of ordermesh's edge gateway against a stock grpc-gateway (Go) peer
# (bench/gateway-peer), both in front of the same backend, in one run.
#
#   scripts/bench-gateway.sh [--peer-only] [--backend trivial|inventory] [--duration 10s]
#                            [--warmup 2s] [--connections 32] [--threads 2] [--rounds 2]
#
# The backend (plaintext gRPC) is `trivial` by default: target/release/bench-backend, an
# in-memory GetItem, so the backend's own work does not hide what the gateways cost; or
# `inventory`: the real inventory service on a throwaway SQLite. Seeds one item, starts the
# peer and target/release/ordermesh-gateway, checks that both answer GET /v1/inventory/items/<sku>
# with 200 and the same item, then runs wrk against them alternately (peer, ordermesh, peer,
# ordermesh, ...), each measured run preceded by a warm-up run, and prints requests/s, p50 and p99
# of each run, their means per gateway, and the ratios ordermesh/peer. Everything it started is
# stopped on exit. Only a same-run ratio means anything: wrk, the gateways and the backend share the machine's cores.
#
# Needs target/release/bench-backend (or, with --backend inventory, target/release/ordermesh-inventory
# or .../inventory) and, without --peer-only, target/release/ordermesh-gateway
# (BENCH_BACKEND_BIN / BENCH_INVENTORY_BIN / BENCH_GATEWAY_BIN override the paths):
#   cargo build --release -p ordermesh-gateway -p ordermesh-inventory && cargo build --release --bin bench-backend
# Installs (apt) wrk and, through bench/gateway-peer/build.sh, the Go toolchain if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

PEER_ONLY=false
BACKEND_KIND="${BENCH_BACKEND:-trivial}"
DURATION="${BENCH_DURATION:-10s}"
WARMUP="${BENCH_WARMUP:-2s}"
CONNECTIONS="${BENCH_CONNECTIONS:-32}"
THREADS="${BENCH_THREADS:-2}"
ROUNDS="${BENCH_ROUNDS:-2}"
usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
  case "$1" in
    --peer-only) PEER_ONLY=true ;;
    --backend) BACKEND_KIND="$2"; shift ;;
    --duration) DURATION="$2"; shift ;;
    --warmup) WARMUP="$2"; shift ;;
    --connections) CONNECTIONS="$2"; shift ;;
    --threads) THREADS="$2"; shift ;;
    --rounds) ROUNDS="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench-gateway: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

die() { echo "bench-gateway: FAIL: $*" >&2; exit 1; }
log() { echo "bench-gateway: $*" >&2; }

# The inventory package (ordermesh-inventory) names its binary `inventory`; either name is taken.
INVENTORY_BIN="${BENCH_INVENTORY_BIN:-$REPO/target/release/ordermesh-inventory}"
[[ -x "$INVENTORY_BIN" || -n "${BENCH_INVENTORY_BIN:-}" ]] || INVENTORY_BIN="$REPO/target/release/inventory"
GATEWAY_BIN="${BENCH_GATEWAY_BIN:-$REPO/target/release/ordermesh-gateway}"
BACKEND_BIN="${BENCH_BACKEND_BIN:-$REPO/target/release/bench-backend}"
PEER_BIN="$REPO/bench/gateway-peer/.build/grpc-gateway-peer"
case "$BACKEND_KIND" in
  trivial)
    [[ -x "$BACKEND_BIN" ]] || die "$BACKEND_BIN not found; build it with:
  CARGO_TARGET_DIR=$REPO/target cargo build --release --bin bench-backend" ;;
  inventory)
    [[ -x "$INVENTORY_BIN" ]] || die "target/release/ordermesh-inventory (or .../inventory) not found; build it with:
  CARGO_TARGET_DIR=$REPO/target cargo build --release -p ordermesh-inventory" ;;
  *) die "--backend: expected trivial or inventory, got '$BACKEND_KIND'" ;;
esac
if ! $PEER_ONLY && [[ ! -x "$GATEWAY_BIN" ]]; then
  die "$GATEWAY_BIN not found: ordermesh's gateway is not built (yet); build it with
  CARGO_TARGET_DIR=$REPO/target cargo build --release -p ordermesh-gateway
or measure the Go peer alone with --peer-only"
fi
"$REPO/bench/gateway-peer/build.sh" >&2
if ! command -v wrk >/dev/null; then
  log "installing wrk (apt)"
  apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
fi
command -v curl >/dev/null || die "curl not found"

# Processes we started, stopped on any exit.
WORK="$(mktemp -d /tmp/bench-gateway.XXXXXX)"
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  if ((rc != 0)); then
    for f in "$WORK"/*.log; do [[ -f "$f" ]] && { echo "--- last lines of $f" >&2; tail -n 15 "$f" >&2; }; done
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # name pid port
  for _ in $(seq 300); do
    kill -0 "$2" 2>/dev/null || die "$1 exited during start-up (log: $WORK/$1.log)"
    (exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null && return 0
    sleep 0.1
  done
  die "$1 not listening on 127.0.0.1:$3 after 30 s"
}

BACKEND_PORT="$(free_port)"; PEER_PORT="$(free_port)"; GATEWAY_PORT="$(free_port)"
while [[ $PEER_PORT == "$BACKEND_PORT" ]]; do PEER_PORT="$(free_port)"; done
while [[ $GATEWAY_PORT == "$BACKEND_PORT" || $GATEWAY_PORT == "$PEER_PORT" ]]; do GATEWAY_PORT="$(free_port)"; done
BACKEND="127.0.0.1:$BACKEND_PORT"

if [[ $BACKEND_KIND == trivial ]]; then
  log "trivial backend on $BACKEND (plaintext gRPC, items in memory)"
  "$BACKEND_BIN" --listen "$BACKEND" >"$WORK/backend.log" 2>&1 &
  PIDS+=($!); wait_port backend "$!" "$BACKEND_PORT"
  BACKEND_DESC="bench-backend (in memory)"
else
  log "inventory service on $BACKEND (plaintext gRPC, SQLite under $WORK/inventory-data)"
  mkdir -p "$WORK/inventory-data"
  env PLAINTEXT=true LISTEN_ADDR="$BACKEND" DATA_DIR="$WORK/inventory-data" \
    RUST_LOG="${BENCH_BACKEND_RUST_LOG:-warn}" "$INVENTORY_BIN" >"$WORK/backend.log" 2>&1 &
  PIDS+=($!); wait_port inventory "$!" "$BACKEND_PORT"
  BACKEND_DESC="ordermesh-inventory (SQLite)"
fi

log "grpc-gateway peer on 127.0.0.1:$PEER_PORT -> $BACKEND"
"$PEER_BIN" -listen "127.0.0.1:$PEER_PORT" -inventory "$BACKEND" >"$WORK/peer.log" 2>&1 &
PIDS+=($!); declare -A GW_PID; GW_PID[peer]=$!; wait_port peer "$!" "$PEER_PORT"

# Seed one item over gRPC: grpcurl (scripts/test-deps.sh puts it in .deps/venv) through the
# service's reflection; without grpcurl, the same CreateItem through the Go peer's REST mapping.
SKU="bench-$(date +%s)-$RANDOM"
ITEM_JSON="{\"sku\":\"$SKU\",\"name\":\"Benchmark widget\",\"price\":{\"currency_code\":\"EUR\",\"amount_minor\":1999},\"initial_stock\":100,\"low_stock_threshold\":5}"
GRPCURL=""
for g in "$REPO/.deps/venv/bin/grpcurl" "$(command -v grpcurl || true)"; do [[ -n "$g" && -x "$g" ]] && { GRPCURL="$g"; break; }; done
if [[ -n "$GRPCURL" ]]; then
  log "seeding $SKU with grpcurl CreateItem"
  "$GRPCURL" -plaintext -d "$ITEM_JSON" "$BACKEND" ordermesh.inventory.v1.InventoryService/CreateItem \
    >"$WORK/seed.out" 2>&1 || { cat "$WORK/seed.out" >&2; die "CreateItem over gRPC failed"; }
else
  log "seeding $SKU with CreateItem through the peer (POST /v1/inventory/items; no grpcurl in .deps/venv: scripts/test-deps.sh installs it)"
  code="$(curl -sS -o "$WORK/seed.out" -w '%{http_code}' -H 'content-type: application/json' \
    -d "$ITEM_JSON" "http://127.0.0.1:$PEER_PORT/v1/inventory/items")" || die "CreateItem through the peer: curl failed"
  [[ "$code" == 200 ]] || { cat "$WORK/seed.out" >&2; die "CreateItem through the peer answered HTTP $code"; }
fi

TARGETS=(peer)
declare -A URL=([peer]="http://127.0.0.1:$PEER_PORT/v1/inventory/items/$SKU")
if ! $PEER_ONLY; then
  log "ordermesh gateway on 127.0.0.1:$GATEWAY_PORT -> $BACKEND"
  # RUST_LOG=warn: no per-request log lines (the peer writes none either). Like the peer: no
  # response cache (GetItem is cached for 1s by default) and no per-client rate limit.
  env GATEWAY_LISTEN="127.0.0.1:$GATEWAY_PORT" INVENTORY_URL="http://$BACKEND" GATEWAY_PLAINTEXT_UPSTREAMS=true \
    GATEWAY_SERVICES=inventory GATEWAY_CACHE= GATEWAY_RATE_LIMIT=off \
    RUST_LOG="${BENCH_GATEWAY_RUST_LOG:-warn}" "$GATEWAY_BIN" >"$WORK/ordermesh.log" 2>&1 &
  PIDS+=($!); GW_PID[ordermesh]=$!; wait_port ordermesh "$!" "$GATEWAY_PORT"
  TARGETS+=(ordermesh)
  URL[ordermesh]="http://127.0.0.1:$GATEWAY_PORT/v1/inventory/items/$SKU"
fi

# Both must answer 200 with the seeded item. JSON spellings may differ (the peer uses proto field
# names and int64 as strings; another gateway may use lowerCamelCase, numbers, emit defaults), so
# the item is compared after normalising keys to snake_case and numeric strings to numbers.
for t in "${TARGETS[@]}"; do
  code="$(curl -sS -o "$WORK/$t.body" -w '%{http_code}' "${URL[$t]}")" || die "$t: curl ${URL[$t]} failed"
  [[ "$code" == 200 ]] || { cat "$WORK/$t.body" >&2; echo >&2; die "$t: GET ${URL[$t]} answered HTTP $code, not 200"; }
  log "$t: 200 $(head -c 400 "$WORK/$t.body")"
done
python3 - "$SKU" "$WORK" "${TARGETS[@]}" <<'PY' || die "the gateways' answers don't carry the same seeded item (see above)"
import json, re, sys
sku, work, targets = sys.argv[1], sys.argv[2], sys.argv[3:]
def snake(k): return re.sub(r'(?<!^)([A-Z])', r'_\1', k).lower()
def norm(v):
    if isinstance(v, dict): return {snake(k): norm(x) for k, x in v.items()}
    if isinstance(v, list): return [norm(x) for x in v]
    if isinstance(v, str) and re.fullmatch(r'-?\d+', v): return int(v)
    return v
want = {"sku": sku, "name": "Benchmark widget", "price": {"currency_code": "EUR", "amount_minor": 1999},
        "on_hand": 100, "reserved": 0, "available": 100, "low_stock_threshold": 5}
ok = True
for t in targets:
    body = norm(json.load(open(f"{work}/{t}.body")))
    item = body.get("item", {})
    got = {k: item.get(k, 0) for k in want}  # proto3 JSON may leave zero values out
    if got != want:
        print(f"bench-gateway: {t}: item {got} != seeded {want}", file=sys.stderr); ok = False
sys.exit(0 if ok else 1)
PY
log "${TARGETS[*]}: 200 with item $SKU"

# wrk --latency prints e.g. "     50%    1.23ms"; units us/ms/s (also m, h for very slow runs).
to_ms() { awk -v v="$1" 'BEGIN{ if (match(v,/[a-z]+$/)) { n=substr(v,1,RSTART-1); u=substr(v,RSTART) } else { n=v; u="s" }
  f = (u=="us")?0.001:(u=="ms")?1:(u=="s")?1000:(u=="m")?60000:(u=="h")?3600000:-1
  if (f<0) exit 1; printf "%.3f", n*f }'; }
declare -A SUM_RPS SUM_P50 SUM_P99 N
RESULTS=()
# CPU time (user + system, in clock ticks) a process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)
declare -A SUM_CPU
run_wrk() { # target round
  local t=$1 r=$2 out="$WORK/wrk-$1-$2.txt"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "${URL[$t]}" >/dev/null 2>&1 || die "$t: wrk warm-up failed"
  local before; before=$(cpu_ticks "${GW_PID[$t]}")
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "${URL[$t]}" >"$out" 2>&1 || { cat "$out" >&2; die "$t: wrk failed"; }
  local after; after=$(cpu_ticks "${GW_PID[$t]}")
  # The gateway's own CPU per request: what it costs regardless of how fast the backend is.
  local requests; requests=$(awk '/requests in/{print $1}' "$out")
  local cpu_us; cpu_us=$(awk -v a="$before" -v b="$after" -v hz="$CLK_TCK" -v n="$requests" 'BEGIN{printf "%.1f", (b-a)/hz*1e6/n}')
  SUM_CPU[$t]=$(awk -v a="${SUM_CPU[$t]:-0}" -v b="$cpu_us" 'BEGIN{print a+b}')
  if grep -qE 'Non-2xx or 3xx responses|Socket errors' "$out"; then
    cat "$out" >&2; die "$t: wrk saw errors or non-2xx answers in round $r (above)"
  fi
  local rps p50 p99
  rps="$(awk '/^Requests\/sec:/{print $2}' "$out")"
  p50="$(to_ms "$(awk '$1=="50%"{print $2}' "$out")")" || die "$t: can't read p50 from wrk"
  p99="$(to_ms "$(awk '$1=="99%"{print $2}' "$out")")" || die "$t: can't read p99 from wrk"
  [[ -n "$rps" ]] || { cat "$out" >&2; die "$t: no Requests/sec in wrk output"; }
  RESULTS+=("$(printf '%-10s %5s %12.1f %10.3f %10.3f' "$t" "$r" "$rps" "$p50" "$p99")")
  SUM_RPS[$t]=$(awk -v a="${SUM_RPS[$t]:-0}" -v b="$rps" 'BEGIN{print a+b}')
  SUM_P50[$t]=$(awk -v a="${SUM_P50[$t]:-0}" -v b="$p50" 'BEGIN{print a+b}')
  SUM_P99[$t]=$(awk -v a="${SUM_P99[$t]:-0}" -v b="$p99" 'BEGIN{print a+b}')
  N[$t]=$(( ${N[$t]:-0} + 1 ))
  log "$t round $r: $rps req/s, p50 ${p50} ms, p99 ${p99} ms, gateway CPU ${cpu_us} us/request"
}

log "wrk: GET /v1/inventory/items/$SKU, $THREADS threads, $CONNECTIONS connections, $WARMUP warm-up + $DURATION measured, $ROUNDS rounds, alternating ${TARGETS[*]}"
for r in $(seq "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do run_wrk "$t" "$r"; done
done

echo
echo "GET /v1/inventory/items/{sku} via REST -> gRPC -> $BACKEND_DESC (plaintext, loopback)"
echo "wrk $THREADS threads, $CONNECTIONS connections, $DURATION per run after $WARMUP warm-up; $(nproc) cores shared by wrk, gateway and backend"
printf '%-10s %5s %12s %10s %10s\n' gateway round "req/s" "p50 ms" "p99 ms"
printf '%s\n' "${RESULTS[@]}"
echo
printf '%-10s %5s %12s %10s %10s %14s\n' gateway runs "mean req/s" "mean p50" "mean p99" "CPU us/req"
for t in "${TARGETS[@]}"; do
  printf '%-10s %5s %12.1f %10.3f %10.3f %14.1f\n' "$t" "${N[$t]}" \
    "$(awk -v s="${SUM_RPS[$t]}" -v n="${N[$t]}" 'BEGIN{print s/n}')" \
    "$(awk -v s="${SUM_P50[$t]}" -v n="${N[$t]}" 'BEGIN{print s/n}')" \
    "$(awk -v s="${SUM_P99[$t]}" -v n="${N[$t]}" 'BEGIN{print s/n}')" \
    "$(awk -v s="${SUM_CPU[$t]}" -v n="${N[$t]}" 'BEGIN{print s/n}')"
done
if ! $PEER_ONLY; then
  echo
  awk -v pr="${SUM_RPS[peer]}" -v orr="${SUM_RPS[ordermesh]}" -v p5="${SUM_P50[peer]}" -v o5="${SUM_P50[ordermesh]}" \
      -v p9="${SUM_P99[peer]}" -v o9="${SUM_P99[ordermesh]}" 'BEGIN{
    printf "ordermesh/peer: throughput %.2fx, p50 %.2fx, p99 %.2fx  (throughput >1 and latency <1 favour ordermesh)\n", orr/pr, o5/p5, o9/p9 }'
  awk -v pc="${SUM_CPU[peer]}" -v oc="${SUM_CPU[ordermesh]}" 'BEGIN{
    printf "gateway CPU per request: peer/ordermesh %.2fx  (how many requests ordermesh serves on the CPU the peer spends on one)\n", pc/oc }'
fi
