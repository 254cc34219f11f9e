"""The app's own pages: ``path("workflows/", include("django_workflows.urls"))``.

"My tasks" and the task page for users who are not staff (see ``views.py``). The
project provides the login page (``settings.LOGIN_URL``), e.g.
``path("accounts/", include("django.contrib.auth.urls"))``.
"""

from django.urls import path

from . import views

app_name = "django_workflows"

urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("tasks/<int:pk>/", views.task, name="task"),
    path("tasks/<int:pk>/claim/", views.claim, name="claim"),
    path("tasks/<int:pk>/unclaim/", views.unclaim, name="unclaim"),
    path("tasks/<int:pk>/reassign/", views.reassign, name="reassign"),
    path("tasks/<int:pk>/comment/", views.comment, name="comment"),
]
