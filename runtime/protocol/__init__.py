"""Generated protobuf/gRPC modules for the KServe v2 / Triton protocol (see protos/)."""

from . import grpc_service_pb2, health_pb2, model_config_pb2

__all__ = ["grpc_service_pb2", "health_pb2", "model_config_pb2"]
