"""A URLconf that routes its own subclass of an API viewset (for the system check W101)."""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from django_workflows.api.views import InstanceViewSet


class StartRestricted(InstanceViewSet):
    pass


router = SimpleRouter()
router.register("instances", StartRestricted, basename="instance")

urlpatterns = [path("v2/", include(router.urls))]
