"""The Python blocks of the documentation (README.md and docs/**/*.md), found and run as
the pages show them.

The code is written inline in the Markdown, as fenced ```python blocks, so that it reads
the same on the package index, on the code host and in Sphinx. Every block runs:

- A page's blocks run in order, in one namespace, so that a block may use what an earlier
  block of the same page defined. A test may give the names a page uses without defining
  them (a ``manager`` user, a stand-in for a payment service), and may prepare names
  before one block (``before``).
- A block that is an excerpt of a larger file (settings, ``urls.py``, a signature) cannot
  run on its own: it is marked as a fragment by the line ``<!-- fragment -->`` (or
  ``<!-- fragment: why -->``) just before its fence. The comment shows on none of the
  three sites. A fragment is only compiled.

A block registers its workflows on ``django_workflows.registry`` and calls
``get_engine()``, as code in a project does. ``isolated_engine`` swaps both for a fresh
registry and a ``LocalExecutionEngine`` on it, so that nothing leaks into the project
registry the other tests use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import django_workflows
import django_workflows.engine as engine_package
from django_workflows import LocalExecutionEngine, WorkflowRegistry
from django_workflows.signals import workflow_event

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]

FRAGMENT = re.compile(r"<!-- fragment(: [^>]*)? -->")
# Any fence: ``` or ~~~, of any length, indented (in a list) or not, with its info string.
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
    re.M | re.S,
)


@dataclasses.dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    code: str
    fragment: bool

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def fences(page: Path) -> list[tuple[str, int, str, str]]:
    """Every fenced block of a page: (info string, line, body without indent, previous line)."""
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        indent = len(match["indent"])
        body = "".join(line[indent:] for line in match["body"].splitlines(keepends=True))
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        line = text.count("\n", 0, match.start()) + 1
        found.append((match["info"].strip(), line, body, before))
    return found


def python_blocks(page: Path) -> list[Block]:
    """The ```python blocks of a page, in order, each marked as a fragment or not."""
    return [
        Block(page, line, body, bool(FRAGMENT.fullmatch(before)))
        for info, line, body, before in fences(page)
        if info == "python"
    ]


@contextlib.contextmanager
def isolated_engine(event_bus: Any = None) -> Iterator[LocalExecutionEngine]:
    """The project registry and ``get_engine()`` on a fresh registry, meanwhile."""
    registry = WorkflowRegistry()
    engine = LocalExecutionEngine(registry, event_bus=event_bus)
    module = sys.modules["django_workflows.registry"]  # what the system checks read
    saved = django_workflows.registry, module.registry, engine_package._default
    django_workflows.registry = module.registry = registry
    engine_package._default = engine
    try:
        yield engine
    finally:
        django_workflows.registry, module.registry, engine_package._default = saved


@contextlib.contextmanager
def receivers_restored() -> Iterator[None]:
    """Signal receivers a page connects (``@receiver(workflow_event, ...)``) are
    disconnected afterwards."""
    saved = list(workflow_event.receivers)
    try:
        yield
    finally:
        with workflow_event.lock:
            workflow_event.receivers = saved
            workflow_event.sender_receivers_cache.clear()


def run_block(block: Block, namespace: dict[str, Any]) -> dict[str, Any]:
    """Execute one block in ``namespace`` (updated), with the page's line numbers."""
    code = "\n" * block.line + block.code  # tracebacks point at the page's lines
    exec(compile(code, str(block.page), "exec"), namespace)  # noqa: S102  (our own docs)
    return namespace


def run_page(
    page: str | Path,
    before: Callable[[int, dict[str, Any]], None] | None = None,
    **names: Any,
) -> dict[str, Any]:
    """Run every block of ``page`` that is not a fragment, in order, in one namespace that
    starts with ``names``; ``before(i, namespace)`` runs before the i-th of those blocks.
    Returns the namespace."""
    path = page if isinstance(page, Path) else (ROOT / page if page == "README.md" else DOCS / page)
    namespace: dict[str, Any] = {"__name__": f"docs.{path.stem}", **names}
    runnable = [block for block in python_blocks(path) if not block.fragment]
    for index, block in enumerate(runnable):
        if before is not None:
            before(index, namespace)
        run_block(block, namespace)
    return namespace


def file_blocks(page: Path) -> dict[str, str]:
    """The blocks of a page that say which file they belong to in a first line comment
    (``# mysite/settings.py``), by that file; several blocks of one file are joined."""
    files: dict[str, str] = {}
    for block in python_blocks(page):
        first, _, rest = block.code.partition("\n")
        match = re.fullmatch(r"# ([\w/]+\.py)", first.strip())
        if match:
            files[match[1]] = files.get(match[1], "") + rest
    return files


# -- the quickstart, followed literally in a new project --------------------------------------

# After steps 1 to 6 (the project, its settings, migrate, the URLs, the app and its
# workflow, an instance started): step 7 (the admin), step 8 (from Python) and the REST
# API as the settings of step 2 configure it.
QUICKSTART_SMOKE = """
import django_workflows
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.authtoken.models import Token
from django_workflows import get_engine
from django_workflows.models import HumanTask

print("package:", django_workflows.__file__)
admin = get_user_model().objects.create_superuser("admin", "a@example.com", "pw")
client = Client(SERVER_NAME="127.0.0.1")  # runserver's host: ALLOWED_HOSTS is []
client.force_login(admin)
task = HumanTask.objects.get()
inbox = client.get("/admin/django_workflows/humantask/inbox/")
page = client.get(f"/admin/django_workflows/humantask/{task.pk}/complete/")
print("inbox:", inbox.status_code, "Approve the expense claim" in inbox.text)
print("task page:", page.status_code, 'value="Approve"' in page.text)
mine = client.get("/workflows/")
own_page = client.get(f"/workflows/tasks/{task.pk}/")
print("app inbox:", mine.status_code, "Approve the expense claim" in mine.text)
print("app task page:", own_page.status_code, 'value="Approve"' in own_page.text)
to_login = Client(SERVER_NAME="127.0.0.1").get("/workflows/")
print("app login:", to_login.status_code, to_login.headers.get("Location"))
login_page = Client(SERVER_NAME="127.0.0.1").get("/accounts/login/")
print("login page:", login_page.status_code, 'id="login-form"' in login_page.text)
browsable = client.get("/api/workflows/tasks/", headers={"accept": "text/html"})
print("browsable API:", browsable.status_code)
anonymous = Client(SERVER_NAME="127.0.0.1").get("/api/workflows/tasks/")
print("anonymous:", anonymous.status_code, anonymous.headers.get("WWW-Authenticate"))
key = Token.objects.create(user=admin).key
tasks = Client(SERVER_NAME="127.0.0.1").get("/api/workflows/tasks/", headers={"authorization": f"Token {key}"})
print("token:", tasks.status_code, tasks.json()["count"])
instance = get_engine().complete_task(task.pk, admin, {"comments": "ok"}, action="Approve")
print("after approval:", instance.status, instance.context["paid"])
"""


def quickstart_project(python: Path, where: Path, env: dict[str, str]) -> Path:
    """A new project set up as docs/quickstart.md says, with ``python`` (a virtualenv's),
    in ``where``: ``startproject``, the settings of step 2 (their assignments replace
    startproject's), the URLs of step 4, ``startapp expenses`` with the workflow of step 5.
    Returns the directory of ``manage.py``."""
    files = file_blocks(DOCS / "quickstart.md")
    assert set(files) == {"mysite/settings.py", "mysite/urls.py", "expenses/workflows.py"}

    def run(*args: str | Path, cwd: Path) -> None:
        subprocess.run(  # noqa: S603  (our own commands)
            [str(python), *map(str, args)], cwd=cwd, env=env, check=True, timeout=120
        )

    run("-m", "django", "startproject", "mysite", cwd=where)  # django-admin startproject
    site = where / "mysite"
    settings = site / "mysite" / "settings.py"
    settings.write_text(f"{settings.read_text()}\n{files['mysite/settings.py']}")
    (site / "mysite" / "urls.py").write_text(files["mysite/urls.py"])
    run("manage.py", "startapp", "expenses", cwd=site)
    settings.write_text(f'{settings.read_text()}\nINSTALLED_APPS.append("expenses")  # step 5\n')
    (site / "expenses" / "workflows.py").write_text(files["expenses/workflows.py"])
    return site


def check_quickstart_project(python: Path | str, site: Path, env: dict[str, str]) -> str:
    """Steps 3, 6, 7 and 8 of the quickstart in the project ``quickstart_project`` made."""

    def manage(*args: str) -> str:
        result = subprocess.run(  # noqa: S603  (our own commands)
            [str(python), "manage.py", *args],
            cwd=site,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
        return result.stdout

    assert "Applying django_workflows.0001_initial... OK" in manage("migrate", "--noinput")
    assert "System check identified no issues" in manage("check", "--database", "default")
    started = manage(
        "run_workflow", "expense_claim", "--data", '{"amount": 120, "employee": "Ada"}'
    )
    assert "workflow: expense_claim 1.0.0\nstatus: waiting\ncurrent step: approval\n" in started
    assert "waiting for: human task 1 'Approve the expense claim' (approval)" in started

    smoke = manage("shell", "--no-imports", "-c", QUICKSTART_SMOKE)
    assert "inbox: 200 True" in smoke
    assert "task page: 200 True" in smoke
    assert "app inbox: 200 True" in smoke  # the app's own pages (step 4's URLs)
    assert "app task page: 200 True" in smoke
    assert "app login: 302 /accounts/login/?next=/workflows/" in smoke
    assert "login page: 200 True" in smoke
    assert "browsable API: 200" in smoke  # rest_framework's templates are installed
    assert "anonymous: 401 Token" in smoke  # the authentication classes of step 2
    assert "token: 200 1" in smoke
    assert "after approval: completed 120" in smoke
    return smoke


def run_quickstart_workflows(namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    """The quickstart's ``expenses/workflows.py``: registers ``expense_claim`` on the
    project registry (an isolated one, under ``isolated_engine``)."""
    namespace = {"__name__": "expenses.workflows"} if namespace is None else namespace
    code = file_blocks(DOCS / "quickstart.md")["expenses/workflows.py"]
    exec(compile(code, "docs/quickstart.md", "exec"), namespace)  # noqa: S102  (our own docs)
    return namespace
