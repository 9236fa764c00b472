"""Migrations: applied once, recorded, and safe when replicas start together; as long as they
take, reported while they run, and rolled back when they fail."""

import asyncio
import json
import logging
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.server_process import free_port, run_to_exit, server_env, start, stop, wait_serving
from tests.support import eventually, the_one_error
from timeseries_aggregation.storage.schema import (
    MIGRATION_LOCK_KEY,
    MigrationFailedError,
    MigrationPacing,
    apply_migrations,
    migration_scripts,
)

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


# A statement timeout far below what the migrations below take, in the client and on the server,
# as the service's pools set up theirs (storage/database.py).
TINY_TIMEOUT_SECONDS = 0.5
# Progress lines and lock retries often enough for a test to see them.
QUICK = MigrationPacing(progress_seconds=0.2, lock_timeout_seconds=0.2, first_retry_seconds=0.3)


async def connect_like_the_pool(url: str) -> asyncpg.Connection:
    connection: asyncpg.Connection = await asyncpg.connect(
        url,
        command_timeout=TINY_TIMEOUT_SECONDS,
        server_settings={"statement_timeout": str(int(TINY_TIMEOUT_SECONDS * 1000))},
    )
    return connection


async def advisory_locks(connection: asyncpg.Connection) -> int:
    count: int = await connection.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
    return count


async def test_a_migration_outlasts_the_statement_timeout_and_reports_progress(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="timeseries_aggregation.storage.schema")
    connection = await connect_like_the_pool(database_url)
    try:
        slow = ("9001_slow", "SELECT pg_sleep(1); CREATE TABLE slow_probe (value integer)")
        applied = await apply_migrations(connection, [*migration_scripts(), slow], QUICK)
        assert applied == [version for version, _ in migration_scripts()] + ["9001_slow"]
        assert await connection.fetchval("SELECT to_regclass('slow_probe') IS NOT NULL")
        assert any(
            record.getMessage().startswith("migration 9001_slow running for ") for record in caplog.records
        )
        # The session is as the pool lent it: its limits, and no lock kept.
        assert await connection.fetchval("SHOW statement_timeout") == "500ms"
        assert await connection.fetchval("SHOW lock_timeout") == "0"
        assert await advisory_locks(connection) == 0
    finally:
        await connection.close()


async def test_a_replica_waits_for_another_ones_migration_as_long_as_it_takes(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="timeseries_aggregation.storage.schema")
    holder, waiter = await asyncpg.connect(database_url), await connect_like_the_pool(database_url)
    try:
        # Another replica migrating: it holds the lock and runs a long statement.
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        migrating = asyncio.create_task(holder.execute("SELECT pg_sleep(1.5) AS another_replicas_migration"))
        waiting = asyncio.create_task(apply_migrations(waiter, pacing=QUICK))

        async def reported_who_it_waits_for() -> None:
            messages = [record.getMessage() for record in caplog.records]
            assert any(
                message.startswith(f"waiting for another server's migration (pid {holder.get_server_pid()}, ")
                and "another_replicas_migration" in message
                for message in messages
            ), messages

        await eventually(reported_who_it_waits_for, within=5)
        await migrating  # longer than the waiter's statement timeout
        assert not waiting.done()
        await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        applied = await asyncio.wait_for(waiting, timeout=30)
        assert applied == [version for version, _ in migration_scripts()]
    finally:
        await holder.close()
        await waiter.close()


async def test_a_failed_migration_is_rolled_back_and_tried_again_at_the_next_start(database_url: str) -> None:
    connection = await connect_like_the_pool(database_url)
    try:
        await apply_migrations(connection)
        before = [("9001_first", "CREATE TABLE first_probe (value integer)")]
        failing = ("9002_failing", "CREATE TABLE second_probe (value integer); SELECT 1 / 0")
        with pytest.raises(MigrationFailedError) as failure:
            await apply_migrations(connection, [*migration_scripts(), *before, failing])
        assert failure.value.version == "9002_failing"
        message = str(failure.value)
        assert message.startswith("migration 9002_failing failed (DivisionByZeroError: division by zero); ")
        assert "rolled back" in message
        # Both migrations of the transaction are undone, and the lock is released.
        assert await connection.fetchval("SELECT to_regclass('first_probe') IS NULL")
        assert await connection.fetchval("SELECT to_regclass('second_probe') IS NULL")
        assert await connection.fetchval("SELECT count(*) FROM schema_migrations WHERE version > '9'") == 0
        assert await advisory_locks(connection) == 0
        fixed = ("9002_failing", "CREATE TABLE second_probe (value integer)")
        assert await apply_migrations(connection, [*migration_scripts(), *before, fixed]) == [
            "9001_first",
            "9002_failing",
        ]
    finally:
        await connection.close()


async def test_a_migration_waiting_for_a_table_lets_the_queries_behind_it_through(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="timeseries_aggregation.storage.schema")
    connections = [await asyncpg.connect(database_url) for _ in range(3)]
    reader, holder, migrator = connections
    try:
        await apply_migrations(migrator)
        await reader.execute("CREATE TABLE lock_probe (value integer); INSERT INTO lock_probe VALUES (1)")
        # A query of a replica still serving holds the table while the migration wants it alone.
        holding = holder.transaction()
        await holding.start()
        await holder.fetchval("SELECT count(*) FROM lock_probe")
        alter = ("9001_alter", "ALTER TABLE lock_probe ADD COLUMN note text")
        migrating = asyncio.create_task(apply_migrations(migrator, [*migration_scripts(), alter], QUICK))
        migrator_pid = migrator.get_server_pid()

        async def tried_to_alter() -> None:
            query = await reader.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", migrator_pid)
            assert "ALTER TABLE lock_probe" in query

        await eventually(tried_to_alter, within=5)
        # A query that comes after the migration's ALTER is not queued behind it until the
        # first query's transaction ends.
        assert await asyncio.wait_for(reader.fetchval("SELECT count(*) FROM lock_probe"), timeout=5) == 1
        await holding.commit()
        assert await asyncio.wait_for(migrating, timeout=30) == ["9001_alter"]
        retry = "migration 9001_alter waited 0.2 s for a lock held by running queries"
        assert any(record.getMessage().startswith(retry) for record in caplog.records)
    finally:
        for connection in connections:
            await connection.close()


async def test_a_migration_that_never_finds_its_table_free_waits_for_it_in_the_end(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="timeseries_aggregation.storage.schema")
    connections = [await asyncpg.connect(database_url) for _ in range(3)]
    observer, holder, migrator = connections
    try:
        await apply_migrations(migrator)
        await observer.execute("CREATE TABLE lock_probe (value integer)")
        # An ingest stream is one transaction: while streams overlap, the table is never free.
        holding = holder.transaction()
        await holding.start()
        await holder.execute("INSERT INTO lock_probe VALUES (1)")
        alter = ("9001_alter", "ALTER TABLE lock_probe ADD COLUMN note text")
        pacing = MigrationPacing(lock_timeout_seconds=0.1, first_retry_seconds=0.1, lock_attempts=3)
        migrating = asyncio.create_task(apply_migrations(migrator, [*migration_scripts(), alter], pacing))
        migrator_pid = migrator.get_server_pid()

        async def waits_in_the_lock_queue() -> None:
            messages = [record.getMessage() for record in caplog.records]
            assert any(message.endswith("(attempt 1 of 3)") for message in messages), messages
            assert any("trying again in 0.2 s without a lock timeout" in message for message in messages)
            waiting = await observer.fetchval(
                "SELECT wait_event_type = 'Lock' AND query LIKE 'ALTER TABLE lock_probe%' "
                "FROM pg_stat_activity WHERE pid = $1",
                migrator_pid,
            )
            assert waiting

        await eventually(waits_in_the_lock_queue, within=5)
        await holding.commit()
        assert await asyncio.wait_for(migrating, timeout=30) == ["9001_alter"]
    finally:
        for connection in connections:
            await connection.close()


async def test_serve_reports_a_failed_migration_in_one_line_and_exits_1(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await apply_migrations(connection)
        # Someone added one of 0011's columns by hand, and the two newest migrations are to come.
        await connection.execute("DELETE FROM schema_migrations WHERE version >= '0011'")
        await connection.execute("DROP INDEX query_history_by_caller")
        await connection.execute("ALTER TABLE query_history DROP COLUMN selector_omitted_series_ids")
        await connection.execute("ALTER TABLE query_history DROP COLUMN selector_omitted_labels")
        state = """
            SELECT (SELECT array_agg(version ORDER BY version) FROM schema_migrations),
                   (SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
                    WHERE attrelid = 'query_history'::regclass AND attnum > 0 AND NOT attisdropped),
                   to_regclass('query_history_by_caller')
        """
        before = await connection.fetchrow(state)
        result = await run_to_exit(server_env(database_url, free_port()))
        assert result.returncode == 1
        message = the_one_error(result)
        assert message.startswith(
            "migration 0011_query_history_truncation failed (DuplicateColumnError: column "
            '"selector_truncated" of relation "query_history" already exists); it was rolled back, '
            "so the schema is as it was before."
        ), message
        assert "start the server again" in message
        assert await connection.fetchrow(state) == before
        assert await advisory_locks(connection) == 0
    finally:
        await connection.close()


async def test_serve_reports_a_database_user_that_cannot_create_the_schema_in_one_line(
    database_url: str,
) -> None:
    role, password = f"no_create_{uuid.uuid4().hex[:8]}", "canary-secret-9d2c"
    admin = await asyncpg.connect(database_url)
    try:
        # Since PostgreSQL 15 only the database's owner may create tables in its public schema.
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        parts = urlsplit(database_url)
        url = urlunsplit(parts._replace(netloc=f"{role}:{password}@{parts.netloc.rsplit('@', 1)[-1]}"))
        result = await run_to_exit(server_env(url, free_port()))
        assert result.returncode == 1
        assert the_one_error(result) == (
            "cannot read which migrations the database has (InsufficientPrivilegeError: permission "
            "denied for schema public): check that the database user may create tables in the "
            "database and read schema_migrations"
        )
        assert password not in result.stderr
        assert await admin.fetchval("SELECT to_regclass('schema_migrations') IS NULL")
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


def log_entries(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


async def test_replicas_starting_together_on_an_empty_database_all_serve(
    database_url: str, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> None:
    ports = [free_port() for _ in range(3)]
    for index, port in enumerate(ports):
        # A statement timeout shorter than the migrations may take on a slow machine or engine.
        env = server_env(database_url, port, STATEMENT_TIMEOUT_SECONDS=str(TINY_TIMEOUT_SECONDS))
        cleanup.append(start(env, tmp_path / f"replica-{index}.log"))
    for port in ports:
        await wait_serving(port)
    applied = [
        str(entry["message"]).removeprefix("applied migration ")
        for index in range(3)
        for entry in log_entries(tmp_path / f"replica-{index}.log")
        if str(entry["message"]).startswith("applied migration ")
    ]
    assert sorted(applied) == [version for version, _ in migration_scripts()]
    for process in cleanup:
        assert await stop(process) == 0
