"""Rules of the service that need neither gRPC nor a database."""
