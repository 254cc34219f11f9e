"""A bounded schemathesis run against a live server of the API: no request may cause a 500.

The server is ``manage.py runserver`` on a free port of 127.0.0.1, on a fresh SQLite
file (``fuzz_settings``), with the demo's workflows, a superuser with a token, a waiting
and a failed instance. Run it alone with ``pytest -m fuzz``.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.db import connection

pytestmark = [
    pytest.mark.fuzz,
    pytest.mark.skipif(
        connection.vendor != "sqlite",
        reason="the fuzz run uses a SQLite file of its own: it runs in the SQLite run",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
SCHEMA = "/api/workflows/schema/?format=json"
MAX_EXAMPLES = 25  # per operation and phase
MAX_TIME = 60  # seconds of fuzzing
DEADLINE = 30  # seconds for the server to answer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def fuzz_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.api.fuzz_settings",
        FUZZ_DATABASE=str(tmp_path / "fuzz.sqlite3"),
        PYTHONUNBUFFERED="1",
    )
    return env


def manage(env, *args, check=True):
    return subprocess.run(  # noqa: S603 - our own manage.py
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


@pytest.fixture
def token(fuzz_env):
    """Migrate, create the demo superuser and instances, and return the user's token."""
    manage(fuzz_env, "migrate", "--noinput")
    manage(fuzz_env, "setup_demo")
    failed = manage(
        fuzz_env,
        "run_workflow",
        "expense_approval",
        "--data",
        json.dumps({"amount": -1}),
        check=False,
    )
    assert "status: failed" in failed.stdout, failed.stdout + failed.stderr
    created = manage(fuzz_env, "drf_create_token", "demo").stdout
    return re.search(r"Generated token (\w+)", created).group(1)


@pytest.fixture
def server(fuzz_env, token, tmp_path):
    """``runserver`` on a free port; yields its base URL once it serves the schema."""
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(  # noqa: S603 - our own manage.py
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT,
        env=fuzz_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Token {token}"}
    request = urllib.request.Request(base + SCHEMA, headers=headers)  # noqa: S310 - http://
    deadline = time.monotonic() + DEADLINE
    try:
        while True:
            try:
                with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                    assert response.status == 200
                break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, "the server did not start in time"
            try:  # the pause between tries doubles as a check that the server still runs
                process.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
            pytest.fail("the server exited:\n" + (tmp_path / "server.log").read_text())
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def test_no_request_causes_a_server_error(server, token, tmp_path):
    assert SCHEMATHESIS.exists(), "schemathesis is a dev dependency: pip install -e '.[dev]'"

    run = subprocess.run(  # noqa: S603 - the venv's schemathesis
        [
            str(SCHEMATHESIS),
            "run",
            server + SCHEMA,
            "--checks",
            "not_a_server_error",
            "--header",
            f"Authorization: Token {token}",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--max-time",
            str(MAX_TIME),
            "--request-timeout",
            "20",
            "--generation-database",
            "none",
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=MAX_TIME + 50,
    )

    server_log = (tmp_path / "server.log").read_text()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:] + server_log[-4000:]
    assert re.search(r"(\d+) generated, \1 passed", run.stdout), run.stdout[-3000:]
    assert '" 500 ' not in server_log
    assert '" 200 ' in server_log and '" 201 ' in server_log  # it reached the core logic
