# Sourced by the scripts that test a running mesh: starts `make run` (scripts/run.sh) on a fresh
# data folder in the background, stops it (TERM: a background job of a non-interactive shell
# ignores INT) and removes the folder on exit, and returns once the mesh says it is running.
# Sets `data` (the folder) and `runner` (the pid).
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
