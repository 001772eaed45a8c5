-- Each projection's checkpoint, written in the same transaction as the rows it changed.
CREATE TABLE projections (
    name       TEXT    PRIMARY KEY,
    version    INTEGER NOT NULL,               -- the projection's code version; a change rebuilds it
    position   INTEGER NOT NULL,               -- last event position applied
    updated_at TEXT    NOT NULL                -- ISO-8601 UTC
) WITHOUT ROWID;
