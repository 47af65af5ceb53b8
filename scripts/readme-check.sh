#!/usr/bin/env bash
# Runs the README's "Try it" grpcurl lines, as written, against `make run` (scripts/run.sh) on a
# fresh data folder. A line fails the check when grpcurl fails, except a streaming line with
# -max-time, which must print at least one message before its time is up.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.deps/venv/bin:$PATH"
data=$(mktemp -d)
log=$data/run.log
DATA_DIR=$data scripts/run.sh >"$log" 2>&1 &
runner=$!
cleanup() { kill -INT "$runner" 2>/dev/null || true; wait "$runner" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 1 600); do
  grep -q "ordermesh is running" "$log" && break
  kill -0 "$runner" 2>/dev/null || { cat "$log"; echo "make run exited early" >&2; exit 1; }
  sleep 0.5
done
grep -q "ordermesh is running" "$log" || { cat "$log"; echo "make run did not start" >&2; exit 1; }
mapfile -t lines < <(awk '/^## Try it/{on=1} on && /^```sh/{inblock=1; next} inblock && /^```/{exit} inblock && /^grpcurl /{print}' README.md)
[[ ${#lines[@]} -ge 5 ]] || { echo "found only ${#lines[@]} grpcurl lines in README.md" >&2; exit 1; }
failed=0
for line in "${lines[@]}"; do
  out=$(bash -c "$line" 2>&1) && rc=0 || rc=$?
  if [[ $rc -ne 0 && ! ( $line == *-max-time* && $out == *'{'* ) ]]; then
    echo "FAILED ($rc): $line"; echo "$out" | sed 's/^/    /'; failed=$((failed + 1))
  else
    echo "ok: ${line:0:110}"
  fi
done
echo "readme: $(( ${#lines[@]} - failed )) passed, $failed failed"
[[ $failed -eq 0 ]]
