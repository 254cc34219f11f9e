"""The release: the wheel and the sdist build, pass ``twine check``, hold what a project
needs (templates, migrations, ``py.typed``; no tests), and the wheel installed alone in
a fresh virtualenv runs the quickstart in a scratch project.

Slow (a minute or two) and needs the package registry, so it runs only when selected:
``pytest -m packaging``. Without a registry it skips and says so; any other failure fails.
"""

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

from .snippets import ROOT, SNIPPETS

pytestmark = pytest.mark.packaging

SOURCE = ["django_workflows", "pyproject.toml", "README.md", "MANIFEST.in"]
SETTINGS = """
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "scratch"
DEBUG = True
ALLOWED_HOSTS = ["testserver"]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_workflows",
    "expenses",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "mysite.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "static/"
USE_TZ = True
REST_FRAMEWORK = {"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"}
"""
URLS = """
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/workflows/", include("django_workflows.api.urls")),
]
"""
MANAGE = """
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
from django.core.management import execute_from_command_line

execute_from_command_line(sys.argv)
"""
# The quickstart's steps 7 and 8 against the installed package: the admin's templates
# render, and the approval completes the instance.
SMOKE = """
import django_workflows
from django.contrib.auth import get_user_model
from django.test import Client
from django_workflows import get_engine
from django_workflows.models import HumanTask

print("package:", django_workflows.__file__)
admin = get_user_model().objects.create_superuser("admin", "a@example.com", "pw")
client = Client()
client.force_login(admin)
task = HumanTask.objects.get()
inbox = client.get("/admin/django_workflows/humantask/inbox/")
page = client.get(f"/admin/django_workflows/humantask/{task.pk}/complete/")
print("inbox:", inbox.status_code, "Approve the expense claim" in inbox.text)
print("task page:", page.status_code, 'value="Approve"' in page.text)
instance = get_engine().complete_task(task.pk, admin, {"comments": "ok"}, action="Approve")
print("after approval:", instance.status, instance.context["paid"])
schema = client.get("/api/workflows/schema/")
print("schema:", schema.status_code)
"""


@pytest.fixture(scope="module", autouse=True)
def selected(request):
    if "packaging" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("builds and installs the wheel (a minute or two): run with -m packaging")


def run(*args, cwd=None, env=None, timeout=180):
    result = subprocess.run(  # noqa: S603  (our own commands)
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def registry_reachable(tmp_path_factory):
    """Skip (with pip's answer) when the package registry cannot be reached."""
    probe = subprocess.run(  # noqa: S603
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "-d",
            str(tmp_path_factory.mktemp("probe")),
            "setuptools>=69",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"no network to the package registry: {probe.stderr.strip()[-300:]}")


@pytest.fixture(scope="module")
def dist(registry_reachable, tmp_path_factory):
    """The wheel and the sdist, built from a copy of the source (the tree stays clean)."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCE:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", out, source, timeout=300)
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return wheel, sdist


def test_twine_check_passes(dist):
    output = run(sys.executable, "-m", "twine", "check", "--strict", *dist)
    assert output.count("PASSED") == 2, output


def test_the_wheel_holds_templates_and_migrations_and_no_tests(dist):
    wheel, _ = dist
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "django_workflows"
    data = [
        path.relative_to(ROOT).as_posix()
        for folder in ("templates", "static", "migrations")
        for path in (package / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    assert any(name.endswith(".html") for name in data)
    assert set(data) <= names, sorted(set(data) - names)
    assert "django_workflows/py.typed" in names
    assert "django_workflows/migrations/0001_initial.py" in names
    assert not [n for n in names if n.startswith(("tests/", "testproject/", "docs/"))]
    metadata = (
        zipfile.ZipFile(wheel)
        .read(f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info/METADATA")
        .decode()
    )
    assert "Requires-Dist: Django" in metadata
    assert "Description-Content-Type: text/markdown" in metadata
    # Our own name on the index ("django-workflows" there is another project), and links.
    assert "\nName: django-workflows-engine\n" in metadata
    assert wheel.name.startswith("django_workflows_engine-0.1.0-")
    for label in ("Documentation", "Source", "Changelog", "Issues"):
        assert f"\nProject-URL: {label}, https://" in metadata, label


def test_the_sdist_holds_the_package_and_no_tests(dist):
    _, sdist = dist
    assert sdist.name == "django_workflows_engine-0.1.0.tar.gz"
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert "README.md" in names and "pyproject.toml" in names
    assert "django_workflows/templates/admin/django_workflows/humantask/complete.html" in names
    assert "django_workflows/migrations/0001_initial.py" in names
    assert not [n for n in names if n.startswith(("tests/", "testproject/"))]


def test_the_installed_wheel_runs_the_quickstart(dist, tmp_path):
    wheel, _ = dist
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, timeout=120)
    python = venv / "bin" / "python"
    run(
        python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel, timeout=300
    )

    site = tmp_path / "site"
    (site / "mysite").mkdir(parents=True)
    (site / "expenses").mkdir()
    (site / "mysite" / "__init__.py").touch()
    (site / "mysite" / "settings.py").write_text(SETTINGS)
    (site / "mysite" / "urls.py").write_text(URLS)
    (site / "expenses" / "__init__.py").touch()
    shutil.copy(SNIPPETS / "quickstart_workflows.py", site / "expenses" / "workflows.py")
    (site / "manage.py").write_text(MANAGE)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DJANGO_SETTINGS_MODULE", "PYTHONPATH", "VIRTUAL_ENV", "DATABASE_URL"}
    }

    def manage(*args):
        return run(python, "manage.py", *args, cwd=site, env=env)

    assert "Applying django_workflows.0001_initial... OK" in manage("migrate", "--noinput")
    assert "System check identified no issues" in manage("check", "--database", "default")
    started = manage(
        "run_workflow", "expense_claim", "--data", '{"amount": 120, "employee": "Ada"}'
    )
    assert "workflow: expense_claim 1.0.0\nstatus: waiting\ncurrent step: approval\n" in started
    assert "waiting for: human task 1 'Approve the expense claim' (approval)" in started

    smoke = manage("shell", "--no-imports", "-c", SMOKE)
    assert f"package: {venv}" in smoke  # the installed wheel, not the checkout
    assert "inbox: 200 True" in smoke
    assert "task page: 200 True" in smoke
    assert "after approval: completed 120" in smoke
    assert "schema: 200" in smoke
