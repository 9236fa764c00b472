"""What the database under the service can do: plain PostgreSQL, TimescaleDB or Citus.

Detected once, when the database is opened (after the migrations, which decide what the tables
become), and read by the server, the bench and the tests through flags named for behaviour, the
way asyncpg's `ServerCapabilities` serves its connection.
"""

from dataclasses import dataclass

import asyncpg

from timeseries_aggregation.wording import counted

_EXTENSIONS = """
    SELECT current_setting('server_version') AS server_version,
           (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb') AS timescaledb,
           (SELECT extversion FROM pg_extension WHERE extname = 'citus') AS citus
"""
_TIMESCALEDB = """
    SELECT EXISTS (
               SELECT 1 FROM timescaledb_information.hypertables
               WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings'
           ) AS readings_hypertable,
           EXISTS (
               SELECT 1 FROM timescaledb_information.hypertables
               WHERE hypertable_schema = current_schema() AND hypertable_name = 'query_history'
           ) AS history_hypertable,
           coalesce((
               SELECT bool_or(compression_enabled) FROM timescaledb_information.hypertables
               WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings'
           ), false) AS compression,
           -- Policies and jobs are part of TimescaleDB's community edition, not the Apache-2-only one.
           current_setting('timescaledb.license', true) = 'timescale' AS job_scheduler
"""
_CITUS_WORKERS = """
    SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'readings'::regclass)
           THEN (SELECT count(*) FROM citus_get_active_worker_nodes()) ELSE 0 END
"""


@dataclass(frozen=True, slots=True)
class EngineCapabilities:
    """What the database can do, as the migrations left it; one record per opened database."""

    server_version: str
    # Versions of the extensions installed in the database, None where absent (for labels only).
    timescaledb_version: str | None = None
    citus_version: str | None = None
    # readings is a TimescaleDB hypertable: chunks to drop, a decompression cap on writes.
    hypertables: bool = False
    # query_history is a hypertable too (migration 0004), so expired entries go by the chunk.
    history_hypertable: bool = False
    # Chunks of readings can be compressed (compression enabled on the hypertable, migration 0006).
    compression: bool = False
    # TimescaleDB's job scheduler and its policies (community edition) run jobs in the database.
    job_scheduler: bool = False
    # Citus workers that readings is distributed over; 0 where readings is a local table.
    worker_count: int = 0

    @property
    def distributed(self) -> bool:
        """readings is a Citus distributed table: statements run as distributed steps on workers."""
        return self.worker_count > 0

    @property
    def routes_copies(self) -> bool:
        """A COPY routes its rows to chunks or shards and pays per target: larger COPYs pay."""
        return self.hypertables or self.distributed

    @property
    def decompresses_on_write(self) -> bool:
        """Writes into compressed chunks decompress them, up to a cap per transaction."""
        return self.hypertables

    @property
    def copy_relays_worker_errors(self) -> bool:
        """A worker's error during a COPY reaches the client without its SQLSTATE (Citus)."""
        return self.distributed

    @property
    def copy_conflicts_as_deadlocks(self) -> bool:
        """Two COPYs writing the same new keys on different workers are cancelled as a
        distributed deadlock rather than as a unique violation (Citus)."""
        return self.distributed

    @property
    def locks_series_on_workers(self) -> bool:
        """Writers must also lock each series, because workers apply a stream's rows (Citus)."""
        return self.distributed

    @property
    def reads_and_writes_in_one_statement(self) -> bool:
        """A statement reading readings and writing a local table runs as one plain plan
        (on Citus it becomes several distributed steps with intermediate results)."""
        return not self.distributed

    @property
    def triggers_on_readings(self) -> bool:
        """Triggers can be put on the tables (Citus keeps them off distributed tables)."""
        return not self.distributed

    @property
    def plans_as_plain_postgresql(self) -> bool:
        """Plans scan readings as one plain table (neither chunks nor shards)."""
        return not self.hypertables and not self.distributed

    def describe(self) -> str:
        """What the start-up log line says of the engine."""
        return (
            f"PostgreSQL {self.server_version}, TimescaleDB "
            + ("enabled" if self.hypertables else "not available (plain tables)")
            + ", Citus "
            + (
                f"enabled (readings distributed over {counted(self.worker_count, 'worker')})"
                if self.distributed
                else "not in use"
            )
        )


async def detect_capabilities(connection: asyncpg.Connection) -> EngineCapabilities:
    """What the database behind the connection can do, after the migrations have run."""
    extensions = await connection.fetchrow(_EXTENSIONS)
    timescaledb = None
    if extensions["timescaledb"]:
        timescaledb = await connection.fetchrow(_TIMESCALEDB)
    worker_count = 0
    if extensions["citus"]:
        worker_count = await connection.fetchval(_CITUS_WORKERS)
    return EngineCapabilities(
        server_version=extensions["server_version"],
        timescaledb_version=extensions["timescaledb"],
        citus_version=extensions["citus"],
        hypertables=bool(timescaledb and timescaledb["readings_hypertable"]),
        history_hypertable=bool(timescaledb and timescaledb["history_hypertable"]),
        compression=bool(timescaledb and timescaledb["compression"]),
        job_scheduler=bool(timescaledb and timescaledb["job_scheduler"]),
        worker_count=worker_count,
    )
