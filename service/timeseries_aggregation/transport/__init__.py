"""The gRPC face of the service: message conversion, servicers and status codes."""
