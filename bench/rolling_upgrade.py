"""A rolling upgrade of three replicas and a rollback, with a client writing and asking all along:
every answer compared with plain SQL over the readings at that moment.

    .venv/bin/python bench/rolling_upgrade.py DATABASE_URL [--older f662c15] [--seconds 8]

DATABASE_URL names an empty database (this script's own: it writes meters and may lower what the
schema requires of writers). The older build's code comes from this repository's history
(`git archive`), run unchanged as its own server processes on loopback ports.

Phases: three replicas of the older build; each replaced in turn by this build (the first
migrates); a rollback (`schema allow-older-writers`, one replica back to the older build); and
the upgrade again (this build on it, which requires its contract again, then `catalog rebuild
--all`). In each phase, for `--seconds`, the client streams a day of quarter-hourly readings
of a meter to a replica chosen at random, then asks every replica that meter's daily totals and
compares each answer with plain SQL run right after it (the client is the only writer, so
nothing changes in between). Prints, per phase, the writes by replica build and status, and the
answers compared and wrong; exits 1 when any answer was wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc

REPOSITORY = Path(__file__).resolve().parent.parent
START = datetime(2025, 1, 1, tzinfo=UTC)
METERS = [f"meter-{number}" for number in range(6)]
DAYS = 20
_PLAIN_DAILY = """
    SELECT sum(quantity_kwh) FROM readings WHERE series_id = $1 AND time >= $2 AND time < $3
    GROUP BY date_trunc('day', time AT TIME ZONE 'UTC') ORDER BY date_trunc('day', time AT TIME ZONE 'UTC')
"""


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


@dataclass
class Replica:
    name: str
    build: str  # "older" or "this"
    port: int
    process: subprocess.Popen[bytes]


@dataclass
class Phase:
    name: str
    writes: Counter[str] = field(default_factory=Counter)
    answers: int = 0
    wrong: int = 0
    errors: Counter[str] = field(default_factory=Counter)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _extract(commit: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(REPOSITORY), "archive", commit, "service", "generated"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


async def _serving(port: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 60
        while True:
            try:
                await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                return
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)


async def _start(name: str, build: str, database_url: str, older_code: Path, logs: Path) -> Replica:
    port = _free_port()
    environment = {
        **os.environ,
        "TIMESERIES_AGGREGATION_DATABASE_URL": database_url,
        "TIMESERIES_AGGREGATION_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "TIMESERIES_AGGREGATION_AUTH_MODE": "none",
    }
    if build == "older":
        environment["PYTHONPATH"] = f"{older_code / 'service'}:{older_code / 'generated'}"
    with (logs / f"{name}-{build}-{port}.log").open("wb") as log:
        process = subprocess.Popen(  # noqa: ASYNC220 (starting it does not wait for it)
            [sys.executable, "-m", "timeseries_aggregation", "serve"], env=environment, stdout=log, stderr=log
        )
    replica = Replica(name, build, port, process)
    await _serving(port)
    return replica


async def _stop(replica: Replica) -> None:
    replica.process.send_signal(signal.SIGTERM)
    await asyncio.to_thread(replica.process.wait, 30)


def _day_of_readings(meter: str, day: int, value: float) -> pb.IngestReadingsRequest:
    first = START + timedelta(days=day)
    stamps = [int((first + timedelta(minutes=15 * number)).timestamp() * 1_000_000) for number in range(96)]
    return pb.IngestReadingsRequest(
        series_readings=[
            pb.SeriesReadings(series_id=meter, time_unix_micros=stamps, quantity_kwh=[value] * len(stamps))
        ]
    )


async def _round(replicas: list[Replica], sql: asyncpg.Connection, rng: random.Random, phase: Phase) -> None:
    meter, day, value = rng.choice(METERS), rng.randrange(DAYS), rng.randint(1, 64) / 8
    writer = rng.choice(replicas)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{writer.port}") as channel:
        try:
            await pb_grpc.TimeseriesAggregationServiceStub(channel).IngestReadings(
                iter([_day_of_readings(meter, day, value)]), timeout=30
            )
            phase.writes[f"{writer.build} OK"] += 1
        except grpc.aio.AioRpcError as error:
            phase.writes[f"{writer.build} {error.code().name}"] += 1
    for replica in replicas:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{replica.port}") as channel:
            try:
                answer = await pb_grpc.TimeseriesAggregationServiceStub(channel).QueryAggregates(
                    pb.QueryAggregatesRequest(
                        series_id=meter,
                        granularity=pb.GRANULARITY_DAY_OF_MONTH,
                        start_time=_timestamp(START),
                        end_time=_timestamp(START + timedelta(days=DAYS)),
                    ),
                    timeout=30,
                )
            except grpc.aio.AioRpcError as error:
                phase.errors[f"{replica.build} {error.code().name}"] += 1
                continue
        plain = [row[0] for row in await sql.fetch(_PLAIN_DAILY, meter, START, START + timedelta(days=DAYS))]
        phase.answers += 1
        if [bucket.total_quantity_kwh for bucket in answer.buckets] != plain:
            phase.wrong += 1


async def _run_phase(
    name: str, replicas: list[Replica], sql: asyncpg.Connection, rng: random.Random, seconds: float
) -> Phase:
    phase = Phase(name)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await _round(replicas, sql, rng, phase)
    writes = ", ".join(f"{key} {count}" for key, count in sorted(phase.writes.items()))
    errors = ", ".join(f"{key} {count}" for key, count in sorted(phase.errors.items())) or "none"
    print(
        f"{name:<46} writes: {writes}; answers compared {phase.answers}, wrong {phase.wrong}; "
        f"query errors: {errors}"
    )
    return phase


def _command(database_url: str, *arguments: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "timeseries_aggregation", *arguments],
        env={**os.environ, "TIMESERIES_AGGREGATION_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else f"exit {done.returncode}"


async def drill(database_url: str, older: str, seconds: float) -> int:
    rng = random.Random(20261206)
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory() as folder:
        older_code = _extract(older, Path(folder))
        logs = Path(folder) / "logs"
        logs.mkdir()
        replicas = [await _start(name, "older", database_url, older_code, logs) for name in "ABC"]
        sql = await asyncpg.connect(database_url)
        try:
            phases.append(await _run_phase(f"three replicas of {older}", replicas, sql, rng, seconds))
            for index, name in enumerate("ABC"):
                await _stop(replicas[index])
                replicas[index] = await _start(name, "this", database_url, older_code, logs)
                builds = "".join("n" if r.build == "this" else "o" for r in replicas)
                phases.append(
                    await _run_phase(f"{name} upgraded (A B C: {builds})", replicas, sql, rng, seconds)
                )
            print("schema allow-older-writers:", _command(database_url, "schema", "allow-older-writers")[:80])
            await _stop(replicas[2])
            replicas[2] = await _start("C", "older", database_url, older_code, logs)
            phases.append(await _run_phase(f"rolled back: C on {older} again", replicas, sql, rng, seconds))
            await _stop(replicas[2])
            replicas[2] = await _start("C", "this", database_url, older_code, logs)
            phases.append(
                await _run_phase("C upgraded again (contract required)", replicas, sql, rng, seconds)
            )
            print("catalog rebuild --all:", _command(database_url, "catalog", "rebuild", "--all"))
            phases.append(await _run_phase("after the repair", replicas, sql, rng, seconds))
            print("catalog check --all:", _command(database_url, "catalog", "check", "--all"))
        finally:
            await sql.close()
            for replica in replicas:
                if replica.process.poll() is None:
                    await _stop(replica)
    wrong = sum(phase.wrong for phase in phases)
    print(f"answers compared: {sum(phase.answers for phase in phases)}, wrong: {wrong}")
    return 1 if wrong else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("database_url")
    parser.add_argument("--older", default="f662c15", help="the older build's commit (default f662c15)")
    parser.add_argument("--seconds", type=float, default=8.0, help="how long each phase runs (default 8)")
    arguments = parser.parse_args()
    sys.exit(asyncio.run(drill(arguments.database_url, arguments.older, arguments.seconds)))


if __name__ == "__main__":
    main()
