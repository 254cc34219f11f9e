"""A live server for the ``scale`` section: the test project's WSGI application in a
process of its own, served by the standard library's ``wsgiref`` (as ``runserver`` is),
one request at a time, as a server's worker serves it.

    python benchmarks/liveserver.py [--freeze]

``DATABASE_URL`` and ``DJANGO_SETTINGS_MODULE`` come from the environment. Prints
``port N`` once it listens on 127.0.0.1. Without ``--freeze`` the process never calls
``gc.freeze()`` (the issue's "as a server would serve them"): its heap is the
application's, not the benchmark's, and its collector runs as it would in production.
With ``--freeze`` it does what ``testproject/wsgi.py`` does after start-up.

Each response has a header ``X-GC-Full: N MS``: the full (generation 2) collections the
server's collector made so far and their total milliseconds. ``LiveServer`` is the other
end: GET a path with a session cookie, timed around the whole round trip (connect,
request, response read to its last byte).
"""

from __future__ import annotations

import argparse
import gc
import http.client
import os
import subprocess
import sys
import time
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

ROOT = Path(__file__).resolve().parent.parent


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # not a line on stderr per request


def serve(freeze: bool) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()
    full = [0, 0.0, 0.0]  # full collections, their total ms, the start of the current one

    def collections(phase: str, info: dict) -> None:
        if info["generation"] == 2:
            if phase == "start":
                full[2] = time.perf_counter()
            else:
                full[0] += 1
                full[1] += (time.perf_counter() - full[2]) * 1000

    gc.callbacks.append(collections)

    def counted(environ, start_response):
        """The application, its responses telling the full collections so far."""

        def start(status, headers, exc_info=None):
            headers = [*headers, ("X-GC-Full", f"{full[0]} {full[1]:.1f}")]
            return start_response(status, headers, exc_info)

        return application(environ, start)

    if freeze:
        gc.collect()
        gc.freeze()
    server: WSGIServer = make_server("127.0.0.1", 0, counted, handler_class=QuietHandler)
    print(f"port {server.server_port}", flush=True)
    server.serve_forever()


class LiveServer:
    """The server in a subprocess; ``with LiveServer(env) as server: server.port``."""

    def __init__(self, env: dict[str, str], *, freeze: bool = False) -> None:
        args = [sys.executable, __file__, *(["--freeze"] if freeze else [])]
        self.process = subprocess.Popen(  # noqa: S603 - ourselves
            args, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line.startswith("port "):
            self.close()
            raise RuntimeError(f"the live server did not start (said {line!r})")
        self.port = int(line.split()[1])
        self.full = (0, 0.0)

    def __enter__(self) -> LiveServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def get(self, path: str, cookie: str) -> tuple[int, bytes, float]:
        """Status, body and milliseconds of one GET (a new connection: wsgiref closes it);
        ``self.full``: the server's full collections so far and their total ms."""
        started = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request("GET", path, headers={"Cookie": cookie, "Host": "127.0.0.1"})
            response = connection.getresponse()
            body = response.read()
            count, ms = (response.getheader("X-GC-Full") or "0 0").split()
            self.full = (int(count), float(ms))
        finally:
            connection.close()
        return response.status, body, (time.perf_counter() - started) * 1000


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--freeze", action="store_true")
    serve(parser.parse_args().freeze)
