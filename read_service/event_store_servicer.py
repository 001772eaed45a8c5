"""EventStoreService: the log itself for other services to follow (catch-up subscriptions) and one
stream's history, from the event store opened read-only. Translation only: the subscription logic
is eventcore.subscriptions, the shared tail of the log eventcore.live.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from eventcore.errors import NotFound
from eventcore.subscriptions import Marker, MarkerKind, Subscriptions, check_stream_id, event_filter
from orders_api.v1 import orders_pb2 as pb
from orders_api.v1 import orders_pb2_grpc
from read_service.storage import StorageSlot
from servicekit.event_messages import event_message
from servicekit.status import CallTracker, TrackedServicer, grpc_method
from servicekit.streams import grpc_stream

DEFAULT_READ_LIMIT = 100
MAX_READ_LIMIT = 1_000


def marker_message(marker: Marker) -> pb.SubscribeEventsResponse:
    kind, position = marker
    if kind is MarkerKind.CHECKPOINT:
        return pb.SubscribeEventsResponse(checkpoint=pb.Checkpoint(position=position))
    if kind is MarkerKind.CAUGHT_UP:
        return pb.SubscribeEventsResponse(caught_up=pb.CaughtUp(position=position))
    return pb.SubscribeEventsResponse(fell_behind=pb.FellBehind(position=position))


def read_limit(requested: int) -> int:
    return DEFAULT_READ_LIMIT if requested == 0 else min(requested, MAX_READ_LIMIT)


class EventStoreServicer(TrackedServicer, orders_pb2_grpc.EventStoreServiceServicer):
    def __init__(self, subscriptions: Subscriptions, storage: StorageSlot, calls: CallTracker) -> None:
        super().__init__(calls)
        self._subscriptions = subscriptions
        self._storage = storage

    @grpc_stream
    async def SubscribeEvents(
        self, request: pb.SubscribeEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SubscribeEventsResponse]:
        passes = event_filter(list(request.event_types), request.stream_prefix)
        async for message in self._subscriptions.subscribe(request.from_position, passes):
            if isinstance(message, Marker):
                yield marker_message(message)
            else:
                yield pb.SubscribeEventsResponse(event=event_message(message))

    @grpc_method
    async def ReadStream(
        self, request: pb.ReadStreamRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReadStreamResponse:
        check_stream_id(request.stream_id)
        events = self._storage.get().events
        version = events.stream_version(request.stream_id)
        if version == 0:
            raise NotFound(f"stream {request.stream_id!r} has no events")
        found = events.read_stream_slice(
            request.stream_id, max(request.from_version, 1), read_limit(request.limit)
        )
        if found:  # the stream may have grown between the two reads
            version = max(version, found[-1].stream_version)
        return pb.ReadStreamResponse(events=[event_message(e) for e in found], stream_version=version)
