"""A Python client of the order service that uses only the generated stubs (orders_api.v1).

It creates an order, reads it back with min_position (read-your-writes), watches it through a
confirm and a ship, and follows the event log with SubscribeEvents from position 0 to caught_up.

    .venv/bin/python examples/python/orders_client.py [--write 127.0.0.1:50051] [--read 127.0.0.1:50052]
        [--token TOKEN] [--ca ca.pem [--cert client.pem --key client.key]]

With --ca the channels use TLS (mutual TLS with --cert and --key); with a token (or ORDERS_TOKEN)
every call carries `authorization: Bearer TOKEN`.

The generated package lives at the repository's root, which is put on sys.path here; a project of
its own would generate the stubs from protos/ with grpcio-tools instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from orders_api.v1 import orders_pb2 as pb
from orders_api.v1 import orders_pb2_grpc

DEADLINE = 10.0  # seconds, for every call and stream


def status_name(status: int) -> str:
    return pb.OrderStatus.Name(status)


def open_channel(address: str, args: argparse.Namespace) -> grpc.Channel:
    """Plaintext, or TLS trusting --ca (with a client certificate for mutual TLS)."""
    if not args.ca:
        return grpc.insecure_channel(address)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(args.ca).read_bytes(),
        private_key=Path(args.key).read_bytes() if args.key else None,
        certificate_chain=Path(args.cert).read_bytes() if args.cert else None,
    )
    return grpc.secure_channel(address, credentials)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", default=os.environ.get("ORDERS_WRITE_ADDR", "127.0.0.1:50051"))
    parser.add_argument("--read", default=os.environ.get("ORDERS_READ_ADDR", "127.0.0.1:50052"))
    parser.add_argument("--token", default=os.environ.get("ORDERS_TOKEN", ""))
    parser.add_argument("--ca", default=os.environ.get("ORDERS_CA", ""))
    parser.add_argument("--cert", default=os.environ.get("ORDERS_CERT", ""))
    parser.add_argument("--key", default=os.environ.get("ORDERS_KEY", ""))
    args = parser.parse_args()
    # Per call rather than as call credentials, which grpc allows on TLS channels only.
    auth = (("authorization", f"Bearer {args.token}"),) if args.token else ()

    with open_channel(args.write, args) as write_channel, open_channel(args.read, args) as read_channel:
        commands = orders_pb2_grpc.OrderCommandServiceStub(write_channel)
        queries = orders_pb2_grpc.OrderQueryServiceStub(read_channel)
        events = orders_pb2_grpc.EventStoreServiceStub(read_channel)

        order_id = f"py-{uuid.uuid4().hex[:8]}"
        created = commands.CreateOrder(
            pb.CreateOrderRequest(
                order_id=order_id,
                customer_id="python-customer",
                items=[
                    pb.OrderItem(product_id="sku-1", quantity=2, unit_price=1250),
                    pb.OrderItem(product_id="sku-2", quantity=1, unit_price=499),
                ],
                command_id=f"create-{order_id}",
            ),
            timeout=DEADLINE,
            metadata=auth,
        )
        print(f"created {order_id} at position {created.position} (version {created.stream_version})")

        read = queries.GetOrder(
            pb.GetOrderRequest(order_id=order_id, min_position=created.position),
            timeout=DEADLINE,
            metadata=auth,
        )
        print(
            f"read {order_id}: {status_name(read.order.status)}, total {read.order.total},"
            f" read model at {read.consistency.read_model_version},"
            f" consistent {str(read.consistency.is_consistent).lower()}"
        )

        seen: list[str] = []
        watch = queries.WatchOrder(
            pb.WatchOrderRequest(order_id=order_id, min_position=created.position),
            timeout=DEADLINE,
            metadata=auth,
        )
        for message in watch:
            status, version = status_name(message.order.status), message.order.version
            print(f"watch: {order_id} is {status} at version {version}")
            seen.append(f"{status}@{version}")
            if message.order.status == pb.ORDER_STATUS_PENDING:
                commands.ConfirmOrder(
                    pb.ConfirmOrderRequest(order_id=order_id, expected_version=version),
                    timeout=DEADLINE,
                    metadata=auth,
                )
            elif message.order.status == pb.ORDER_STATUS_CONFIRMED:
                commands.ShipOrder(
                    pb.ShipOrderRequest(order_id=order_id, tracking_number="TRACK-PY-1"),
                    timeout=DEADLINE,
                    metadata=auth,
                )
            elif message.order.status == pb.ORDER_STATUS_SHIPPED:
                watch.cancel()
                break
        print(f"watch saw {' -> '.join(seen)}")

        count = last = 0
        subscription = events.SubscribeEvents(
            pb.SubscribeEventsRequest(from_position=0), timeout=DEADLINE, metadata=auth
        )
        for response in subscription:
            kind = response.WhichOneof("message")
            if kind == "event":
                if response.event.position != last + 1:
                    raise SystemExit(f"event {response.event.position} after {last}")
                last, count = response.event.position, count + 1
            elif kind == "caught_up":
                subscription.cancel()
                caught_up = response.caught_up.position
                print(f"subscription: {count} events from position 0, caught up at {caught_up}")
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
