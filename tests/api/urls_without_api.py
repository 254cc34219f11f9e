"""A URLconf without the REST API (for the system check W101)."""

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
