"""The write service: takes order commands over gRPC and appends their events to the event store."""
