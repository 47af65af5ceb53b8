# Sourced by the scripts that test a running mesh: starts `make run` (scripts/run.sh) on a fresh
# data folder in the background, stops it (TERM: a background job of a non-interactive shell
# ignores INT) and removes the folder on exit, and returns once the mesh says it is running.
# Sets `data` (the folder), `log` (its output) and `runner` (the pid).
#
# Its ports are not `make run`'s (gRPC 50051-50054, metrics 9461-9464, gateway 8080, DNS 5354),
# so `make test` works while a `make run` serves: the caller sets MESH_TEST_BASE (each script its
# own, e.g. 21000) and the mesh listens on base+51..54 (gRPC), base+461..464 (metrics), base+80
# (gateway) and base+354 (DNS), below 32768 where no client's ephemeral port lands.
# `to_test_ports` rewrites a documented command's make-run addresses to these.
base=${MESH_TEST_BASE:?set MESH_TEST_BASE before sourcing mesh-up.sh}
export GRPC_PORTS="$((base + 51)) $((base + 52)) $((base + 53)) $((base + 54))"
export METRICS_PORTS="$((base + 461)) $((base + 462)) $((base + 463)) $((base + 464))"
export GATEWAY_LISTEN=127.0.0.1:$((base + 80)) MESH_DNS_LISTEN=127.0.0.1:$((base + 354))
to_test_ports() {
  local subst=() i
  for i in 1 2 3 4; do
    subst+=(-e "s/(127\.0\.0\.1|localhost):5005$i\b/\1:$((base + 50 + i))/g")
    subst+=(-e "s/(127\.0\.0\.1|localhost):946$i\b/\1:$((base + 460 + i))/g")
  done
  sed -E "${subst[@]}" -e "s/(127\.0\.0\.1|localhost):8080\b/\1:$((base + 80))/g" \
    -e "s/(127\.0\.0\.1|localhost):5354\b/\1:$((base + 354))/g"
}
data=$(mktemp -d)
log=$data/run.log
DATA_DIR=$data scripts/run.sh >"$log" 2>&1 &
runner=$!
cleanup() { kill -TERM "$runner" 2>/dev/null || true; wait "$runner" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 1 600); do
  grep -q "ordermesh is running" "$log" && break
  kill -0 "$runner" 2>/dev/null || { cat "$log"; echo "make run exited early" >&2; exit 1; }
  sleep 0.5
done
grep -q "ordermesh is running" "$log" || { cat "$log"; echo "make run did not start" >&2; exit 1; }
