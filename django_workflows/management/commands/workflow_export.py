import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_workflows.export import CHUNK_SIZE, documents, write
from django_workflows.management.cli import (
    batch_size,
    known_workflow,
    parse_when,
    progress_bar,
)
from django_workflows.models import WorkflowInstance, WorkflowStatus


class Command(BaseCommand):
    help = (
        "Export the full history of workflow instances (context, step runs, tasks, "
        "events, comments, signals) as JSON lines, or one CSV row per instance, to a "
        "file or stdout. Filters combine; without any, every instance is exported."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # Our --version is the workflow's version, not Django's.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workflow", metavar="NAME", help="Only this workflow.")
        parser.add_argument("--version", metavar="V", help="Only this version of it.")
        parser.add_argument(
            "--status",
            action="append",
            choices=WorkflowStatus.values,
            help="Only instances in this status (repeatable).",
        )
        for moment in ("started", "finished"):
            for side in ("after", "before"):
                parser.add_argument(
                    f"--{moment}-{side}",
                    metavar="DATE",
                    help=f"Only instances {moment} {side} DATE (ISO date or date-time).",
                )
        parser.add_argument(
            "--format",
            choices=("jsonl", "csv"),
            default="jsonl",
            help="jsonl: one full document per line (default); csv: one row per instance.",
        )
        parser.add_argument(
            "--output", metavar="FILE", help="Write to FILE (default, or -: stdout)."
        )
        parser.add_argument(
            "--batch-size",
            type=batch_size,
            metavar="N",
            default=CHUNK_SIZE,
            help=f"Instances read per query (default {CHUNK_SIZE}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["version"] and not options["workflow"]:
            raise CommandError("--version needs --workflow")
        known_workflow(options["workflow"])
        rows = WorkflowInstance.objects.all()
        if options["workflow"]:
            rows = rows.filter(definition__name=options["workflow"])
        if options["version"]:
            rows = rows.filter(definition__version=options["version"])
        if options["status"]:
            rows = rows.filter(status__in=options["status"])
        for moment in ("started", "finished"):
            for side, lookup in (("after", "gte"), ("before", "lt")):
                value = options[f"{moment}_{side}"]
                if value:
                    when = parse_when(value, f"--{moment}-{side}")
                    rows = rows.filter(**{f"{moment}_at__{lookup}": when})
        rows = rows.order_by("started_at", "id")
        output = options["output"]
        bar = progress_bar(self, rows.count(), "instances", options["verbosity"])

        def counted(docs):
            for doc in docs:
                yield doc
                bar.update()

        docs = counted(documents(rows, chunk_size=options["batch_size"]))
        try:
            if output and output != "-":
                try:
                    out = open(output, "w", encoding="utf-8", newline="")  # noqa: SIM115
                except OSError as exc:
                    raise CommandError(f"--output {output!r}: {exc.strerror}") from exc
                with out:
                    count = write(docs, out, options["format"])
            else:
                try:
                    count = write(docs, _Stdout(self), options["format"])
                    self.stdout.flush()
                except BrokenPipeError:  # `| head`: the reader is gone, stop quietly
                    _quiet_stdout(self)
                    raise SystemExit(1) from None
        finally:
            bar.close()
        if output and output != "-" and options["verbosity"] > 0:
            self.stderr.write(f"exported {count} instances to {output}")


def _quiet_stdout(command: BaseCommand) -> None:
    """After a broken pipe, point the process's stdout at /dev/null: Python flushes it
    at exit and would print a second traceback (the recipe of Python's ``signal``
    docs)."""
    stream = getattr(command.stdout, "_out", None)
    if stream is not sys.stdout:
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (a captured stream)
        pass


class _Stdout:
    """The command's stdout as a plain text stream (no newline added per write)."""

    def __init__(self, command: BaseCommand) -> None:
        self.command = command

    def write(self, text: str) -> int:
        self.command.stdout.write(text, ending="")
        return len(text)
