"""What each list page leaves to Python's cyclic collector, as a server serves it.

    python benchmarks/gc_pages.py [--database-url URL] [--requests N] [PAGE ...]

The ``scale`` section's pages (``run.list_pages``) over 1,000 waiting instances with a
task each, each request through Django's ``WSGIHandler`` in this process, as a WSGI
server calls it (a session cookie, the response iterated and closed): no test client,
whose responses are reference cycles themselves. Prints a table: the objects one
request leaves as cyclic garbage (freed only by the collector; the most common
types), the collections of each generation in ``N`` requests (default 100), and the
CPU time per request with the collector on. A full (generation 2) collection costs
about as much as the process has objects to scan (tens of ms here); a page that
leaves little garbage and few objects alive across collections rarely causes one.

The database: a scratch SQLite file by default (deleted at the end), or ``URL``
(PostgreSQL: a scratch database to drop yourself; rows already there are reused).
"""

from __future__ import annotations

import argparse
import collections
import gc
import io
import os
import sys
import tempfile
import time
from pathlib import Path

from common import setup_django


def request_through_wsgi(handler, path: str, cookie: str) -> int:
    """GET ``path`` as a WSGI server would: the status code."""
    path, _, query = path.partition("?")
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_COOKIE": cookie,
        "SCRIPT_NAME": "",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http",
    }
    status: list[str] = []
    body = handler(environ, lambda line, headers, exc_info=None: status.append(line))
    try:
        b"".join(body)
    finally:
        body.close()
    return int(status[0][:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("pages", nargs="*", help="Only pages whose name contains one.")
    args = parser.parse_args()
    scratch = None
    url = args.database_url
    if url is None:
        scratch = Path(tempfile.mkdtemp(prefix="bench-gc-")) / "gc.sqlite3"
        url = f"sqlite:///{scratch}"
    os.environ.setdefault("DJANGO_DEBUG", "0")
    setup_django(url)

    import run
    from django.contrib.auth.models import Group
    from django.core.handlers.wsgi import WSGIHandler

    from django_workflows.engine.instances import definition_row
    from django_workflows.models import WorkflowInstance

    definition = definition_row(run.bench_registry().get_definition("bench_review"))
    group, _ = Group.objects.get_or_create(name="managers")
    if not WorkflowInstance.objects.exists():
        run.insert_fixture(definition, group, 0, 1000)
    handler = WSGIHandler()
    print(
        f"{'page':32} {'garbage/req':>11} {'gen0':>5} {'gen1':>5} {'gen2':>5} {'CPU ms':>7}"
        f"  most common garbage ({args.requests} requests a page)"
    )
    for name, call in run.list_pages(group):
        if not hasattr(call, "page") or (args.pages and not any(p in name for p in args.pages)):
            continue
        who, path = call.page
        cookie = run.session_cookie(who)

        def get(path=path, cookie=cookie) -> None:
            status = request_through_wsgi(handler, path, cookie)
            assert status == 200, (path, status)

        for _ in range(3):
            get()  # warm: templates, caches, the connection
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)  # the collector keeps what it finds in gc.garbage
        try:
            get()
            gc.collect()
            garbage = collections.Counter(type(o).__name__ for o in gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        gc.collect()
        before = [s["collections"] for s in gc.get_stats()]
        started = time.process_time()
        for _ in range(args.requests):
            get()
        cpu = (time.process_time() - started) * 1000 / args.requests
        counts = [s["collections"] - b for s, b in zip(gc.get_stats(), before, strict=True)]
        common = ", ".join(f"{kind} {n}" for kind, n in garbage.most_common(4))
        print(
            f"{name:32} {sum(garbage.values()):>11,} {counts[0]:>5} {counts[1]:>5} "
            f"{counts[2]:>5} {cpu:>7.1f}  {common}",
            flush=True,
        )
    if scratch is not None:
        from django.db import connections

        connections.close_all()
        for file in scratch.parent.iterdir():
            file.unlink()
        scratch.parent.rmdir()


if __name__ == "__main__":
    main()
