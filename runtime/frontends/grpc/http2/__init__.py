"""A small HTTP/2 server (RFC 9113) for the native gRPC frontend: just what gRPC over cleartext
needs (prior-knowledge h2c, no server push, no priorities)."""
