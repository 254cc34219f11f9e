from django_workflows import BaseMachineStep, RetryPolicy


class Charge(BaseMachineStep):
    retry = RetryPolicy(max_attempts=3, backoff=10, backoff_factor=2, max_backoff=600)
    timeout = 30  # seconds

    def execute(self, context):  # or: async def execute(self, context)
        charge_id = payments.charge(
            context.get("order_id"),
            amount=context.get("amount"),
            idempotency_key=f"{context.instance_id}:{context.step_name}",
        )
        context.set("charge_id", charge_id)
