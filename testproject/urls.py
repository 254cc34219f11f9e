from django.contrib import admin
from django.contrib.auth.views import LoginView
from django.urls import include, path
from django.views.generic import RedirectView

from django_workflows.metrics import metrics_view

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/workflows/", include("django_workflows.api.urls")),
    # The app's own pages (My tasks, the task page) for users who are not staff; they
    # need a login page (settings.LOGIN_URL, /accounts/login/ by default).
    path("workflows/", include("django_workflows.urls")),
    path(
        "accounts/login/",
        LoginView.as_view(template_name="django_workflows/login.html"),
        name="login",
    ),
    path("accounts/", include("django.contrib.auth.urls")),
    # Prometheus scrapes here (docs/operations.md): METRICS_TOKEN or METRICS_NETWORKS.
    path("metrics", metrics_view, name="workflow-metrics"),
]
