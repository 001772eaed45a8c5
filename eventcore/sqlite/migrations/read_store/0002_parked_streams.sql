-- Streams a projection stopped applying because a handler failed on one of their events; an empty
-- stream_id stops the whole projection (it failed). Written with the checkpoint that passed them.
CREATE TABLE parked_streams (
    projection TEXT    NOT NULL,
    stream_id  TEXT    NOT NULL,
    position   INTEGER NOT NULL,               -- the event that failed; later ones of the stream wait
    event_type TEXT    NOT NULL,
    error      TEXT    NOT NULL,
    parked_at  TEXT    NOT NULL,               -- ISO-8601 UTC
    PRIMARY KEY (projection, stream_id)
) WITHOUT ROWID;

-- Events an operator dropped from one projection on purpose (`projector skip`), kept for the record.
CREATE TABLE skipped_events (
    projection TEXT    NOT NULL,
    position   INTEGER NOT NULL,
    stream_id  TEXT    NOT NULL,
    event_type TEXT    NOT NULL,
    error      TEXT    NOT NULL,
    skipped_at TEXT    NOT NULL,               -- ISO-8601 UTC
    PRIMARY KEY (projection, position)
) WITHOUT ROWID;
