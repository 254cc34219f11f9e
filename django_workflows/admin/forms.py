"""The small forms of the admin's intermediate pages (cancel, retry)."""

from __future__ import annotations

from collections.abc import Iterable

from django import forms
from django.utils.translation import gettext_lazy as _


class CancelForm(forms.Form):
    reason = forms.CharField(
        label=_("Reason"),
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=_("Stored in the instance's history (the WorkflowCanceled event)."),
    )


class RetryForm(forms.Form):
    from_step = forms.ChoiceField(
        label=_("Retry from"),
        required=False,
        help_text=_(
            "By default the failed step runs again. Choose another step to restart there; "
            "the context is kept as it was when the instance failed."
        ),
    )

    def __init__(self, *args, steps: Iterable[str] = (), failed_step: str = "", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        default = _("the failed step")
        if failed_step:
            default = f"{default} ({failed_step})"
        self.fields["from_step"].choices = [("", default), *((s, s) for s in steps)]
