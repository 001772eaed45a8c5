"""Benchmark harness: the three real processes on temporary files, driven from separate client processes.

Every figure is printed next to a ceiling measured in the same run (a no-op `grpc.aio` server with
canned replies, raw SQLite appends), because this machine is noisy (about +-20% run to run) and only
figures taken together can be compared. `python -m bench --help` lists the options.
"""
