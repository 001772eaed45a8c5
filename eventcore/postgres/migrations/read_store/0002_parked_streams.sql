-- Streams a projection stopped applying because a handler failed on one of their events; an empty
-- stream_id stops the whole projection (it failed). Written with the checkpoint that passed them.
CREATE TABLE parked_streams (
    projection text        NOT NULL,
    stream_id  text        COLLATE "C" NOT NULL,
    position   bigint      NOT NULL,            -- the event that failed; later ones of the stream wait
    event_type text        NOT NULL,
    error      text        NOT NULL,
    parked_at  timestamptz NOT NULL,
    PRIMARY KEY (projection, stream_id)
);

-- Events an operator dropped from one projection on purpose (`projector skip`), kept for the record.
CREATE TABLE skipped_events (
    projection text        NOT NULL,
    position   bigint      NOT NULL,
    stream_id  text        NOT NULL,
    event_type text        NOT NULL,
    error      text        NOT NULL,
    skipped_at timestamptz NOT NULL,
    PRIMARY KEY (projection, position)
);
