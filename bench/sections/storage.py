"""Section 6: bytes per stored reading, and what compressing every chunk takes."""

from __future__ import annotations

import time
from datetime import timedelta

import asyncpg
from data import QUARTER_HOURLY_LOAD, write_readings
from engine import STORED_BYTES, Engine, settle
from figures import rate
from report import Results, Row


async def storage_section(
    results: Results, connection: asyncpg.Connection, engine: Engine, meters: int, days: int
) -> None:
    await connection.execute("TRUNCATE readings")
    await write_readings(connection, QUARTER_HOURLY_LOAD, meters, timedelta(days=days), timeout=3600)
    await connection.execute("VACUUM ANALYZE readings", timeout=3600)
    readings: int = await connection.fetchval("SELECT count(*) FROM readings")
    stored: int = await connection.fetchval(STORED_BYTES[engine.key])
    label = f"{meters:,} meters x {days} days of quarter-hourly readings ({readings:,})"
    if engine.compressed:
        started = time.perf_counter()
        await settle(connection, engine)
        seconds = time.perf_counter() - started
        uncompressed, stored = stored, await connection.fetchval(STORED_BYTES[engine.key])
        results.add(
            Row(
                "6 storage",
                f"compressing every chunk of {readings:,} readings",
                f"{seconds:.1f} s ({rate(readings, seconds)}); "
                f"{uncompressed / readings:.1f} bytes per reading before",
                "",
                f"{stored / uncompressed:.2f}",
            )
        )
    results.add(
        Row(
            "6 storage",
            f"bytes per reading (table, indexes, TOAST), {label}",
            f"{stored / readings:.1f} bytes",
            summary="storage, bytes per reading",
        )
    )
    await connection.execute("TRUNCATE readings")
