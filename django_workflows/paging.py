"""Counting a list without counting every row: the API's pages and the admin's inbox.

An exact ``COUNT(*)`` makes a page's cost grow with the table, and for a user who is not
staff it evaluates the permission filter on every row. These counts stop a bounded
number of rows past the page asked for.
"""

from __future__ import annotations

from django.db.models import QuerySet

#: How many rows past the page asked for a list counts before it stops.
COUNT_LIMIT = 1000

_MAX_BOUND = 2**62  # a LIMIT every database takes


def bounded_count(queryset: QuerySet, bound: int) -> tuple[int, bool]:
    """The rows of ``queryset`` counted up to ``bound``: (the count, whether it is exact).

    When there are more rows the count is ``bound`` and not exact."""
    bound = min(bound, _MAX_BOUND)
    counted = queryset.order_by().values("pk")[: bound + 1].count()
    return min(counted, bound), counted <= bound
