from django_workflows import BaseMachineStep, RetryPolicy


class SendInvoice(BaseMachineStep):
    retry = RetryPolicy(max_attempts=5, backoff=30)

    def execute(self, context):
        # The same key on every attempt of this step of this instance, and after retry().
        key = f"{context.instance_id}:{context.step_name}"
        invoice = billing.create_invoice(
            customer=context.get("customer"),
            amount=context.get("amount"),
            idempotency_key=key,  # the service creates one invoice per key
        )
        context.set("invoice_id", invoice["id"])
