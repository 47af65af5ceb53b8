#!/usr/bin/env bash
# Runs the documents' commands, as written, against `make run` (scripts/run.sh) on a fresh data
# folder: the README's "Try it" (grpcurl) and "Try it over REST" (curl) blocks with the outcomes
# their prose promises, then every line of the sh blocks in each section whose heading starts with
# "Try it" in docs/*.md, ARCHITECTURE.md and gateway/README.md, with the outcomes their prose
# promises. A line fails the check when it exits non-zero, except a streaming line (-max-time /
# --max-time), which must print at least one message before its time is up. The mesh runs on ports
# of its own (scripts/mesh-up.sh), so this works beside a `make run`: the documents' make-run
# addresses are rewritten to them, as `var/` is to its data folder.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.deps/venv/bin:$PATH"
MESH_TEST_BASE=21000
# shellcheck source=scripts/mesh-up.sh
source scripts/mesh-up.sh
order_addr=127.0.0.1:$((base + 51))
inventory_addr=127.0.0.1:$((base + 53))
gateway=localhost:$((base + 80))
block() { awk '/^## Try it/{on=1} on && /^```sh/{inblock=1; next} inblock && /^```/{exit} inblock{print}' README.md; }
# The lines use var/ as `make run` does; here they point at this run's data folder.
mapfile -t exports < <(block | grep '^export ' | sed "s#var/#$data/#g" | to_test_ports)
mapfile -t lines < <(block | grep '^grpcurl ' | sed "s#var/#$data/#g" | to_test_ports)
for e in "${exports[@]}"; do eval "$e"; done
[[ ${#lines[@]} -ge 5 ]] || { echo "found only ${#lines[@]} grpcurl lines in README.md" >&2; exit 1; }
passed=0
failed=0
ok() { echo "ok: $1"; passed=$((passed + 1)); }
fail() { echo "FAILED: $1"; failed=$((failed + 1)); }
all_out=""
for line in "${lines[@]}"; do
  out=$(bash -c "$line" 2>&1) && rc=0 || rc=$?
  all_out+="$out"$'\n'
  if [[ $rc -ne 0 && ! ( $line == *-max-time* && $out == *'{'* ) ]]; then
    fail "($rc) $line"; echo "$out" | sed 's/^/    /'
  else
    ok "${line:0:140}"
  fi
done
# The prose claims next to the block.
reserve=$(printf '%s\n' "${lines[@]}" | grep ReserveStock | head -1)
denied=$(bash -c "${reserve//\$AS_ORDER/\$AS_OPERATOR}" 2>&1 || true)
if [[ $denied == *"PermissionDenied"*"sa/operator may not call ordermesh.inventory.v1.InventoryService/ReserveStock"* ]]; then
  ok "ReserveStock as operator is PermissionDenied"
else
  fail "ReserveStock as operator should be PermissionDenied, got: $denied"
fi
bad=$(grpcurl $AS_OPERATOR -servername inventory -d '{"sku":"TEA-1","delta":"0"}' "$inventory_addr" ordermesh.inventory.v1.InventoryService/AdjustStock 2>&1 || true)
if [[ $bad == *"InvalidArgument"*"delta: must not be zero"* ]]; then
  ok "AdjustStock with delta 0 is InvalidArgument naming delta"
else
  fail "AdjustStock delta 0: $bad"
fi
# grpcurl decodes the BadRequest detail through reflection (google/rpc/error_details.proto).
if [[ $bad == *'{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"delta"'* ]]; then
  ok "grpcurl prints the BadRequest's field violation"
else
  fail "grpcurl did not decode the BadRequest detail: $bad"
fi
# The outcomes the prose after the block promises.
claims=('"ORDER_STATUS_PENDING"' '"orderPlaced"' '"amountMinor": "900"' '"PAYMENT_STATUS_AUTHORIZED"'
  '"declineReason": "card_declined"' '"amountMinor": "2199"' '"estimatedDays": 7'
  '"SHIPMENT_STATUS_PENDING"')
for claim in "${claims[@]}"; do
  if [[ $all_out == *"$claim"* ]]; then
    ok "output shows $claim"
  else
    fail "no $claim in the output of the README lines"
  fi
done
# The saga confirms the README's order within a few seconds.
confirmed=""
for _ in $(seq 1 50); do
  confirmed=$(grpcurl $AS_OPERATOR -servername order -d '{"customerId":"cust-1","statuses":["ORDER_STATUS_CONFIRMED"]}' "$order_addr" ordermesh.order.v1.OrderService/ListOrders 2>&1 || true)
  [[ $confirmed == *'"ORDER_STATUS_CONFIRMED"'* ]] && break
  sleep 0.2
done
if [[ $confirmed == *'"ORDER_STATUS_CONFIRMED"'* ]]; then
  ok "the saga confirmed the README's order"
else
  fail "the README's order was not confirmed: $confirmed"
fi
# "Try it over REST": the curl lines as written (from a scratch folder: one writes a file), each
# must answer 2xx; the streaming one (--max-time) must print a line before its time is up.
rest_block() { awk '/^## Try it over REST/{on=1} on && /^```sh/{inblock=1; next} inblock && /^```/{exit} inblock{print}' README.md; }
mapfile -t curls < <(rest_block | grep '^curl ' | sed "s#var/#$data/#g" | to_test_ports)
[[ ${#curls[@]} -ge 5 ]] || fail "found only ${#curls[@]} curl lines in README.md"
rest_out=""
for line in "${curls[@]}"; do
  checked="curl -w '\n%{http_code}'${line#curl}"
  out=$(cd "$data" && bash -c "$checked" 2>&1) && rc=0 || rc=$?
  code=${out##*$'\n'}
  rest_out+="$out"$'\n'
  if [[ $line == *--max-time* && $out == *'{"result"'* ]] || [[ $rc -eq 0 && $code == 2?? ]]; then
    ok "${line:0:140}"
  else
    fail "($rc, HTTP $code) $line"; echo "$out" | tail -3 | sed 's/^/    /'
  fi
done
if [[ -s $data/openapi.json ]]; then ok "openapi.json written to var/"; else fail "no var/openapi.json"; fi
rest_confirmed=""
for _ in $(seq 1 50); do
  rest_confirmed=$(curl -s "$gateway/v1/customers/cust-2/overview" || true)
  [[ $rest_confirmed == *'"ORDER_STATUS_CONFIRMED"'*'"shipmentId"'*'"partial":false'* ]] && break
  sleep 0.2
done
if [[ $rest_confirmed == *'"ORDER_STATUS_CONFIRMED"'*'"shipmentId"'*'"partial":false'* ]]; then
  ok "the REST order is confirmed and the overview shows its shipment, not partial"
else
  fail "the overview of cust-2: $rest_confirmed"
fi
if [[ $rest_out == *'"ORDER_STATUS_PENDING"'* && $rest_out == *'"onHand":"5"'* ]]; then
  ok "REST output shows the pending order and the item's stock"
else
  fail "REST output lacks ORDER_STATUS_PENDING or onHand 5"
fi
bad_rest=$(curl -s -w '\n%{http_code}' -X POST "$gateway/v1/orders" -d '{"customerId": 5}' || true)
if [[ $bad_rest == *'"status":"INVALID_ARGUMENT"'* && $bad_rest == *'"field":"customerId"'* && $bad_rest == *$'\n400' ]]; then
  ok "a bad REST body is 400 naming customerId"
else
  fail "bad REST body answered: $bad_rest"
fi
# docs/*.md, ARCHITECTURE.md and gateway/README.md: every line of the sh blocks in a section whose heading starts
# with "Try it" (any level), run from the data folder; `var/` is this run's data folder and `target/`
# the cargo target folder, as in the README lines.
target_dir=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)
# mesh-dns --resolve asks MESH_DNS, as the services do.
export MESH_DNS=$MESH_DNS_LISTEN
try_blocks() { awk '!inblock && /^#+ Try it/{on=1; next} !inblock && /^#/{on=0; next} on && !inblock && /^```sh/{inblock=1; next} inblock && /^```/{inblock=0; next} inblock{print}' "$1"; }
docs_out=""
docs_lines=0
for doc in docs/*.md ARCHITECTURE.md gateway/README.md; do
  [[ -f $doc ]] || continue
  mapfile -t cmds < <(try_blocks "$doc" | grep -v '^[[:space:]]*\(#\|$\)' | sed -e "s#var/#$data/#g" -e "s#\(^\|[[:space:]]\)target/#\1$target_dir/#g" | to_test_ports)
  for line in "${cmds[@]}"; do
    docs_lines=$((docs_lines + 1))
    out=$(cd "$data" && bash -c "$line" 2>&1) && rc=0 || rc=$?
    docs_out+="$out"$'\n'
    if [[ $rc -eq 0 ]] || [[ $line == *-max-time* && $out == *'{'* ]]; then
      ok "$doc: ${line:0:120}"
    else
      fail "($rc) $doc: $line"; echo "$out" | tail -3 | sed 's/^/    /'
    fi
  done
done
# At least the DNS lookup (docs/transport.md), the metrics scrape (docs/observability.md) and
# the gateway's --check-config (gateway/README.md).
[[ $docs_lines -ge 3 ]] || fail "found only $docs_lines Try-it lines in docs/, ARCHITECTURE.md and gateway/README.md"
# The outcomes the docs' prose promises next to their lines (extended regular expressions).
docs_claims=("127\\.0\\.0\\.1:$((base + 52))" '"http_health":\{"liveness":"/healthz"' '^saga_finished_total\{.*outcome="completed".*\} [1-9]')
for claim in "${docs_claims[@]}"; do
  if grep -qE "$claim" <<<"$docs_out"; then
    ok "docs output matches $claim"
  else
    fail "nothing matches $claim in the output of the docs' lines"
  fi
done
# `make run` itself, on this run's log and ports.
# A second `make run` on the same ports stops before building, naming the address and setting.
second_dir=$(mktemp -d)
second=$(DATA_DIR=$second_dir timeout 60 scripts/run.sh 2>&1) && rc=0 || rc=$?
rm -rf "$second_dir"
if [[ $rc -ne 0 && $second == *"LISTEN_ADDR $order_addr (tcp) for order: address already in use"* \
  && $second != *"ordermesh is running"* && $second != *"make run: building"* ]]; then
  ok "a second make run names the taken LISTEN_ADDR and stops"
else
  fail "($rc) a second make run: $second"
fi
# The start-up says what it does; the log has no handshake warnings from the readiness wait and
# no line per DNS query.
if grep -q "^make run: building" "$log"; then ok "make run says it builds"; else fail "make run does not say it builds"; fi
noisy=$(grep -cE "mTLS handshake refused|hickory_server" "$log" || true)
if [[ $noisy -eq 0 ]]; then ok "no handshake warnings and no per-query DNS lines in the log"; else fail "$noisy handshake or DNS query lines in the log"; fi
# Metrics listeners serve /metrics only.
metrics_root=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$((base + 461))/" || true)
metrics_ok=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$((base + 461))/metrics" || true)
if [[ $metrics_root == 404 && $metrics_ok == 200 ]]; then ok "metrics: / is 404, /metrics 200"; else fail "metrics: / is $metrics_root, /metrics $metrics_ok"; fi
# Stopping shows the drain: what is being stopped, each process as it ends, then all stopped.
kill -TERM "$runner"
wait "$runner" 2>/dev/null || true
stopped=$(grep -v '^make run: all stopped$' "$log" | grep -c '^make run: [a-z]* stopped$' || true)
if grep -q "^make run: stopping dns order payment inventory shipping gateway" "$log" \
  && [[ $stopped -eq 6 ]] && grep -q "^make run: all stopped$" "$log"; then
  ok "make run shows the drain: 6 processes stopped, then all stopped"
else
  fail "make run's stop: $(grep '^make run: ' "$log" | tail -9)"
fi
if (exec 3<>"/dev/tcp/127.0.0.1/$((base + 51))") 2>/dev/null; then fail "order still listens after the stop"; else ok "nothing listens after the stop"; fi
echo "readme-check: $passed passed, $failed failed (README.md: ${#lines[@]} grpcurl and ${#curls[@]} curl lines; docs: $docs_lines lines; the rest are the outcomes the prose promises)"
[[ $failed -eq 0 ]]
