from django.http import JsonResponse

from django_workflows import get_engine


async def start_claim(request):  # an async view
    instance = await get_engine().astart_workflow(
        "expense_claim", initial_data={"amount": int(request.POST["amount"])}
    )
    return JsonResponse({"id": str(instance.pk), "status": instance.status})
