"""The release: the wheel and the sdist build, pass ``twine check``, hold what a project
needs (templates, migrations, ``py.typed``; no tests), and the wheel installed alone in
a fresh virtualenv runs the quickstart (docs/quickstart.md, followed literally) in a new
project.

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

from .snippets import ROOT, check_quickstart_project, quickstart_project

pytestmark = pytest.mark.packaging

SOURCE = ["django_workflows", "pyproject.toml", "README.md", "MANIFEST.in"]


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

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DJANGO_SETTINGS_MODULE", "PYTHONPATH", "VIRTUAL_ENV", "DATABASE_URL"}
    }
    # docs/quickstart.md, followed literally: startproject, its settings, URLs and app.
    site = quickstart_project(python, tmp_path, env)
    smoke = check_quickstart_project(python, site, env)
    assert f"package: {venv}" in smoke  # the installed wheel, not the checkout
