"""The schema contract: what this build's writers keep in step with the readings, and what the
database requires of every writer (migration 0013 explains how the database enforces it).

A contract number stands for everything a writer must maintain in the transaction that writes
readings (today: the series catalog and the rollups). A migration that adds to it raises the
number the database requires; a server of an older contract then has its writes refused by the
database itself, with SQLSTATE 55W01, however old its code. This module declares the number in
every session of this build, reads what the database requires, and lowers or restores it.
"""

import re

import asyncpg

from timeseries_aggregation.errors import SchemaContractError

# What this build's writers maintain. Raise it with the migration that adds an obligation.
WRITER_CONTRACT = 1
# The session setting a writer declares its contract in (a custom setting: any session may set it).
CONTRACT_SETTING = "timeseries_aggregation.writer_contract"
# The SQLSTATE the database refuses a write of an older contract with.
CONTRACT_REFUSED_SQLSTATE = "55W01"
# What `schema allow-older-writers` sets: every writer may write, as before contracts.
ANY_WRITER = 0

SESSION_SETTINGS = {CONTRACT_SETTING: str(WRITER_CONTRACT)}
# The words of a refusal (migration 0013), with the contract required.
_REFUSAL = re.compile(r"requires writers of schema contract (\d+)")

# Citus checks deletes on the shards, in sessions of its own: SET LOCAL reaches them when Citus
# is told to pass SET LOCAL commands on.
DECLARE_ON_SHARDS = (
    f"SET LOCAL citus.propagate_set_commands = 'local'; SET LOCAL {CONTRACT_SETTING} = '{WRITER_CONTRACT}'"
)


async def required_contract(connection: asyncpg.Connection) -> int | None:
    """The contract the database requires of writers; None before migration 0013."""
    exists = await connection.fetchval("SELECT to_regproc('timeseries_required_writer_contract') IS NOT NULL")
    if not exists:
        return None
    required: int = await connection.fetchval("SELECT timeseries_required_writer_contract()")
    return required


async def set_required_contract(connection: asyncpg.Connection, contract: int) -> None:
    """Require `contract` of every writer from now on, once the writes under way have ended.

    The SHARE lock waits for every transaction writing readings and holds new ones back until
    this one commits: no write of a contract that is no longer enough commits after it.
    """
    async with connection.transaction():
        await connection.execute("LOCK TABLE readings IN SHARE MODE")
        # A function's body is a constant; Citus passes its replacement on to the workers.
        await connection.execute(
            "CREATE OR REPLACE FUNCTION timeseries_required_writer_contract() RETURNS integer "
            f"LANGUAGE sql STABLE AS $$ SELECT {int(contract)} $$"
        )
        if contract == ANY_WRITER:
            # Older builds do not keep rollups: from now on every answer reads the readings,
            # and no stream switches a series' rollups on (rollups.py) until this build's
            # contract is required again and a repair has rolled the series up anew.
            await connection.execute("UPDATE series SET rolled_up = false WHERE rolled_up")


def is_contract_refusal(error: BaseException) -> bool:
    """Whether the database refused a write for its schema contract. Citus relays an error a
    shard raised during a COPY as an internal error (XX000): then its words tell."""
    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate == CONTRACT_REFUSED_SQLSTATE:
        return True
    return sqlstate == "XX000" and _REFUSAL.search(str(error)) is not None


def contract_error(refusal: BaseException) -> SchemaContractError:
    """The error for a write the database refused (is_contract_refusal)."""
    found = _REFUSAL.search(str(refusal))
    required = found.group(1) if found else "newer than this"
    return SchemaContractError(
        f"the database's schema is newer than this server: it requires schema contract {required} "
        f"of writers, this server keeps contract {WRITER_CONTRACT}; nothing of this call was "
        "written: upgrade the server (or, for a rollback, see `timeseries-aggregation schema`)"
    )


async def require_this_contract(connection: asyncpg.Connection) -> int | None:
    """Require this build's contract again where it was lowered (for a rollback); returns what
    was required before when it changed anything, else None."""
    required = await required_contract(connection)
    if required is None or required >= WRITER_CONTRACT:
        return None
    await set_required_contract(connection, WRITER_CONTRACT)
    return required
