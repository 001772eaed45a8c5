"""The orders domain: commands, events, the order aggregate's rules, projections and queries.

Pure Python: it imports neither gRPC nor a database driver, and plugs into eventcore.
"""
