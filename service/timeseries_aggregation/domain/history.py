"""A recorded QueryAggregates call."""

from dataclasses import dataclass
from datetime import datetime

from timeseries_aggregation.domain.aggregation import AggregateQuery


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One successful QueryAggregates call, as listed by ListQueryHistory."""

    id: int
    query_time: datetime
    query: AggregateQuery
    page_size: int
    continued_page: bool
    bucket_count: int
    caller_name: str
