"""The REST API (Django REST framework): definitions, instances and human tasks.

Add it to a project with one line in the URL conf::

    path("api/workflows/", include("django_workflows.api.urls")),

The views call the engine for every change of state; see ``docs/api.md``.
"""
