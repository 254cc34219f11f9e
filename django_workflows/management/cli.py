"""What the history commands (``workflow_export``, ``workflow_purge``) share: dates
given on the command line, and the progress bar.

The bar is tqdm's, drawn on the command's stderr only when it is a terminal (cron mail,
pipes and redirected output stay clean) and never at ``--verbosity 0``."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, time
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from tqdm import tqdm


def parse_when(value: str, option: str) -> datetime:
    """An ISO date (midnight, in the current time zone) or date-time; a time without
    an offset is in the current time zone. ``CommandError`` otherwise."""
    try:
        moment = parse_datetime(value)
        if moment is None:
            day = parse_date(value)
            moment = datetime.combine(day, time()) if day is not None else None
    except ValueError:
        moment = None
    if moment is None:
        raise CommandError(
            f"{option} {value!r}: expected a date (2026-01-31) or a date and time "
            "(2026-01-31T18:00, 2026-01-31T18:00+01:00)"
        )
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


#: The largest ``--batch-size`` (a batch is one query's ``LIMIT`` and one transaction).
MAX_BATCH_SIZE = 100_000


def batch_size(value: str) -> int:
    """``--batch-size``: an integer from 1 to ``MAX_BATCH_SIZE`` (an argparse type: a
    usage error otherwise, never a database error)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if not 1 <= number <= MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and {MAX_BATCH_SIZE}")
    return number


def known_workflow(name: str | None) -> None:
    """``--workflow NAME``: a workflow that has a definition in the database (registered
    now or once), else a ``CommandError`` naming the known ones: a typo must not look
    like "nothing to do"."""
    from django_workflows.models import DefinitionVersion

    if name is None or DefinitionVersion.objects.filter(name=name).exists():
        return
    known = sorted(set(DefinitionVersion.objects.values_list("name", flat=True)))
    listed = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "") or "none"
    raise CommandError(f"--workflow: no workflow named {name!r} (known: {listed})")


def progress_bar(command: BaseCommand, total: int, unit: str, verbosity: int) -> tqdm:
    """A tqdm bar of ``total`` ``unit`` on ``command``'s stderr (off unless a terminal)."""
    stream: Any = getattr(command.stderr, "_out", sys.stderr)  # OutputWrapper's stream
    return tqdm(
        total=total,
        unit=f" {unit}",
        file=stream,
        disable=True if verbosity < 1 else None,  # None: off unless stderr is a terminal
        dynamic_ncols=True,
        mininterval=0.5,
    )
