"""The operator's schema commands, run against the database directly: what the schema requires
of writers, and lowering that for a rollback to an older build (README: Upgrading)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TextIO

import asyncpg

from timeseries_aggregation.errors import DatabaseUnavailableError
from timeseries_aggregation.storage.schema import newest_migration
from timeseries_aggregation.storage.writer_contract import (
    ANY_WRITER,
    WRITER_CONTRACT,
    required_contract,
    set_required_contract,
)


@asynccontextmanager
async def _connected(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of its own; a failure is named by its kind only (the driver's words may
    quote the URL)."""
    try:
        connection = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise DatabaseUnavailableError(f"cannot connect to the database ({type(error).__name__})") from None
    try:
        yield connection
    finally:
        await connection.close()


async def schema_status(url: str, out: TextIO) -> None:
    """Print the newest migration applied, the contract required of writers and this build's."""
    async with _connected(url) as connection:
        newest = await newest_migration(connection)
        required = await required_contract(connection)
    print(f"newest migration applied: {newest or 'none'}", file=out)
    if required is None:
        print("schema contract required of writers: none (the schema predates contracts)", file=out)
    elif required == ANY_WRITER:
        print("schema contract required of writers: none (older writers allowed for a rollback)", file=out)
    else:
        print(f"schema contract required of writers: {required}", file=out)
    print(f"schema contract this build keeps: {WRITER_CONTRACT}", file=out)


async def allow_older_writers(url: str, out: TextIO) -> bool:
    """Let servers of any build write, for a rollback; False where the schema has no contract."""
    async with _connected(url) as connection:
        if await required_contract(connection) is None:
            print("the schema predates contracts: every build may write already", file=out)
            return False
        await set_required_contract(connection, ANY_WRITER)
    print(
        "servers of any build may write now. Their writes do not keep the rollups and the series "
        "catalog in step: the first server of this build to start requires its contract again, "
        "and after it has, run the checks of README's Upgrading section.",
        file=out,
    )
    return True
