-- Each projection's checkpoint, written in the same transaction as the rows it changed.
CREATE TABLE projections (
    name       text        PRIMARY KEY,
    version    integer     NOT NULL,            -- the projection's code version; a change rebuilds it
    position   bigint      NOT NULL,            -- last event position applied
    updated_at timestamptz NOT NULL
);
