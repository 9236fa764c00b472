"""The benchmarked engine, as the service's migrations left it, and what differs by engine:
how compressed runs settle after a load, how stored bytes are measured."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from timeseries_aggregation.storage.engine import detect_capabilities


@dataclass(frozen=True)
class Engine:
    """What the benchmarked database is, as the service's migrations left it."""

    key: str
    label: str
    compressed: bool


async def detect_engine(connection: asyncpg.Connection, compressed: bool) -> Engine:
    capabilities = await detect_capabilities(connection)
    if compressed and not capabilities.compression:
        raise SystemExit("--compressed needs TimescaleDB with compression (its community edition)")
    if capabilities.distributed:
        label = f"Citus {capabilities.citus_version}, {capabilities.worker_count} workers"
        return Engine("citus", label, False)
    if capabilities.hypertables:
        key = "timescaledb-compressed" if compressed else "timescaledb"
        label = f"TimescaleDB {capabilities.timescaledb_version}" + (
            ", every chunk compressed" if compressed else ""
        )
        return Engine(key, label, compressed)
    return Engine("postgresql", f"PostgreSQL {capabilities.server_version}", False)


# Every chunk compressed, including chunks that got new rows after an earlier compression.
COMPRESS_EVERY_CHUNK = "SELECT count(compress_chunk(chunk, true)) FROM show_chunks('readings') AS chunk"
STORED_BYTES = {
    "postgresql": "SELECT pg_total_relation_size('readings')",
    "timescaledb": "SELECT hypertable_size('readings')",
    "timescaledb-compressed": "SELECT hypertable_size('readings')",
    "citus": "SELECT citus_total_relation_size('readings')",
}


async def settle(connection: asyncpg.Connection, engine: Engine) -> None:
    """After a load: compress where the run is about compressed chunks, then fresh statistics."""
    if engine.compressed:
        await connection.execute(COMPRESS_EVERY_CHUNK, timeout=3600)
    await connection.execute("VACUUM ANALYZE readings", timeout=3600)
