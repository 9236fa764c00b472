"""Soak of the rollups against a running service: loaders stream dense minute readings of a few
meters each (new keys and rewritten ones, in shuffled messages) and delete ranges, for a
bounded time; then every meter's daily totals are asked twice (once before the service knows
the meter is rolled up, once after) and compared with plain SQL over the readings.

    .venv/bin/python bench/rollup_soak.py TARGET DATABASE_URL [--seconds 240] [--loaders 4]

TARGET is the service's loopback address (authentication off); DATABASE_URL its database, for
the plain SQL. `timeseries-aggregation rollups check --all` against the same database then
compares every rollup row with the readings. Prints the calls' outcomes and the mismatches;
exits 1 when an answer differs.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc

METERS = [f"soak-{number}" for number in range(45)]
START = datetime(2025, 3, 1, tzinfo=UTC)
SPAN_MINUTES = 20 * 1440
MESSAGE_READINGS = 5_000

_PLAIN_SQL_DAYS = """
    SELECT date_trunc('day', time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', sum(quantity_kwh), count(*)
    FROM readings WHERE series_id = $1 GROUP BY 1 ORDER BY 1
"""


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _stream(rng: random.Random) -> list[pb.IngestReadingsRequest]:
    """Runs of minute readings of one to four meters, anywhere in the span, in shuffled messages."""
    messages = []
    for meter in rng.sample(METERS, rng.randint(1, 4)):
        first, count, step = rng.randint(0, SPAN_MINUTES), rng.randint(100, 12_000), rng.choice([1, 1, 5, 15])
        value = rng.randint(1, 64) / 8  # eighths: sums are exact in any order
        times = [int((START + timedelta(minutes=first + i * step)).timestamp() * 1e6) for i in range(count)]
        for part in range(0, count, MESSAGE_READINGS):
            chunk = times[part : part + MESSAGE_READINGS]
            messages.append(
                pb.IngestReadingsRequest(
                    series_readings=[
                        pb.SeriesReadings(
                            series_id=meter, time_unix_micros=chunk, quantity_kwh=[value] * len(chunk)
                        )
                    ]
                )
            )
    rng.shuffle(messages)
    return messages


async def _loader(
    stub: pb_grpc.TimeseriesAggregationServiceStub, seed: int, until: float, outcomes: Counter[str]
) -> None:
    rng = random.Random(seed)
    while time.monotonic() < until:
        deleting = rng.random() < 0.15
        try:
            if deleting:
                start = START + timedelta(minutes=rng.randint(0, SPAN_MINUTES))
                await stub.DeleteReadings(
                    pb.DeleteReadingsRequest(
                        selector=pb.SeriesSelector(series_ids=[rng.choice(METERS)]),
                        start_time=_timestamp(start),
                        end_time=_timestamp(start + timedelta(minutes=rng.randint(10, 3000))),
                    ),
                    timeout=60,
                )
            else:
                await stub.IngestReadings(iter(_stream(rng)), timeout=120)
            code = "OK"
        except grpc.aio.AioRpcError as error:
            code = error.code().name
        outcomes[f"{'DeleteReadings' if deleting else 'IngestReadings'} {code}"] += 1


async def _daily_totals(
    stub: pb_grpc.TimeseriesAggregationServiceStub, meter: str
) -> list[tuple[object, ...]]:
    buckets: list[pb.Bucket] = []
    token = ""
    while True:
        response = await stub.QueryAggregates(
            pb.QueryAggregatesRequest(
                series_id=meter, granularity=pb.GRANULARITY_DAY_OF_MONTH, page_size=1000, page_token=token
            )
        )
        buckets.extend(response.buckets)
        token = response.next_page_token
        if not token:
            return [
                (b.start_time.ToDatetime(tzinfo=UTC), b.total_quantity_kwh, b.reading_count) for b in buckets
            ]


async def soak(target: str, database_url: str, seconds: float, loaders: int) -> int:
    outcomes: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.TimeseriesAggregationServiceStub(channel)
        until = time.monotonic() + seconds
        await asyncio.gather(*(_loader(stub, seed, until, outcomes) for seed in range(loaders)))
        for outcome, count in sorted(outcomes.items()):
            print(f"{outcome}: {count}")
        sql = await asyncpg.connect(database_url)
        try:
            asked = differing = 0
            for meter in METERS:
                if not await sql.fetchval("SELECT count(*) FROM series WHERE series_id = $1", meter):
                    continue
                expected = [tuple(row) for row in await sql.fetch(_PLAIN_SQL_DAYS, meter)]
                for _ in range(2):
                    asked += 1
                    if await _daily_totals(stub, meter) != expected:
                        differing += 1
                        print(f"{meter}: the service's days differ from plain SQL's")
        finally:
            await sql.close()
    print(f"{asked} answers compared with plain SQL, {differing} differing")
    return 1 if differing else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target")
    parser.add_argument("database_url")
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--loaders", type=int, default=4)
    arguments = parser.parse_args()
    sys.exit(
        asyncio.run(soak(arguments.target, arguments.database_url, arguments.seconds, arguments.loaders))
    )


if __name__ == "__main__":
    main()
