"""An independent peer: a grpcio client generated from proto/ at test time.

Usage: python_client.py <generated-stubs-dir> <host:port> <sku>
Creates an item, reserves part of it twice with one idempotency key, lists items, and prints
one JSON object with what the server answered, for the Rust test to check.
"""

import json
import sys

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
from ordermesh.common.v1 import common_pb2  # noqa: E402
from ordermesh.inventory.v1 import inventory_pb2, inventory_pb2_grpc  # noqa: E402

target, sku = sys.argv[2], sys.argv[3]
out = {}
with grpc.insecure_channel(target) as channel:
    stub = inventory_pb2_grpc.InventoryServiceStub(channel)
    item = stub.CreateItem(
        inventory_pb2.CreateItemRequest(
            sku=sku,
            name="from python",
            price=common_pb2.Money(currency_code="GBP", amount_minor=1250),
            initial_stock=8,
        )
    ).item
    out["created_available"] = item.available
    request = inventory_pb2.ReserveStockRequest(
        order_id="py-order-1",
        lines=[common_pb2.SkuQuantity(sku=sku, quantity=3)],
        idempotency_key="py-key-1",
    )
    first = stub.ReserveStock(request).reservation
    second = stub.ReserveStock(request).reservation
    out["reservation_status"] = inventory_pb2.ReservationStatus.Name(first.status)
    out["replay_identical"] = first == second
    try:
        stub.ReserveStock(
            inventory_pb2.ReserveStockRequest(
                order_id="py-order-2",
                lines=[common_pb2.SkuQuantity(sku=sku, quantity=-1)],
                idempotency_key="py-key-2",
            )
        )
        out["bad_input"] = "accepted"
    except grpc.RpcError as e:
        out["bad_input"] = f"{e.code().name}: {e.details()}"
    out["available_after"] = stub.GetItem(inventory_pb2.GetItemRequest(sku=sku)).item.available
print(json.dumps(out))
