"""URLs of the API; include them under a prefix of your choice::

path("api/workflows/", include("django_workflows.api.urls")),
"""

from django.urls import path
from rest_framework.routers import SimpleRouter

from . import comments, export, migrate, root, signals, substitutes, views

app_name = "django_workflows_api"

router = SimpleRouter()
router.register("definitions", views.DefinitionViewSet, basename="definition")
router.register("instances", views.InstanceViewSet, basename="instance")
router.register("tasks", views.TaskViewSet, basename="task")
router.register("substitutes", substitutes.SubstitutionViewSet, basename="substitution")

urlpatterns = [
    path("", root.RootView.as_view(), name="root"),
    # Before the router's tasks/{id}/, which would take "bulk-complete" for an id.
    path("tasks/bulk-complete/", comments.BulkCompleteView.as_view(), name="task-bulk-complete"),
    path("instances/migrate/", migrate.MigrateInstancesView.as_view(), name="instance-migrate"),
    *router.urls,
    path(
        "instances/<str:pk>/comments/",
        comments.InstanceCommentsView.as_view(),
        name="instance-comments",
    ),
    path("tasks/<str:pk>/comments/", comments.TaskCommentsView.as_view(), name="task-comments"),
    path("signals/", signals.SendSignalView.as_view(), name="signal-send"),
    path(
        "instances/<str:pk>/signals/",
        signals.InstanceSignalsView.as_view(),
        name="instance-signals",
    ),
    path(
        "instances/<str:pk>/export/",
        export.InstanceExportView.as_view(),
        name="instance-export",
    ),
    path("schema/", root.SchemaView.as_view(), name="schema"),
]
