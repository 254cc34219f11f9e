from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.utils import timezone

from django_workflows.engine import get_engine
from django_workflows.models import Substitution, WorkflowInstance
from django_workflows.substitutes import add_substitute


class Command(BaseCommand):
    help = (
        "Create the demo users (demo / demo, a manager; ann and bob / demo, board members "
        "who are not staff; ann is away and demo stands in for her) and one instance of "
        "each demo workflow."
    )

    def handle(self, *args, **options) -> None:
        managers, _ = Group.objects.get_or_create(name="managers")
        demo = self.user("demo", is_staff=True, is_superuser=True, first_name="Dee")
        demo.groups.add(managers)
        ann = self.user("ann", first_name="Ann")
        self.user("bob", first_name="Bob")
        if not Substitution.objects.filter(user=ann, substitute=demo).exists():
            now = timezone.now()
            add_substitute(ann, demo, now, now + timedelta(days=14), reason="on holiday")
        if WorkflowInstance.objects.exists():
            self.stdout.write("demo instances exist already")
            return
        engine = get_engine()
        lines = [
            {"sku": "desk", "qty": 2, "price": 180},
            {"sku": "chair", "qty": 4, "price": 95},
            {"sku": "lamp", "qty": 3, "price": 25},
        ]
        for name, data, key in (
            ("expense_approval", {"amount": 120, "employee": "Ada"}, ""),
            ("order_fulfillment", {"order": "A-1001"}, ""),
            (
                "purchase_approval",
                {"item": "3D printer", "amount": 2400, "requester": "Ada"},
                "",
            ),
            ("order_processing", {"lines": lines}, "ORDER-1001"),
        ):
            instance = engine.start_workflow(
                name, initial_data=data, business_key=key, started_by=demo
            )
            self.stdout.write(f"{name}: {instance.pk} {instance.status}")

    @staticmethod
    def user(username: str, **fields):
        user, created = get_user_model().objects.get_or_create(username=username, defaults=fields)
        if created:
            user.set_password("demo")
            user.save()
        return user
