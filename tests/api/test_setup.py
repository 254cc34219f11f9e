"""Setting the API up: it answers, whatever the project's REST framework settings.

The schema works without drf-spectacular's ``DEFAULT_SCHEMA_CLASS`` (the views carry
their own schema class), the API answers JSON when ``rest_framework`` is not an installed
app (no browsable pages, no 500), and its root lists the endpoints.
"""

import pytest
from django.conf import settings
from django.test import override_settings
from drf_spectacular.validation import validate_schema

from .conftest import API

pytestmark = pytest.mark.django_db

WITHOUT_DRF_APP = [app for app in settings.INSTALLED_APPS if app != "rest_framework"]
#: What a browser sends.
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def rest_framework(**overrides):
    return {**settings.REST_FRAMEWORK, **overrides}


# -- the schema ------------------------------------------------------------------


@pytest.mark.parametrize(
    "schema_class",
    [
        None,  # DRF's default: its own AutoSchema
        "rest_framework.schemas.openapi.AutoSchema",
        "drf_spectacular.openapi.AutoSchema",
    ],
)
def test_the_schema_is_served_whatever_the_default_schema_class(client_for, starter, schema_class):
    options = rest_framework()
    options.pop("DEFAULT_SCHEMA_CLASS", None)
    if schema_class is not None:
        options["DEFAULT_SCHEMA_CLASS"] = schema_class

    with override_settings(REST_FRAMEWORK=options):
        response = client_for(starter).get(f"{API}/schema/", {"format": "json"})

    assert response.status_code == 200, response.content[:500]
    schema = response.json()
    validate_schema(schema)
    assert f"{API}/instances/{{id}}/cancel/" in schema["paths"]
    assert "Start" in schema["components"]["schemas"]


# -- without the rest_framework app ------------------------------------------------


@pytest.mark.parametrize("accept", ["text/html", BROWSER])
def test_without_the_rest_framework_app_a_browser_gets_json(client_for, starter, accept):
    client = client_for(starter)

    with override_settings(INSTALLED_APPS=WITHOUT_DRF_APP):
        listing = client.get(f"{API}/instances/", HTTP_ACCEPT=accept)
        root = client.get(f"{API}/", HTTP_ACCEPT=accept)
        missing = client.get(f"{API}/instances/nope/", HTTP_ACCEPT=accept)

    assert listing.status_code == 200
    assert listing["Content-Type"] == "application/json"
    assert listing.json()["results"] == []
    assert root.status_code == 200
    assert root["Content-Type"] == "application/json"
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"


def test_with_the_rest_framework_app_a_browser_gets_the_browsable_api(client_for, starter):
    response = client_for(starter).get(f"{API}/instances/", HTTP_ACCEPT=BROWSER)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")


def test_other_media_types_are_still_refused_with_the_app(client_for, starter):
    response = client_for(starter).get(f"{API}/instances/", HTTP_ACCEPT="application/xml")

    assert response.status_code == 406
    assert response.json()["code"] == "not_acceptable"


# -- the root ------------------------------------------------------------------------


def test_the_root_lists_the_endpoints_with_absolute_urls(client_for, starter):
    response = client_for(starter).get(f"{API}/")

    assert response.status_code == 200
    assert response.json() == {
        "definitions": f"http://testserver{API}/definitions/",
        "instances": f"http://testserver{API}/instances/",
        "tasks": f"http://testserver{API}/tasks/",
        "substitutes": f"http://testserver{API}/substitutes/",
        "schema": f"http://testserver{API}/schema/",
    }


def test_the_root_needs_a_logged_in_user(client_for):
    response = client_for().get(f"{API}/")

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.django_db
def test_the_schema_has_a_title_and_version_without_spectacular_settings(client_for, superuser):
    from django_workflows import __version__

    with override_settings(SPECTACULAR_SETTINGS={}):
        schema = client_for(superuser).get(f"{API}/schema/?format=json").json()
    assert schema["info"]["title"] == "django-workflows API"
    assert schema["info"]["version"] == __version__
    # The project's own title and version win: the view adds neither.
    from django_workflows.api.root import SchemaView

    with override_settings(SPECTACULAR_SETTINGS={"TITLE": "Ours", "VERSION": "9"}):
        assert SchemaView().custom_settings is None
    with override_settings(SPECTACULAR_SETTINGS={"TITLE": "Ours"}):
        assert SchemaView().custom_settings == {"VERSION": __version__}
