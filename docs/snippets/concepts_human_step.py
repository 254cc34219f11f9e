from datetime import timedelta

from django import forms

from django_workflows import BaseHumanStep


class ApprovalForm(forms.Form):
    comments = forms.CharField(required=False, widget=forms.Textarea)


class ManagerApproval(BaseHumanStep):
    title = "Approve the expense claim"
    form_class = ApprovalForm  # a django.forms.Form, optional
    actions = {"Approve": {"approved": True}, "Reject": {"approved": False}}  # buttons
    candidate_groups = ("managers",)  # auth Group names
    due_in = timedelta(days=2)  # sets HumanTask.due_at

    def get_assignee(self, context):  # a user or a user pk; None (default): nobody
        return context.get("manager_id")


class RequestLeave(BaseHumanStep):
    title = "Request leave"
    # A form as a JSON schema: the admin renders it, the API publishes it.
    form_schema = {
        "type": "object",
        "properties": {
            "first_day": {"type": "string", "format": "date"},
            "days": {"type": "integer", "minimum": 1, "maximum": 30},
            "note": {"type": "string", "maxLength": 500},
        },
        "required": ["first_day", "days"],
    }

    def complete(self, context, data):  # store some fields only
        context.set("first_day", data["first_day"])  # dates arrive as "2025-06-02"
        context.set("days", data["days"])
