"""The SQLite backend: one file per store, one writing process per file, WAL readers."""
