import json
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_workflows.engine import get_engine
from django_workflows.exceptions import (
    ContextError,
    DefinitionError,
    InvalidAssignee,
    WorkflowNotFound,
)
from django_workflows.models import StepRunStatus, TaskStatus, WorkflowStatus


class Command(BaseCommand):
    help = "Start a workflow instance, run it as far as it goes, and print where it stands."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs) -> CommandParser:
        # Our --version is the workflow's version, not Django's.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Registered workflow name.")
        parser.add_argument("--version", help="Version (default: the highest).")
        data = parser.add_mutually_exclusive_group()
        data.add_argument(
            "--data", help="Initial context as a JSON object, e.g. '{\"amount\": 5}'."
        )
        data.add_argument(
            "--data-file", type=Path, help="Read the initial context from a JSON file."
        )
        parser.add_argument(
            "--business-key", default="", help="Your own reference for the instance."
        )
        parser.add_argument(
            "--wait",
            action="store_true",
            help="With a worker engine: show progress until the instance completes, waits "
            "for a person or a timer, fails or is canceled (non-zero exit unless it completes "
            "or waits).",
        )
        parser.add_argument(
            "--timeout", type=float, default=300.0, help="Seconds --wait waits (default 300)."
        )

    def handle(self, *args, **options) -> None:
        self.verbosity = options["verbosity"]
        data = self._load_data(options)
        try:
            instance = get_engine().start_workflow(
                options["name"],
                version=options["version"],
                initial_data=data,
                business_key=options["business_key"],
            )
        except (WorkflowNotFound, DefinitionError, ContextError, InvalidAssignee) as exc:
            raise CommandError(str(exc)) from exc
        if options["wait"]:
            instance = self._wait(instance, options["timeout"])
        self._report(instance)
        if instance.status == WorkflowStatus.FAILED:
            raise CommandError(f"instance {instance.pk} failed at {instance.failed_step}")
        if instance.status == WorkflowStatus.CANCELED:
            raise CommandError(f"instance {instance.pk} was canceled")
        if options["wait"] and instance.status == WorkflowStatus.RUNNING:
            raise CommandError(
                f"instance {instance.pk} is still running after {options['timeout']:g}s"
            )

    def _load_data(self, options) -> dict:
        raw, source = options["data"], "--data"
        if options["data_file"] is not None:
            source = str(options["data_file"])
            try:
                raw = options["data_file"].read_text(encoding="utf-8")
            except OSError as exc:
                raise CommandError(f"cannot read {source}: {exc.strerror}") from exc
            except UnicodeDecodeError as exc:
                raise CommandError(f"{source} is not UTF-8 text: {exc.reason}") from exc
        if raw is None:
            return {}
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise CommandError(f"{source} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise CommandError(f"{source} must be a JSON object, not {type(data).__name__}")
        return data

    def _wait(self, instance, timeout: float):
        """Poll the instance, printing progress when it changes, until it stops running."""
        engine = get_engine()
        row = instance.definition
        total = len(engine.registry.get_definition(row.name, row.version).steps)
        deadline = time.monotonic() + timeout
        shown = None
        while True:
            instance = engine.get_instance(instance.pk)
            done = (
                instance.step_runs.filter(status=StepRunStatus.COMPLETED)
                .values("step_name")
                .distinct()
                .count()
            )
            progress = (done, instance.current_step, instance.status)
            if progress != shown:
                shown = progress
                self.stdout.write(
                    f"{done}/{total} steps done, current step: {instance.current_step or '-'} "
                    f"({instance.status})"
                )
            if instance.status != WorkflowStatus.RUNNING or time.monotonic() >= deadline:
                return instance
            time.sleep(0.1)

    def _report(self, instance) -> None:
        style = {
            WorkflowStatus.COMPLETED: self.style.SUCCESS,
            WorkflowStatus.FAILED: self.style.ERROR,
        }.get(instance.status, self.style.WARNING)
        self.stdout.write(f"instance: {instance.pk}")
        self.stdout.write(f"workflow: {instance.definition}")
        self.stdout.write("status: " + style(instance.status))
        self.stdout.write(f"current step: {instance.current_step or '-'}")
        for task in instance.human_tasks.filter(status=TaskStatus.OPEN).order_by("id"):
            self.stdout.write(
                f"waiting for: human task {task.pk} '{task.title}' ({task.step_name})"
            )
        if instance.status == WorkflowStatus.FAILED:
            self.stdout.write(self.style.ERROR(f"error: {instance.error}"))
        if self.verbosity > 1:
            self.stdout.write("context: " + json.dumps(instance.context, indent=2, sort_keys=True))
