"""The generated gRPC module, as the harness calls it.

grpc_tools writes no type hints for `orders_pb2_grpc`, so under `mypy --strict` every call into it is an
untyped call. Re-exported once as `Any` here instead of an ignore comment at every call site; the
messages (`orders_pb2`, which has a .pyi) keep their types.
"""

from __future__ import annotations

from typing import Any

from orders_api.v1 import orders_pb2_grpc as _generated

grpc_api: Any = _generated
