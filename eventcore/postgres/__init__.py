"""The PostgreSQL backend: an event store several write services share, and a read store."""
