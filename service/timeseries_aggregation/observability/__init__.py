"""Metrics, structured logs and access logs: what operators see of a running server."""
