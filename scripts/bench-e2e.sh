#!/usr/bin/env bash
# make bench's end-to-end step: a release mesh on ports of its own (scripts/loadgen-mesh.sh, a fresh
# data folder under var/bench-e2e/), then loadgen closed loop, 32 shoppers for 20s over 100 SKUs,
# every shopper buying with a good card (--scenario orders): once over gRPC straight to the
# services, once over REST through the gateway, in the same run. Prints placed-and-final orders/s
# and the completion latency (PlaceOrder sent -> final status seen) of both and their ratios.
# BENCH_E2E_BASE (21280), BENCH_E2E_DURATION (20s) and BENCH_E2E_SHOPPERS (32) change the set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${BENCH_E2E_BASE:-21280}
duration=${BENCH_E2E_DURATION:-20s}
shoppers=${BENCH_E2E_SHOPPERS:-32}
bin="${CARGO_TARGET_DIR:-target}/release"
cargo build --release --quiet --bins -p ordermesh -p ordermesh-order -p ordermesh-payment \
  -p ordermesh-inventory -p ordermesh-shipping -p ordermesh-gateway -p loadgen
work=var/bench-e2e
rm -rf "$work" && mkdir -p "$work"
scripts/loadgen-mesh.sh --base "$base" --data "$work/mesh" >"$work/mesh.out" 2>&1 &
mesh=$!
trap 'kill -TERM "$mesh" 2>/dev/null || true; wait "$mesh" 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  grep -q '^mesh ready' "$work/mesh.out" && break
  kill -0 "$mesh" 2>/dev/null || break
  sleep 0.1
done
grep -q '^mesh ready' "$work/mesh.out" || { cat "$work/mesh.out" >&2; echo "bench-e2e: the mesh did not start" >&2; exit 1; }
read -r -a targets <<<"$(sed -n 's/^mesh ready: //p' "$work/mesh.out")"
for transport in grpc rest; do
  echo "bench-e2e: $transport, $shoppers shoppers, $duration" >&2
  "$bin/loadgen" "${targets[@]}" --transport "$transport" --mode closed --shoppers "$shoppers" \
    --duration "$duration" --scenario orders --skus 100 --seed 1 --out "$work/$transport" \
    >"$work/$transport.txt" 2>"$work/$transport.err" \
    || { cat "$work/$transport.err" >&2; exit 1; }
done
python3 - "$work" "$shoppers" "$duration" <<'PY'
import json, sys
work, shoppers, duration = sys.argv[1:]
s = {t: json.load(open(f"{work}/{t}/summary.json")) for t in ("grpc", "rest")}
def row(t, label):
    o = s[t]["orders"]; c = o["completion_ms"] or {}
    bad = o["placed"] - o["outcomes"].get("confirmed", 0)
    print(f"  {label:<34} {o['final_per_s']:7.1f} orders/s placed and final   completion p50 {c.get('p50', 0):7.1f} ms  p99 {c.get('p99', 0):7.1f} ms"
          + (f"   ({bad} not confirmed)" if bad else ""))
print(f"end to end (release, SQLite, {shoppers} shoppers closed loop for {duration}, 100 SKUs, good cards):")
row("grpc", "gRPC to the services (mTLS)")
row("rest", "REST through the gateway")
g, r = s["grpc"]["orders"], s["rest"]["orders"]
ratio = lambda a, b: a / b if b else float("nan")
print(f"  rest/grpc: {ratio(r['final_per_s'], g['final_per_s']):.2f}x orders/s, "
      f"{ratio(r['completion_ms']['p99'], g['completion_ms']['p99']):.2f}x p99 completion"
      f"   (reports: {work}/grpc/report.html, {work}/rest/report.html)")
PY
