"""POST-then-poll through a real WSGI server: gunicorn on a free loopback port.

Each of 16 client threads submits a no-op job with ``POST <prefix>/noop``,
then reads its ``Location`` with ``GET`` until it is completed, and again,
over one keep-alive connection, for a fixed time.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import threading
import time
from collections.abc import Mapping

from bench.processes import WorkerProcess

CLIENTS = 16


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def gunicorn(env: Mapping[str, str], log_directory: str) -> tuple[WorkerProcess, int]:
    """gunicorn serving the bench app: one process, 16 threads; waits until it answers."""
    import pathlib

    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}"]
    command += ["--workers", "1", "--worker-class", "gthread", "--threads", str(CLIENTS)]
    command += ["--keep-alive", "30", "bench.app:create_app()"]
    server = WorkerProcess(command, env, pathlib.Path(log_directory) / "gunicorn.log")
    deadline = time.monotonic() + 30
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/api/jobs/openapi.json")
            if connection.getresponse().status == 200:
                connection.close()
                return server, port
        except OSError:
            pass
        server.check_alive()
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError("gunicorn did not answer within 30 s:\n" + server.log_tail())
        time.sleep(0.05)


def post_then_poll(port: int, seconds: float) -> dict[str, float]:
    """Requests and jobs per second of :data:`CLIENTS` clients for *seconds*."""
    stop = threading.Event()
    totals = {"requests": 0, "jobs": 0}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        requests = jobs = 0
        try:
            while not stop.is_set():
                connection.request(
                    "POST",
                    "/api/jobs/noop",
                    body=b"{}",
                    headers={"Content-Type": "application/json"},
                )
                response = connection.getresponse()
                response.read()
                requests += 1
                if response.status != 202:
                    raise RuntimeError(f"POST answered {response.status}")
                location = response.getheader("Location") or ""
                while True:
                    connection.request("GET", location)
                    response = connection.getresponse()
                    document = json.loads(response.read())
                    requests += 1
                    if document["status"] == "completed":
                        break
                    if document["status"] in {"failed", "cancelled"}:
                        raise RuntimeError(f"a job ended {document['status']}")
                jobs += 1
        except BaseException as error:  # reported by the caller, not lost in a thread
            errors.append(error)
        finally:
            connection.close()
            with lock:
                totals["requests"] += requests
                totals["jobs"] += jobs

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(60)
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"an HTTP client failed: {errors[0]!r}")
    return {
        "http_rps": totals["requests"] / elapsed,
        "http_jobs": totals["jobs"] / elapsed,
    }
