-- The event log: one row per event, global position gap-free in commit order.
-- Optimistic concurrency is the unique key on (stream_id, stream_version).
CREATE TABLE events (
    position       INTEGER PRIMARY KEY,        -- 1, 2, 3, ... assigned by the single writer
    stream_id      TEXT    NOT NULL,
    stream_version INTEGER NOT NULL,           -- 1 for a stream's first event
    type           TEXT    NOT NULL,           -- stable wire name, e.g. OrderCreated
    schema_version INTEGER NOT NULL,           -- version of the payload's shape, for upcasting
    payload        TEXT    NOT NULL,           -- JSON
    metadata       TEXT    NOT NULL,           -- JSON: event_id, command_id, recorded_at (ISO-8601 UTC)
    UNIQUE (stream_id, stream_version)
);

-- Idempotent retries: a command_id is recorded in the same transaction as its events.
CREATE TABLE commands (
    command_id     TEXT    PRIMARY KEY,
    fingerprint    TEXT    NOT NULL,           -- what the command asked, to refuse a reused id
    stream_id      TEXT    NOT NULL,
    first_position INTEGER NOT NULL,
    last_position  INTEGER NOT NULL
) WITHOUT ROWID;

-- The log's two invariants, enforced by the database itself: positions follow each other without
-- a gap, and so do the versions within a stream. A violating insert fails with a constraint error.
CREATE TRIGGER events_positions_are_contiguous
BEFORE INSERT ON events
WHEN NEW.position <> coalesce((SELECT max(position) FROM events), 0) + 1
BEGIN
    SELECT RAISE(ABORT, 'event positions must be contiguous');
END;

CREATE TRIGGER events_stream_versions_are_contiguous
BEFORE INSERT ON events
WHEN NEW.stream_version <> 1 AND NOT EXISTS (
    SELECT 1 FROM events WHERE stream_id = NEW.stream_id AND stream_version = NEW.stream_version - 1
)
BEGIN
    SELECT RAISE(ABORT, 'stream versions must be contiguous');
END;
