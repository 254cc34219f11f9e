from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from django_workflows.engine import get_engine
from django_workflows.models import WorkflowInstance


class Command(BaseCommand):
    help = "Create the demo user (demo / demo, a manager) and one instance of each demo workflow."

    def handle(self, *args, **options) -> None:
        managers, _ = Group.objects.get_or_create(name="managers")
        user, created = get_user_model().objects.get_or_create(
            username="demo", defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_password("demo")
            user.save()
        user.groups.add(managers)
        if WorkflowInstance.objects.exists():
            self.stdout.write("demo instances exist already")
            return
        engine = get_engine()
        for name, data in (
            ("expense_approval", {"amount": 120, "employee": "Ada"}),
            ("order_fulfillment", {"order": "A-1001"}),
        ):
            instance = engine.start_workflow(name, initial_data=data, started_by=user)
            self.stdout.write(f"{name}: {instance.pk} {instance.status}")
