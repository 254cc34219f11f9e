"""The test project's URLs plus a stand-in for the app's own task page
(``django_workflows:task``), which the mails link to when it is routed."""

from django.http import HttpResponse
from django.urls import include, path

from testproject.urls import urlpatterns as project


def task_page(request, pk):
    return HttpResponse(f"task {pk}")


app = ([path("tasks/<int:pk>/", task_page, name="task")], "django_workflows")
urlpatterns = [path("workflows/", include(app)), *project]
