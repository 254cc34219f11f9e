"""URLs of the API; include them under a prefix of your choice::

path("api/workflows/", include("django_workflows.api.urls")),
"""

from django.urls import path
from rest_framework.routers import SimpleRouter

from . import root, substitutes, views

app_name = "django_workflows_api"

router = SimpleRouter()
router.register("definitions", views.DefinitionViewSet, basename="definition")
router.register("instances", views.InstanceViewSet, basename="instance")
router.register("tasks", views.TaskViewSet, basename="task")
router.register("substitutes", substitutes.SubstitutionViewSet, basename="substitution")

urlpatterns = [
    path("", root.RootView.as_view(), name="root"),
    *router.urls,
    path("schema/", root.SchemaView.as_view(), name="schema"),
]
