"""The in-memory backend: the reference implementation of each storage interface, for tests."""
