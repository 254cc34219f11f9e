"""Counting a list without counting every row: the API's pages, the admin's lists and
the inbox.

An exact ``COUNT(*)`` makes a page's cost grow with the table (about 10 ms per 100,000
rows on PostgreSQL, a second at 10 million), and for a user who is not staff it
evaluates the permission filter on every row. These counts stop a bounded number of
rows past the page asked for: exact for a list that ends before the bound, "more than
N" otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.utils.functional import cached_property

from .models import HumanTaskGroup

#: How many rows past the page asked for a list counts before it stops.
COUNT_LIMIT = 1000

_MAX_BOUND = 2**62  # a LIMIT every database takes

#: What a list of tasks never shows of a task's instance and definition: the JSON and
#: the long texts, decoded on every row otherwise (the definition's graph: dozens of
#: objects per row, and the collector's work with them). Read on access if needed.
TASK_LIST_DEFERRED = (
    "instance__definition__graph",
    "instance__definition__description",
    "instance__context",
    "instance__tokens",
    "instance__error",
    "instance__error_traceback",
)


def bounded_count(queryset: QuerySet, bound: int) -> tuple[int, bool]:
    """The rows of ``queryset`` counted up to ``bound``: (the count, whether it is exact).

    When there are more rows the count is ``bound`` and not exact. One statement,
    ``SELECT COUNT(*) FROM (SELECT id ... ORDER BY ... LIMIT bound + 1)``: the database
    stops reading after ``bound + 1`` rows. The list's own order is kept: the count reads
    the rows its first pages show, which are in the cache. Unordered, PostgreSQL reads a
    large table from where its last scan stopped (synchronized scans), so each count
    read another, cold, part of it (about 1,400 buffers from disk per count at ten
    million instances, docs/performance.md)."""
    bound = min(bound, _MAX_BOUND)
    counted = queryset.values("pk")[: bound + 1].count()
    return min(counted, bound), counted <= bound


def page_number(page: Any) -> int:
    """The page asked for (1-based), 1 for a missing or bad value."""
    try:
        return max(int(page), 1)
    except (TypeError, ValueError):
        return 1


class BoundedPaginator(Paginator):
    """Counts at most ``count_limit`` rows past the page asked for (``bounded_count``).

    ``count_is_exact`` says whether the list ends there; when it does not, ``count`` is
    the bound ("more than ``count``"), the page links reach up to it, and the last
    linked page links further on.
    """

    count_limit = COUNT_LIMIT
    count_is_exact = True

    def __init__(
        self,
        object_list: Any,
        per_page: int,
        page: Any = 1,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> None:
        super().__init__(object_list, per_page, orphans, allow_empty_first_page)
        self.page_asked = page_number(page)

    @cached_property
    def count(self) -> int:
        bound = self.page_asked * self.per_page + self.count_limit
        if not isinstance(self.object_list, QuerySet):  # a list: its length is exact
            return len(self.object_list)
        count, self.count_is_exact = bounded_count(self.object_list, bound)
        return count


def candidate_group_names(task_ids: Sequence[int]) -> dict[int, list[str]]:
    """The candidate group names of each task, sorted (one query; none for no tasks). The
    task lists use it instead of ``prefetch_related``, whose reverse relation ties each
    task and its groups into a reference cycle (freed only by the cyclic collector)."""
    names: dict[int, list[str]] = {pk: [] for pk in task_ids}
    if task_ids:
        rows = HumanTaskGroup.objects.filter(task_id__in=task_ids).order_by("task_id", "name")
        for task_id, name in rows.values_list("task_id", "name"):
            names[task_id].append(name)
    return names
