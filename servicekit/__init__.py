"""What every process shares at its edge: flags, logging, the gRPC server's life cycle, and the
one table that maps application errors to gRPC status codes. Domain-agnostic.
"""
