#!/usr/bin/env bash
# The mesh hop with tracing off, sampling 100% and 1% (OTLP/gRPC export to an in-process
# receiver), and with context propagation only (no exporter), one process per mode (tracing
# is global to a process), modes interleaved over
# REPEAT passes; prints each run and the medians' ratios to "off".
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT=${REPEAT:-2}
ARGS=${BENCH_ARGS:---requests 20000 --rounds 3}
cargo build --release --quiet --bin mesh-bench
bin=${CARGO_TARGET_DIR:-target}/release/mesh-bench
out=$(mktemp)
for _ in $(seq "$REPEAT"); do
  for mode in off 100 1 context; do
    # shellcheck disable=SC2086
    "$bin" $ARGS --tracing "$mode" | grep '^tracing ' | tee -a "$out"
  done
done
python3 - "$out" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    m = re.match(r"tracing (\S+): mesh stack (\d+) req/s, p50 ([\d.]+)us, p99 ([\d.]+)us", line)
    if m:
        runs.setdefault(m[1], []).append(tuple(float(x) for x in m.groups()[1:]))
med = {k: [statistics.median(v[i] for v in vs) for i in range(3)] for k, vs in runs.items()}
off = med["off"]
print(f"\n{'tracing':<8}{'req/s':>10}{'p50 us':>10}{'p99 us':>10}{'req/s vs off':>14}{'p50 vs off':>12}{'p99 vs off':>12}")
for k in ["off", "100", "1", "context"]:
    r, p50, p99 = med[k]
    print(f"{k:<8}{r:>10.0f}{p50:>10.1f}{p99:>10.1f}{r/off[0]:>14.3f}{p50/off[1]:>12.3f}{p99/off[2]:>12.3f}")
PY
rm -f "$out"
