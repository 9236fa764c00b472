"""Power-consumption readings in, per-hour/day/month aggregates out, over gRPC."""
