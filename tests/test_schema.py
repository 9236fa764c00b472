"""Migrations: applied once, recorded, and safe when replicas start together."""

import asyncio

import asyncpg
import pytest

from tests.support import eventually
from timeseries_aggregation.storage.schema import MIGRATION_LOCK_KEY, apply_migrations, migration_scripts

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


async def test_an_index_build_cut_short_is_dropped_and_built_again(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await apply_migrations(connection)
        # With TimescaleDB, migration 0004 made query_history a hypertable.
        if await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"
        ):
            pytest.skip("query_history is a hypertable here, which refuses CONCURRENTLY")
        # The state a build that failed half way leaves: the migration not recorded, and an
        # invalid index of its name (this build fails on the duplicate key it meets).
        version = "0012_query_history_by_caller"
        await connection.execute("DELETE FROM schema_migrations WHERE version = $1", version)
        await connection.execute("DROP INDEX query_history_by_caller")
        await connection.execute(
            "INSERT INTO query_history (series_id, granularity, time_zone, page_size, continued_page, "
            "bucket_count, caller_name) "
            "SELECT 'm', 'hourly', 'UTC', 10, false, 0, 'reader' FROM generate_series(1, 2)"
        )
        with pytest.raises(asyncpg.UniqueViolationError):
            await connection.execute(
                "CREATE UNIQUE INDEX CONCURRENTLY query_history_by_caller ON query_history (caller_name)"
            )
        await connection.execute("SET statement_timeout = '5s'")
        assert await apply_migrations(connection) == [version]
        index = await connection.fetchrow(
            "SELECT indisvalid, pg_get_indexdef(indexrelid) AS definition FROM pg_index "
            "WHERE indexrelid = 'query_history_by_caller'::regclass"
        )
        assert index["indisvalid"]
        assert index["definition"].endswith("USING btree (caller_name, id)")
        # The session is as the pool lent it: its statement timeout and no lock kept.
        assert await connection.fetchval("SHOW statement_timeout") == "5s"
        assert await connection.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
    finally:
        await connection.close()


async def test_an_index_built_but_not_recorded_counts_as_built(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await apply_migrations(connection)
        # The replica stopped between the build and recording it.
        version = "0012_query_history_by_caller"
        await connection.execute("DELETE FROM schema_migrations WHERE version = $1", version)
        assert await apply_migrations(connection) == [version]
        assert await connection.fetchval("SELECT to_regclass('query_history_by_caller') IS NOT NULL")
    finally:
        await connection.close()


async def test_a_replica_waiting_for_the_lock_does_not_hold_up_an_index_build(database_url: str) -> None:
    builder, waiter = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        await apply_migrations(builder)
        # A plain table of its own: with TimescaleDB, query_history is a hypertable, which
        # refuses CONCURRENTLY; the wait below is the same for any concurrent build.
        await builder.execute("CREATE TABLE concurrent_build_probe (value integer)")
        # The builder holds the migration lock, as a replica building an index does, and the
        # other replica starts meanwhile. A concurrent build waits for every transaction older
        # than itself: one that waited for the lock inside a statement would wait for it in turn.
        await builder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        waiter_pid = waiter.get_server_pid()
        waiting = asyncio.create_task(apply_migrations(waiter))

        async def asked_for_the_lock() -> None:
            query = await builder.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", waiter_pid)
            assert "advisory" in query

        await eventually(asked_for_the_lock)
        await builder.execute(
            "CREATE INDEX CONCURRENTLY probe_value ON concurrent_build_probe (value)", timeout=8
        )
        await builder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        assert await asyncio.wait_for(waiting, timeout=8) == []
    finally:
        await builder.close()
        await waiter.close()
