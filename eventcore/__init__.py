"""Domain-agnostic CQRS and event-sourcing core.

Storage interfaces (event store, read store) with SQLite and in-memory implementations, a command
bus with group commit, a query bus, and a projection runner that writes each projection's
checkpoint in the same transaction as its rows. Nothing here knows about any particular domain.
"""
