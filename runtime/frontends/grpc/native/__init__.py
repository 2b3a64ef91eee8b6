"""Trident's own gRPC server: the gRPC protocol over the small HTTP/2 server in `../http2`.

It serves the same servicers as grpc.aio (they see a context with the same methods), with far
less Python per call: see `server.py` for why it exists and what it measured.
"""
