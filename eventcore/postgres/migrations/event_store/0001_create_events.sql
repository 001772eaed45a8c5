-- The event log: one row per event, global position gap-free in commit order.
-- A writer takes the next positions under a transaction-scoped advisory lock (see event_store.py),
-- so positions are assigned and committed in one order; the unique keys stay as the last word.
CREATE TABLE events (
    position       bigint      PRIMARY KEY,     -- 1, 2, 3, ...
    stream_id      text        NOT NULL,
    stream_version integer     NOT NULL,        -- 1 for a stream's first event
    type           text        NOT NULL,        -- stable wire name, e.g. OrderCreated
    schema_version integer     NOT NULL,        -- version of the payload's shape, for upcasting
    payload        jsonb       NOT NULL,
    event_id       uuid        NOT NULL,
    command_id     text        NOT NULL,        -- '' when the client gave none
    recorded_at    timestamptz NOT NULL,
    UNIQUE (stream_id, stream_version)
);

-- Idempotent retries: a command_id is recorded in the same transaction as its events.
CREATE TABLE commands (
    command_id     text    PRIMARY KEY,
    fingerprint    text    NOT NULL,            -- what the command asked, to refuse a reused id
    stream_id      text    NOT NULL,
    first_position bigint  NOT NULL,
    last_position  bigint  NOT NULL
);
