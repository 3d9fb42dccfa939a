"""Generated protobuf and gRPC code for the fedft wire protocol (package fedft.proto)."""
