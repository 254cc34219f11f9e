import dataclasses

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_workflows.engine import get_engine


class Command(BaseCommand):
    help = (
        "Move the active instances of a workflow version to another version: print the "
        "plan (each instance, movable or why not), then migrate the movable ones."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Registered workflow name.")
        parser.add_argument("from_version", help="The version the instances run now.")
        parser.add_argument("to_version", help="The registered version to move them to.")
        parser.add_argument(
            "--map",
            action="append",
            default=[],
            metavar="OLD=NEW",
            help="Map the old step OLD to the new step NEW (repeatable). Steps keep "
            "their names otherwise.",
        )
        parser.add_argument(
            "--instance",
            action="append",
            dest="instances",
            metavar="ID",
            help="Only this instance (repeatable; default: every active instance).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Print the plan; change nothing."
        )

    def handle(self, *args, **options) -> None:
        step_map = {}
        for pair in options["map"]:
            old, sep, new = pair.partition("=")
            if not sep or not old.strip() or not new.strip():
                raise CommandError(f"--map {pair!r}: expected OLD=NEW")
            step_map[old.strip()] = new.strip()
        engine = get_engine()
        try:
            plan = engine.plan_migration(
                options["name"],
                options["from_version"],
                options["to_version"],
                step_map=step_map,
                instance_ids=options["instances"],
            )
        except ValidationError as exc:
            raise CommandError("; ".join(_messages(exc))) from exc
        self.stdout.write(str(plan))
        if options["dry_run"] or not plan.movable:
            return
        results, total = [], len(plan.instances)
        # One instance at a time, so the progress line moves (each is its own transition).
        for done, verdict in enumerate(plan.instances, start=1):
            one = dataclasses.replace(plan, instances=(verdict,))
            results.extend(engine.migrate_instances(one))
            self.stderr.write(f"\rmigrating: {done}/{total}", ending="")
            self.stderr.flush()
        self.stderr.write("")
        migrated = [r for r in results if r.migrated]
        for result in results:
            if not result.migrated:
                self.stdout.write(f"  skipped {result}")
        self.stdout.write(
            self.style.SUCCESS(
                f"{len(migrated)} migrated to {plan.to_version}, "
                f"{len(results) - len(migrated)} skipped"
            )
        )


def _messages(exc: ValidationError) -> list[str]:
    if hasattr(exc, "error_dict"):
        return [f"{field}: {m}" for field, ms in exc.message_dict.items() for m in ms]
    return list(exc.messages)
