"""One page of an aggregate query, from request to buckets: the domain plans it (with a probe
first where it needs one), the storage fetches its rows, the domain assembles them."""

from datetime import datetime

from timeseries_aggregation.domain.aggregation import AggregateQuery, Bucket
from timeseries_aggregation.domain.paging import GroupPosition, Page, PageRequest
from timeseries_aggregation.domain.query_plan import (
    FirstReadingProbe,
    PagePlan,
    SelectedSpanProbe,
    assemble_page,
    plan_portfolio_page,
    plan_series_page,
)
from timeseries_aggregation.storage.aggregates import (
    fetch_portfolio_page,
    fetch_series_page,
    find_first_reading,
    find_selected_span,
)
from timeseries_aggregation.storage.database import Database


async def query_series_page(
    database: Database, query: AggregateQuery, page: PageRequest[datetime], caller_name: str
) -> Page[Bucket]:
    """A page of the buckets of one series; a first page is recorded in the history."""
    plan = await series_page_plan(database, query, page)
    return assemble_page(plan, await fetch_series_page(database, plan, caller_name))


async def series_page_plan(
    database: Database, query: AggregateQuery, page: PageRequest[datetime]
) -> PagePlan:
    """The plan of a page of one series, with the probe it needs first run."""
    plan = plan_series_page(query, page)
    if isinstance(plan, FirstReadingProbe):
        plan = plan_series_page(query, page, await find_first_reading(database, plan))
    assert isinstance(plan, PagePlan)
    return plan


async def query_portfolio_page(
    database: Database, query: AggregateQuery, page: PageRequest[GroupPosition], caller_name: str
) -> Page[Bucket]:
    """A page of the buckets of the selected series, in groups; a first page is recorded."""
    plan = await portfolio_page_plan(database, query, page)
    return assemble_page(plan, await fetch_portfolio_page(database, plan, caller_name))


async def portfolio_page_plan(
    database: Database, query: AggregateQuery, page: PageRequest[GroupPosition]
) -> PagePlan:
    """The plan of a page of selected series, with the probe it needs first run."""
    plan = plan_portfolio_page(query, page)
    if isinstance(plan, SelectedSpanProbe):
        plan = plan_portfolio_page(query, page, await find_selected_span(database, plan))
    assert isinstance(plan, PagePlan)
    return plan
