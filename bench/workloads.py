"""The workloads, the same for every system; each returns plain figures.

* **enqueue**: no-op jobs submitted per second from one thread, no worker running;
* **drain**: those jobs completed per second by one worker with 4 threads,
  from the first completed job to the moment every result is readable (so
  the worker's start-up does not count); the worker's **CPU ms per job**
  over that span, and its **peak RSS**;
* **latency**: ms from submit to the completed job being readable, for jobs
  submitted one after another (p50, p99);
* **submit_many**: jobs per second of one bulk enqueue call, where a system has one;
* **sleep**: seconds for 500 jobs of 10 ms on 4 threads (ideal 1.25 s),
  measured like *drain*, plus the 10 ms of the first job;
* **calls** (flask-jobrunner only): calls to the store per job, counted by
  wrapping redis-py and SQLAlchemy (:mod:`bench.counting`): to enqueue one
  job, per job of a bulk enqueue, and by the worker per job, in bulk (a
  full queue) and one by one (sequential jobs; idle waits included).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench.systems.base import System

WORKLOADS = ["drain", "latency", "submit_many", "sleep", "http", "calls"]
SLEEP_SECONDS = 0.010
THREADS = 4


@dataclass(frozen=True)
class Scale:
    """How many jobs each workload uses."""

    jobs: int = 5000
    latency: int = 200
    sleep: int = 500
    http_seconds: float = 5.0
    timeout: float = 300.0


def run_workloads(system: System, workloads: list[str], scale: Scale) -> dict[str, Any]:
    """Every figure of *workloads* for an opened *system*."""
    figures: dict[str, Any] = {}
    if "drain" in workloads:
        figures.update(_enqueue_and_drain(system, scale))
    if {"latency", "http"} & set(workloads):
        if "drain" not in workloads:
            system.start_worker()
        if "latency" in workloads:
            figures.update(_latency(system, scale))
        if "http" in workloads and hasattr(system, "http_figures"):
            figures.update(system.http_figures(scale.http_seconds))
    if "drain" in workloads:
        figures["rss_mb"] = system.worker_peak_rss()
    system.stop_worker()
    if "submit_many" in workloads:
        figures.update(_submit_many(system, scale))
    if "sleep" in workloads:
        figures.update(_sleep(system, scale))
    if "calls" in workloads and hasattr(system, "store_calls"):
        calls = system.store_calls(min(scale.jobs, 1000), min(scale.latency, 100), scale.timeout)
        figures.update(calls)
    return figures


def _enqueue_and_drain(system: System, scale: Scale) -> dict[str, Any]:
    started = time.perf_counter()
    handles = [system.submit_noop() for _ in range(scale.jobs)]
    enqueue = scale.jobs / (time.perf_counter() - started)
    system.start_worker()
    system.wait_one(handles[0], scale.timeout)
    first, cpu_first = time.perf_counter(), system.worker_cpu()
    system.wait_all(handles, scale.timeout)
    last, cpu_last = time.perf_counter(), system.worker_cpu()
    done = max(scale.jobs - 1, 1)
    return {
        "enqueue": enqueue,
        "drain": done / max(last - first, 1e-9),
        "cpu_ms": (cpu_last - cpu_first) * 1000 / done,
    }


def _latency(system: System, scale: Scale) -> dict[str, Any]:
    system.wait_one(system.submit_noop(), scale.timeout)  # warm: connections, imports
    latencies = []
    samples = []
    for _ in range(scale.latency):
        moment, started = time.time(), time.perf_counter()
        handle = system.submit_noop()
        submitted = time.perf_counter()
        system.wait_one(handle, scale.timeout)
        seen = time.perf_counter()
        latencies.append((seen - started) * 1000)
        samples.append(LoneJob(handle, moment, submitted - started, seen - started))
    figures = {
        "p50_ms": statistics.median(latencies),
        "p99_ms": statistics.quantiles(latencies, n=100, method="inclusive")[98],
    }
    if hasattr(system, "lone_job_steps"):
        figures.update(system.lone_job_steps(samples))
    return figures


@dataclass(frozen=True)
class LoneJob:
    """One job of the latency run: its handle, and when it was submitted and seen done."""

    handle: Any
    #: ``time.time()`` as ``submit`` was called, to compare with the store's timestamps.
    moment: float
    #: Seconds until ``submit`` returned.
    submitted: float
    #: Seconds until the job was seen completed.
    seen: float


def _submit_many(system: System, scale: Scale) -> dict[str, Any]:
    started = time.perf_counter()
    handles = system.submit_many_noop(scale.jobs)
    elapsed = time.perf_counter() - started
    if handles is None:
        return {}
    if len(handles) != scale.jobs:
        raise RuntimeError(f"submit_many returned {len(handles)} jobs, not {scale.jobs}")
    system.discard_queued()
    return {"submit_many": scale.jobs / elapsed}


def _sleep(system: System, scale: Scale) -> dict[str, Any]:
    handles = [system.submit_sleep(SLEEP_SECONDS) for _ in range(scale.sleep)]
    system.start_worker()
    try:
        system.wait_one(handles[0], scale.timeout)
        first = time.perf_counter()
        system.wait_all(handles, scale.timeout)
        elapsed = time.perf_counter() - first + SLEEP_SECONDS
    finally:
        system.stop_worker()
    ideal = scale.sleep * SLEEP_SECONDS / THREADS
    return {"sleep_s": elapsed, "sleep_x": elapsed / ideal}
