import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from django_workflows.engine import retention
from django_workflows.export import write
from django_workflows.management.cli import (
    batch_size,
    known_workflow,
    parse_when,
    progress_bar,
)


class Command(BaseCommand):
    help = (
        "Delete finished instances (completed, failed, canceled) and everything under "
        "them (step runs, tasks, events, comments and their files, signals, sub-workflow "
        "instances), in short batches; optionally export them first. Never touches an "
        "active instance, nor a tree that has one."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--finished-before",
            metavar="DATE",
            help="Instances finished before DATE (ISO date or date-time). Default: "
            'now minus DJANGO_WORKFLOWS["RETENTION"]; required when that is None.',
        )
        parser.add_argument("--workflow", metavar="NAME", help="Only this workflow.")
        parser.add_argument(
            "--export",
            metavar="FILE",
            help="Append each batch to FILE as JSON lines before deleting it.",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Print what would go; delete nothing."
        )
        parser.add_argument(
            "--batch-size",
            type=batch_size,
            metavar="N",
            default=200,
            help="Instances (with their sub-workflows) per transaction (default 200).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        cutoff = self._cutoff(options["finished_before"])
        workflow = options["workflow"]
        known_workflow(workflow)
        if options["dry_run"]:
            self._dry_run(cutoff, workflow, options["verbosity"])
            return
        total = retention.candidates(cutoff, workflow).count()
        bar = progress_bar(self, total, "instances", options["verbosity"])
        out = None
        if options["export"]:
            try:
                out = open(options["export"], "a", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise CommandError(f"--export {options['export']!r}: {exc.strerror}") from exc

        def export(docs):
            write(docs, out, "jsonl")
            out.flush()
            os.fsync(out.fileno())  # on disk before the batch's delete commits

        try:
            result = retention.purge(
                cutoff,
                workflow=workflow,
                batch_size=options["batch_size"],
                export=export if out is not None else None,
                progress=lambda done: bar.update(done.roots + done.skipped),
            )
        finally:
            bar.close()
            if out is not None:
                out.close()
        if options["verbosity"] > 0:
            skipped = f", {result.skipped} left (still active, or busy)" if result.skipped else ""
            exported = f", exported to {options['export']}" if out is not None else ""
            self.stdout.write(
                self.style.SUCCESS(
                    f"purged {result.purged} instances finished before "
                    f"{cutoff.isoformat()}{exported}{skipped}"
                )
            )

    def _cutoff(self, value: str | None):
        if value:
            return parse_when(value, "--finished-before")
        try:
            period = retention.retention_period()
        except ValueError as exc:
            raise CommandError(f'DJANGO_WORKFLOWS["RETENTION"]: {exc}') from exc
        if period is None:
            raise CommandError(
                'give --finished-before DATE (DJANGO_WORKFLOWS["RETENTION"] is None)'
            )
        try:
            return timezone.now() - period
        except OverflowError as exc:  # retention_period() refuses these; defensive
            raise CommandError(f'DJANGO_WORKFLOWS["RETENTION"] = {period!r} is too large') from exc

    def _dry_run(self, cutoff, workflow: str | None, verbosity: int) -> None:
        plan = retention.plan(cutoff, workflow)
        children = f" and {plan['children']} sub-workflow instances under them"
        self.stdout.write(
            f"would purge {plan['roots']} instances finished before {cutoff.isoformat()}"
            f"{children if plan['children'] else ''}"
        )
        for (name, version), count in plan["by_workflow"].items():
            self.stdout.write(f"  {name} {version}: {count}")
        if verbosity > 1:
            for batch in retention.root_batches(cutoff, workflow):
                for pk in batch:
                    self.stdout.write(f"  {pk}")
