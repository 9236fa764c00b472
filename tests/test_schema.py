"""Migrations: applied once, recorded, and safe when replicas start together."""

import asyncio

import asyncpg
import pytest

from timeseries_aggregation.storage.schema import apply_migrations, migration_scripts

# These apply the migrations themselves, to a database that has none.
pytestmark = pytest.mark.fresh_database


async def test_migrations_apply_once_even_concurrently(database_url: str) -> None:
    connections = [await asyncpg.connect(database_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(apply_migrations(connection) for connection in connections))
        versions = [version for version, _ in migration_scripts()]
        assert sorted(results, key=len) == [[], [], versions]
        recorded = await connections[0].fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [row["version"] for row in recorded] == versions
        assert await apply_migrations(connections[0]) == []
    finally:
        for connection in connections:
            await connection.close()


async def test_readings_table_is_keyed_by_series_and_time(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await apply_migrations(connection)
        key = await connection.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'readings'::regclass AND contype = 'p'"
        )
        assert key == 'PRIMARY KEY (series_id, "time")'
        # The migration enables TimescaleDB where the server offers it, as it does here.
        timescaledb = await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') "
            "AND current_setting('shared_preload_libraries') LIKE '%timescaledb%'"
        )
        if timescaledb:
            hypertables = await connection.fetchval(
                "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'readings'"
            )
            assert hypertables == 1
    finally:
        await connection.close()
