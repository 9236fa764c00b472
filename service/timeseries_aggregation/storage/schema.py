"""Versioned SQL migrations shipped in the package, each applied once per database."""

import logging
from importlib import resources

import asyncpg

logger = logging.getLogger(__name__)

# Any fixed number shared by all replicas: the advisory lock that serialises migrations.
_MIGRATION_LOCK_KEY = 0x7453_6167  # "tSag"


def migration_scripts() -> list[tuple[str, str]]:
    """(version, sql) for every shipped migration, in version order."""
    folder = resources.files("timeseries_aggregation.storage") / "migrations"
    scripts = [
        (entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return sorted(scripts)


async def newest_migration(connection: asyncpg.Connection) -> str | None:
    """The version of the newest migration applied, or None on a database without any."""
    version: str | None = await connection.fetchval("SELECT max(version) FROM schema_migrations")
    return version


async def apply_migrations(connection: asyncpg.Connection) -> list[str]:
    """Apply the migrations this database lacks; returns the versions applied.

    Runs in one transaction under an advisory lock, so replicas starting together
    apply each migration exactly once and never see a half-migrated schema.
    """
    applied_now: list[str] = []
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_KEY)
        await connection.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version text PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        done = {row["version"] for row in await connection.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_scripts():
            if version in done:
                continue
            await connection.execute(sql)
            await connection.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied_now.append(version)
            logger.info("applied migration %s", version)
    return applied_now
