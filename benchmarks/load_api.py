"""Load test of the REST API: the approval flow, driven over HTTP by concurrent clients.

    python benchmarks/load_api.py [--quick] [--database-url postgres://postgres@127.0.0.1/postgres]

What it does, on a scratch database (a temp SQLite file by default; with
``--database-url`` a ``load_workflows`` PostgreSQL database on that server, recreated and
dropped at the end):

1. migrates, and creates a user in the group ``managers`` with an API token;
2. starts, each in its own process group, on 127.0.0.1 only: an HTTP server on a free port
   (gunicorn with threads if it is installed, else ``manage.py runserver --noreload``), a
   ``qcluster`` with ``--q-workers`` worker processes, and ``manage.py workflow_sweep
   --loop``, all with the DjangoQ engine (``WORKFLOWS_ENGINE=djangoq``);
3. runs ``--instances`` approval flows of the demo's ``expense_approval`` with ``--clients``
   threads: each starts an instance (``POST instances/``), polls it until it is WAITING,
   finds its task (``GET tasks/?instance=<id>``), completes it with the action Approve
   (``POST tasks/<id>/complete/``), and polls until the instance is COMPLETED;
4. prints the errors (any unexpected status, transport error, failed instance or timeout),
   the count of each HTTP status, p50/p99/max latency per endpoint, the throughput, and the
   statuses of the instances as the database has them at the end.

Everything is bounded: ``--deadline`` seconds for the whole run, after which the clients
stop and the run counts as failed. The processes are killed (their process groups) at the
end, whatever happens. Exit status 0 only with no error and every instance COMPLETED.
``--quick`` is a smoke run for CI: 50 instances, 4 clients.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from common import ROOT, drop_pg, percentile, recreate_pg, setup_django

PG_DATABASE = "load_workflows"
API = "/api/workflows"
WORKFLOW = "expense_approval"
USERNAME = "load-manager"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
#: Seconds between two polls of one instance.
POLL_INTERVAL = 0.1
#: Seconds one HTTP request may take.
REQUEST_TIMEOUT = 60


# -- results ------------------------------------------------------------------------------


@dataclass
class Results:
    """What the clients saw; every method is thread-safe."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    errors: list[str] = field(default_factory=list)
    reconnects: int = 0
    flows_done: int = 0

    def record(self, endpoint: str, status: int, seconds: float) -> None:
        with self.lock:
            self.latencies[endpoint].append(seconds)
            self.statuses[endpoint][status] += 1

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)

    def reconnected(self) -> None:
        with self.lock:
            self.reconnects += 1

    def done(self) -> None:
        with self.lock:
            self.flows_done += 1


class FlowError(Exception):
    """One approval flow went wrong: counted as an error, the client goes on."""


class DeadlineExceeded(FlowError):
    pass


# -- HTTP ---------------------------------------------------------------------------------


class Client:
    """One keep-alive connection to the server, with the token of the load user."""

    def __init__(self, port: int, token: str, results: Results, deadline: float) -> None:
        self.port = port
        self.headers = {
            "Authorization": f"Token {token}",
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        self.results = results
        self.deadline = deadline
        self.connection: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def request(
        self,
        endpoint: str,
        method: str,
        path: str,
        body: dict | None = None,
        *,
        expect: int = 200,
        headers: dict[str, str] | None = None,
    ) -> dict:
        """Send one request; its JSON body if the status is ``expect``, else FlowError.

        A keep-alive connection the server closed meanwhile is reopened and the request
        sent again once (safe: the starts carry an Idempotency-Key, the rest are reads or
        refused when repeated)."""
        if time.monotonic() > self.deadline:
            raise DeadlineExceeded(f"{method} {path}: past the deadline")
        payload = json.dumps(body).encode() if body is not None else None
        all_headers = {**self.headers, **(headers or {})}
        for attempt in (1, 2):
            reused = self.connection is not None
            if self.connection is None:
                self.connection = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=REQUEST_TIMEOUT
                )
            started = time.perf_counter()
            try:
                self.connection.request(method, path, body=payload, headers=all_headers)
                response = self.connection.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self.close()
                if reused and attempt == 1:
                    self.results.reconnected()
                    continue
                raise FlowError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise FlowError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
            seconds = time.perf_counter() - started
            self.results.record(endpoint, response.status, seconds)
            if response.getheader("Connection", "").lower() == "close":
                self.close()
            if response.status != expect:
                raise FlowError(f"{method} {path}: {response.status} {data[:300]!r}")
            try:
                return json.loads(data)
            except ValueError:
                raise FlowError(f"{method} {path}: not JSON: {data[:300]!r}") from None
        raise AssertionError("unreachable")

    def wait_for_status(self, instance_id: str, wanted: str) -> dict:
        """Poll the instance until it has status ``wanted``; FlowError if it finished otherwise."""
        while True:
            instance = self.request("GET instances/{id}/", "GET", f"{API}/instances/{instance_id}/")
            status = instance["status"]
            if status == wanted:
                return instance
            if status in ("failed", "canceled", "completed"):
                raise FlowError(
                    f"instance {instance_id} is {status}, expected {wanted}: {instance['error']}"
                )
            time.sleep(POLL_INTERVAL)


def approval_flow(client: Client, index: int, run_id: str) -> None:
    """Start, wait for the task, approve it, wait for the end."""
    body = {
        "workflow": WORKFLOW,
        "data": {"amount": 10 + index % 990, "employee": f"load-{index}"},
        "business_key": f"load-{run_id}-{index}",
    }
    started = client.request(
        "POST instances/",
        "POST",
        f"{API}/instances/",
        body,
        expect=201,
        headers={"Idempotency-Key": f"{run_id}-{index}"},
    )
    instance_id = started["id"]
    client.wait_for_status(instance_id, "waiting")
    tasks = client.request("GET tasks/?instance=", "GET", f"{API}/tasks/?instance={instance_id}")[
        "results"
    ]
    if len(tasks) != 1:
        raise FlowError(f"instance {instance_id}: {len(tasks)} open tasks, expected 1")
    done = client.request(
        "POST tasks/{id}/complete/",
        "POST",
        f"{API}/tasks/{tasks[0]['id']}/complete/",
        {"action": "Approve"},
    )
    if done["status"] != "completed":
        client.wait_for_status(instance_id, "completed")


def drive(port: int, token: str, instances: int, clients: int, deadline: float) -> Results:
    """Run ``instances`` flows on ``clients`` threads; returns what they saw."""
    results = Results()
    run_id = uuid.uuid4().hex[:8]
    indexes = itertools.count()
    lock = threading.Lock()

    def worker() -> None:
        client = Client(port, token, results, deadline)
        try:
            while True:
                with lock:
                    index = next(indexes)
                if index >= instances or time.monotonic() > deadline:
                    return
                try:
                    approval_flow(client, index, run_id)
                    results.done()
                except FlowError as exc:
                    results.error(f"flow {index}: {exc}")
        finally:
            client.close()

    threads = [threading.Thread(target=worker, name=f"client-{n}") for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + REQUEST_TIMEOUT + 5)
    if any(thread.is_alive() for thread in threads):
        results.error("some clients were still running after the deadline")
    with results.lock:
        missing = instances - results.flows_done - len(results.errors)
    if missing > 0:
        results.error(f"{missing} flows never ran (deadline)")
    return results


# -- processes ------------------------------------------------------------------------------


class Process:
    """A command in its own process group, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        self.log_file = self.log.open("wb")
        self.popen = subprocess.Popen(  # noqa: S603 - our own commands
            args,
            cwd=ROOT,
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL to whatever is left after 10 seconds."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # the group: workers too
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        self.log_file.close()

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def has_gunicorn() -> bool:
    import importlib.util

    return importlib.util.find_spec("gunicorn") is not None


def server_command(kind: str, port: int, workers: int, threads: int) -> list[str]:
    if kind == "gunicorn":
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "testproject.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--worker-class",
            "gthread",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--keep-alive",
            "30",
            "--timeout",
            "120",
            "--log-level",
            "warning",
        ]
    return [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]


def wait_until_serving(port: int, token: str, server: Process, deadline: float) -> None:
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request(
                "GET", f"{API}/definitions/", headers={"Authorization": f"Token {token}"}
            )
            response = connection.getresponse()
            response.read()
            connection.close()
            if response.status == 200:
                return
        except OSError:
            pass
        if not server.alive():
            raise SystemExit(f"the server exited:\n{server.tail()}")
        if time.monotonic() > deadline:
            raise SystemExit(f"the server did not answer in time:\n{server.tail()}")
        time.sleep(0.2)


# -- the database ---------------------------------------------------------------------------


def scratch_database(url: str | None, tmp: Path) -> tuple[str, str | None]:
    """The URL of the scratch database, and the PostgreSQL admin URL to drop it with."""
    if url is None:
        return f"sqlite:///{tmp / 'load.sqlite3'}", None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise SystemExit("--database-url must be a postgres:// URL")
    if parts.hostname not in LOCAL_HOSTS:
        raise SystemExit("--database-url must point at 127.0.0.1: the load test stays local")
    admin = parts._replace(scheme="postgresql", path="/postgres").geturl()
    recreate_pg(admin, PG_DATABASE)
    return parts._replace(path=f"/{PG_DATABASE}").geturl(), admin


def setup_database(database_url: str) -> str:
    """Migrate the scratch database; create the load user (a manager) and its token."""
    setup_django(database_url)
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import connections
    from rest_framework.authtoken.models import Token

    managers, _ = Group.objects.get_or_create(name="managers")
    user = get_user_model().objects.create_user(USERNAME)
    user.groups.add(managers)
    token = Token.objects.create(user=user).key
    connections.close_all()  # no connection of ours held during the run (SQLite locks)
    return token


def database_report(expected: int) -> tuple[dict[str, int], list[str]]:
    """Instance statuses as the database has them, and what is wrong with them."""
    from django.db import connections
    from django.db.models import Count

    from django_workflows.models import HumanTask, StepRun, WorkflowInstance

    statuses = dict(
        WorkflowInstance.objects.values_list("status").annotate(n=Count("pk")).order_by()
    )
    problems = []
    total = sum(statuses.values())
    if total != expected:
        problems.append(f"{total} instances in the database, expected {expected}")
    if statuses.get("completed", 0) != expected:
        problems.append(f"{statuses.get('completed', 0)} of {expected} instances completed")
    open_tasks = HumanTask.objects.exclude(status="completed").count()
    if open_tasks:
        problems.append(f"{open_tasks} human tasks not completed")
    failed_runs = StepRun.objects.exclude(status="completed").count()
    if failed_runs:
        problems.append(f"{failed_runs} step runs not completed")
    connections.close_all()
    return statuses, problems


# -- report -----------------------------------------------------------------------------------


def print_report(
    header: str,
    results: Results,
    seconds: float,
    statuses: dict[str, int],
    problems: list[str],
) -> None:
    print(f"\n== {header} ==")
    requests = sum(len(v) for v in results.latencies.values())
    width = max([len(name) for name in results.latencies] + [8])
    print(
        f"{'endpoint'.ljust(width)}  {'requests':>8}  {'p50 ms':>8}  {'p99 ms':>8}  "
        f"{'max ms':>8}  statuses"
    )
    for name, values in results.latencies.items():
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(results.statuses[name].items()))
        print(
            f"{name.ljust(width)}  {len(values):>8}  {percentile(values, 50) * 1000:>8.1f}  "
            f"{percentile(values, 99) * 1000:>8.1f}  {max(values) * 1000:>8.1f}  {codes}"
        )
    all_values = [v for values in results.latencies.values() for v in values]
    if all_values:
        print(
            f"{'all'.ljust(width)}  {requests:>8}  {percentile(all_values, 50) * 1000:>8.1f}  "
            f"{percentile(all_values, 99) * 1000:>8.1f}  {max(all_values) * 1000:>8.1f}"
        )
    flows = results.flows_done
    print(
        f"\nflows completed: {flows} in {seconds:.1f} s: {flows / seconds:.1f} instances/s, "
        f"{requests / seconds:.0f} requests/s"
    )
    if all_values:
        print(f"mean request: {statistics.fmean(all_values) * 1000:.1f} ms")
    print(f"reconnects (server closed a keep-alive connection): {results.reconnects}")
    print(f"errors: {len(results.errors)}")
    for text in results.errors[:10]:
        print(f"  {text}")
    if len(results.errors) > 10:
        print(f"  ... and {len(results.errors) - 10} more")
    print(
        "instances in the database: "
        + ", ".join(f"{status} {n}" for status, n in sorted(statuses.items()))
    )
    print("every instance COMPLETED: " + ("yes" if not problems else "NO: " + "; ".join(problems)))


# -- main -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 instances, 4 clients.")
    parser.add_argument("--instances", type=int, help="Approval flows to run (default 1000).")
    parser.add_argument("--clients", type=int, help="Concurrent HTTP clients (default 16).")
    parser.add_argument(
        "--database-url",
        help="A PostgreSQL server on 127.0.0.1 (postgres://user@127.0.0.1:5432/any): the run "
        f"uses a {PG_DATABASE} database there, recreated and dropped. Default: a temp SQLite.",
    )
    parser.add_argument("--q-workers", type=int, default=4, help="qcluster workers (default 4).")
    parser.add_argument(
        "--server", choices=["auto", "gunicorn", "runserver"], default="auto", help="HTTP server."
    )
    parser.add_argument("--server-workers", type=int, default=4, help="gunicorn workers.")
    parser.add_argument("--server-threads", type=int, default=4, help="threads per worker.")
    parser.add_argument(
        "--broker", choices=["orm", "redis"], default="orm", help="django-q2 broker."
    )
    parser.add_argument("--deadline", type=float, help="Seconds for the whole run.")
    parser.add_argument("--keep", action="store_true", help="Keep the database and the logs.")
    args = parser.parse_args()

    instances = args.instances or (50 if args.quick else 1000)
    clients = args.clients or (4 if args.quick else 16)
    budget = args.deadline or (300 if args.quick else 1800)
    deadline = time.monotonic() + budget
    server_kind = args.server
    if server_kind == "auto":
        server_kind = "gunicorn" if has_gunicorn() else "runserver"
    elif server_kind == "gunicorn" and not has_gunicorn():
        raise SystemExit("gunicorn is not installed")

    tmp = Path(tempfile.mkdtemp(prefix="load_workflows_"))
    database_url, pg_admin = scratch_database(args.database_url, tmp)
    processes: list[Process] = []
    try:
        token = setup_database(database_url)
        from django.db import connection

        vendor = connection.vendor
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "DJANGO_SETTINGS_MODULE": "testproject.settings",
            "DJANGO_DEBUG": "0",  # no query log growing in the server's memory
            "WORKFLOWS_ENGINE": "djangoq",
            "Q_WORKERS": str(args.q_workers),
            "Q_NAME": f"load-{uuid.uuid4().hex[:6]}",
            "Q_POLL": "0.05",
            "PYTHONUNBUFFERED": "1",
        }
        if args.broker == "redis":
            env["Q_BROKER"] = "redis"
        port = free_port()
        processes.append(
            Process(
                "server",
                server_command(server_kind, port, args.server_workers, args.server_threads),
                env,
                tmp,
            )
        )
        processes.append(Process("qcluster", [sys.executable, "manage.py", "qcluster"], env, tmp))
        processes.append(
            Process(
                "sweep",
                [sys.executable, "manage.py", "workflow_sweep", "--loop", "--interval", "1"],
                env,
                tmp,
            )
        )
        wait_until_serving(port, token, processes[0], min(deadline, time.monotonic() + 60))

        server_text = (
            f"gunicorn gthread {args.server_workers}x{args.server_threads}"
            if server_kind == "gunicorn"
            else "runserver (threaded)"
        )
        header = (
            f"{vendor}: {instances} instances, {clients} clients; {server_text}; "
            f"qcluster {args.q_workers} workers, {args.broker} broker"
        )
        print(f"load test: {header}", flush=True)
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, "
            f"{platform.python_implementation()} {platform.python_version()}",
            flush=True,
        )
        started = time.monotonic()
        results = drive(port, token, instances, clients, deadline)
        seconds = time.monotonic() - started
        for process in processes:
            if not process.alive():
                results.error(f"{process.name} exited during the run:\n{process.tail()}")
        statuses, problems = database_report(instances)
        print_report(header, results, seconds, statuses, problems)
        if results.errors or problems:
            for process in processes:
                print(f"\n--- {process.name} log (tail)\n{process.tail(1500)}")
        return 0 if not results.errors and not problems else 1
    finally:
        for process in processes:
            process.stop()
        from django.db import connections

        connections.close_all()
        if pg_admin is not None and not args.keep:
            drop_pg(pg_admin, PG_DATABASE)
        if args.keep:
            print(f"kept: {tmp}" + (f" and database {PG_DATABASE}" if pg_admin else ""))
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
