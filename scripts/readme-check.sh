#!/usr/bin/env bash
# Runs the README's "Try it" grpcurl lines, as written, against `make run` (scripts/run.sh) on a
# fresh data folder. A line fails the check when grpcurl fails, except a streaming line with
# -max-time, which must print at least one message before its time is up.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.deps/venv/bin:$PATH"
# shellcheck source=scripts/mesh-up.sh
source scripts/mesh-up.sh
block() { awk '/^## Try it/{on=1} on && /^```sh/{inblock=1; next} inblock && /^```/{exit} inblock{print}' README.md; }
# The lines use var/ as `make run` does; here they point at this run's data folder.
mapfile -t exports < <(block | grep '^export ' | sed "s#var/#$data/#g")
mapfile -t lines < <(block | grep '^grpcurl ' | sed "s#var/#$data/#g")
for e in "${exports[@]}"; do eval "$e"; done
[[ ${#lines[@]} -ge 5 ]] || { echo "found only ${#lines[@]} grpcurl lines in README.md" >&2; exit 1; }
failed=0
all_out=""
for line in "${lines[@]}"; do
  out=$(bash -c "$line" 2>&1) && rc=0 || rc=$?
  all_out+="$out"$'\n'
  if [[ $rc -ne 0 && ! ( $line == *-max-time* && $out == *'{'* ) ]]; then
    echo "FAILED ($rc): $line"; echo "$out" | sed 's/^/    /'; failed=$((failed + 1))
  else
    echo "ok: ${line:0:140}"
  fi
done
# The prose claims next to the block.
reserve=$(printf '%s\n' "${lines[@]}" | grep ReserveStock | head -1)
denied=$(bash -c "${reserve//\$AS_ORDER/\$AS_OPERATOR}" 2>&1 || true)
if [[ $denied == *"PermissionDenied"*"sa/operator may not call ordermesh.inventory.v1.InventoryService/ReserveStock"* ]]; then
  echo "ok: ReserveStock as operator is PermissionDenied"
else
  echo "FAILED: ReserveStock as operator should be PermissionDenied, got: $denied"; failed=$((failed + 1))
fi
bad=$(grpcurl $AS_OPERATOR -servername inventory -d '{"sku":"TEA-1","delta":"0"}' 127.0.0.1:50053 ordermesh.inventory.v1.InventoryService/AdjustStock 2>&1 || true)
if [[ $bad == *"InvalidArgument"*"delta: must not be zero"* ]]; then
  echo "ok: AdjustStock with delta 0 is InvalidArgument naming delta"
else
  echo "FAILED: AdjustStock delta 0: $bad"; failed=$((failed + 1))
fi
# The outcomes the prose after the block promises.
claims=('"ORDER_STATUS_PENDING"' '"orderPlaced"' '"amountMinor": "900"' '"PAYMENT_STATUS_AUTHORIZED"'
  '"declineReason": "card_declined"' '"amountMinor": "2199"' '"estimatedDays": 7'
  '"SHIPMENT_STATUS_PENDING"')
for claim in "${claims[@]}"; do
  if [[ $all_out == *"$claim"* ]]; then
    echo "ok: output shows $claim"
  else
    echo "FAILED: no $claim in the output of the README lines"; failed=$((failed + 1))
  fi
done
# The saga confirms the README's order within a few seconds.
confirmed=""
for _ in $(seq 1 50); do
  confirmed=$(grpcurl $AS_OPERATOR -servername order -d '{"customerId":"cust-1","statuses":["ORDER_STATUS_CONFIRMED"]}' 127.0.0.1:50051 ordermesh.order.v1.OrderService/ListOrders 2>&1 || true)
  [[ $confirmed == *'"ORDER_STATUS_CONFIRMED"'* ]] && break
  sleep 0.2
done
if [[ $confirmed == *'"ORDER_STATUS_CONFIRMED"'* ]]; then
  echo "ok: the saga confirmed the README's order"
else
  echo "FAILED: the README's order was not confirmed: $confirmed"; failed=$((failed + 1))
fi
# make run serves the mesh zone: the README's dig-style lookup answers with the service's port.
srv=$("${CARGO_TARGET_DIR:-target}"/debug/mesh-dns --nameserver 127.0.0.1:5354 --resolve payment.mesh.local. 2>&1 || true)
if [[ $srv == "127.0.0.1:50052" ]]; then
  echo "ok: _grpc._tcp.payment.mesh.local. resolves to 127.0.0.1:50052"
else
  echo "FAILED: mesh DNS lookup of payment answered: $srv"; failed=$((failed + 1))
fi
# "Try it over REST": the curl lines as written (from a scratch folder: one writes a file), each
# must answer 2xx; the streaming one (--max-time) must print a line before its time is up.
rest_block() { awk '/^## Try it over REST/{on=1} on && /^```sh/{inblock=1; next} inblock && /^```/{exit} inblock{print}' README.md; }
mapfile -t curls < <(rest_block | grep '^curl ')
[[ ${#curls[@]} -ge 5 ]] || { echo "found only ${#curls[@]} curl lines in README.md" >&2; failed=$((failed + 1)); }
rest_out=""
for line in "${curls[@]}"; do
  checked="curl -w '\n%{http_code}'${line#curl}"
  out=$(cd "$data" && bash -c "$checked" 2>&1) && rc=0 || rc=$?
  code=${out##*$'\n'}
  rest_out+="$out"$'\n'
  if [[ $line == *--max-time* && $out == *'{"result"'* ]] || [[ $rc -eq 0 && $code == 2?? ]]; then
    echo "ok: ${line:0:140}"
  else
    echo "FAILED ($rc, HTTP $code): $line"; echo "$out" | tail -3 | sed 's/^/    /'; failed=$((failed + 1))
  fi
done
[[ -s $data/openapi.json ]] && echo "ok: openapi.json written" || { echo "FAILED: no openapi.json"; failed=$((failed + 1)); }
rest_confirmed=""
for _ in $(seq 1 50); do
  rest_confirmed=$(curl -s "localhost:8080/v1/customers/cust-2/overview" || true)
  [[ $rest_confirmed == *'"ORDER_STATUS_CONFIRMED"'*'"shipmentId"'*'"partial":false'* ]] && break
  sleep 0.2
done
if [[ $rest_confirmed == *'"ORDER_STATUS_CONFIRMED"'*'"shipmentId"'*'"partial":false'* ]]; then
  echo "ok: the REST order is confirmed and the overview shows its shipment, not partial"
else
  echo "FAILED: the overview of cust-2: $rest_confirmed"; failed=$((failed + 1))
fi
if [[ $rest_out == *'"ORDER_STATUS_PENDING"'* && $rest_out == *'"onHand":"5"'* ]]; then
  echo "ok: REST output shows the pending order and the item's stock"
else
  echo "FAILED: REST output lacks ORDER_STATUS_PENDING or onHand 5"; failed=$((failed + 1))
fi
bad_rest=$(curl -s -w '\n%{http_code}' -X POST localhost:8080/v1/orders -d '{"customerId": 5}' || true)
if [[ $bad_rest == *'"status":"INVALID_ARGUMENT"'* && $bad_rest == *'"field":"customerId"'* && $bad_rest == *$'\n400' ]]; then
  echo "ok: a bad REST body is 400 naming customerId"
else
  echo "FAILED: bad REST body answered: $bad_rest"; failed=$((failed + 1))
fi
lines+=(denied bad "${claims[@]}" srv confirmed "${curls[@]}" openapi rest_confirmed rest_out bad_rest)
echo "readme: $(( ${#lines[@]} - failed )) passed, $failed failed"
[[ $failed -eq 0 ]]
