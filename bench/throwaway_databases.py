"""Throwaway databases on every engine the tests and the benchmarks run on.

Plain PostgreSQL and TimescaleDB need only CREATE DATABASE. A Citus coordinator with workers
needs what a DBA does for each new database there: the extension on every node and the nodes
registered, because Citus keeps its node list per database. The service's migrations do the
rest (distributing readings) when it starts on the new database.

The benchmarks import this module by name (their folder is on sys.path when they run); the
tests as bench.throwaway_databases (pytest puts the repository root on theirs).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


def with_node(url: str, host: str, port: int) -> str:
    """The same URL (user, password, database) pointing at another server."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=f"{credentials}@{address}" if credentials else address))


@dataclass(frozen=True)
class CitusCluster:
    """The nodes of a Citus coordinator's cluster, as its own database registers them."""

    coordinator: tuple[str, int]
    workers: list[tuple[str, int]]


async def detect_citus(server_url: str) -> CitusCluster | None:
    """The cluster when the server is a Citus coordinator with active workers, else None."""
    admin = await asyncpg.connect(server_url)
    try:
        if not await has_extension(admin, "citus"):
            return None
        workers = await admin.fetch(
            "SELECT node_name, node_port FROM citus_get_active_worker_nodes() ORDER BY 2"
        )
        coordinator = await admin.fetchrow("SELECT nodename, nodeport FROM pg_dist_node WHERE groupid = 0")
    finally:
        await admin.close()
    if not workers or coordinator is None:
        return None
    return CitusCluster(
        coordinator=(coordinator["nodename"], coordinator["nodeport"]),
        workers=[(row["node_name"], row["node_port"]) for row in workers],
    )


async def _set_up_citus(url: str, cluster: CitusCluster) -> None:
    """The extension on every node, then the coordinator and the workers registered.

    The coordinator's CREATE DATABASE has created the database on the workers too
    (citus.enable_create_database_propagation).
    """
    for host, port in cluster.workers:
        worker = await asyncpg.connect(with_node(url, host, port))
        try:
            await worker.execute("CREATE EXTENSION IF NOT EXISTS citus")
        finally:
            await worker.close()
    coordinator = await asyncpg.connect(url)
    try:
        await coordinator.execute("CREATE EXTENSION IF NOT EXISTS citus")
        await coordinator.execute("SELECT citus_set_coordinator_host($1, $2)", *cluster.coordinator)
        for host, port in cluster.workers:
            await coordinator.execute("SELECT citus_add_node($1, $2)", host, port)
    finally:
        await coordinator.close()


async def _drop_database(server_url: str, name: str, propagate: bool = True) -> None:
    """Drop a database on the server at server_url, retrying while it is still in use."""
    settings = {} if propagate else {"citus.enable_create_database_propagation": "off"}
    admin = await asyncpg.connect(server_url, server_settings=settings)
    try:
        # FORCE waits 5 s for the sessions it ends; a Citus maintenance daemon may outlast that.
        deadline = time.monotonic() + 30.0
        while True:
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except asyncpg.ObjectInUseError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def create_database(server_url: str, name: str, cluster: CitusCluster | None) -> str:
    """A new database `name` on the server, set up for the cluster if any; its URL."""
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(server_url, name)
    if cluster is not None:
        try:
            await _set_up_citus(url, cluster)
        except BaseException:
            await drop_database(server_url, name, cluster)
            raise
    return url


async def drop_database(server_url: str, name: str, cluster: CitusCluster | None) -> None:
    if cluster is None:
        await _drop_database(server_url, name)
        return
    # Each node drops its own copy: Citus's propagated drop fails when a worker's maintenance
    # daemon is still in the database, and a retry of it then fails on the workers it has
    # already dropped the database on.
    for host, port in [cluster.coordinator, *cluster.workers]:
        await _drop_database(with_node(server_url, host, port), name, propagate=False)


@asynccontextmanager
async def throwaway_database(server_url: str, name: str, cluster: CitusCluster | None) -> AsyncIterator[str]:
    """A new database `name` on the server (on each node of `cluster`), dropped afterwards."""
    url = await create_database(server_url, name, cluster)
    try:
        yield url
    finally:
        await drop_database(server_url, name, cluster)


async def has_extension(connection: asyncpg.Connection, name: str) -> bool:
    """Whether the extension is installed in the connection's database."""
    found: bool = await connection.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = $1)", name
    )
    return found
