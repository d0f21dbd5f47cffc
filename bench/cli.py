"""``python -m bench``: measure flask-jobrunner and its peers in one run, print the tables.

Each system runs in a fresh ``python -m bench.driver`` process, one after
another, so two systems never share the 2 cores at once and a crash costs one
row. A peer that is not installed is skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

from bench import systems
from bench.driver import MARK
from bench.processes import ROOT
from bench.report import Row, median_figures, render
from bench.workloads import WORKLOADS, Scale

DEFAULT_PEERS = list(systems.PEERS)
#: What ``--quick`` measures unless told: no HTTP run, no counting workers.
QUICK_WORKLOADS = ["drain", "latency", "submit_many", "sleep"]
#: The store each peer runs on.
PEER_BACKEND = {
    "huey": "redis",
    "dramatiq": "redis",
    "celery": "redis",
    "rq": "redis",
    "procrastinate": "postgresql",
    "flask-executor": "memory",
}


def notes_of(scale: Scale, repeats: int) -> list[str]:
    """What the figures mean, printed under the tables."""
    return [
        f"{scale.jobs} no-op jobs; one worker process with 4 threads per system; loopback"
        f" servers; median of {repeats} run(s). A shared 2-core machine is noisy: compare"
        " the ratios of one run, not figures of different runs.",
        "drain: from the first completed job until every result is readable; CPU ms/job:"
        " the worker's user+system time over that span (of the whole benchmark process"
        " for in-process systems).",
        f"latency: {scale.latency} sequential submits, each polled every 0.5 ms until its"
        " result is readable.",
        f"sleep: {scale.sleep} jobs of 10 ms on 4 threads; the ideal is"
        f" {scale.sleep * 0.01 / 4:.3g} s.",
        f"HTTP: 16 clients for {scale.http_seconds:g} s, POST then GET until completed,"
        " gunicorn -w 1 -k gthread --threads 16; web and worker as for drain.",
    ]


def _list(value: str, known: list[str], what: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    if value.strip() == "none":
        return []
    unknown = [name for name in names if name not in known]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})"
        )
    return names


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure flask-jobrunner and its peers side by side; print the tables.",
    )
    parser.add_argument(
        "--backends",
        type=lambda v: _list(v, systems.JOBRUNNER_BACKENDS, "backends"),
        default=systems.JOBRUNNER_BACKENDS,
        help="flask-jobrunner backends, comma-separated, or 'none'"
        f" (default: {','.join(systems.JOBRUNNER_BACKENDS)})",
    )
    parser.add_argument(
        "--peers",
        type=lambda v: _list(v, DEFAULT_PEERS, "peers"),
        default=DEFAULT_PEERS,
        help=f"peers, comma-separated, or 'none' (default: {','.join(DEFAULT_PEERS)})",
    )
    parser.add_argument(
        "--workloads",
        type=lambda v: _list(v, WORKLOADS, "workloads"),
        default=None,
        help=f"comma-separated (default: {','.join(WORKLOADS)}; with --quick:"
        f" {','.join(QUICK_WORKLOADS)}); drain includes enqueue, CPU and RSS",
    )
    parser.add_argument("--jobs", type=int, default=5000, help="no-op jobs enqueued and drained")
    parser.add_argument("--latency", type=int, default=200, help="sequential jobs timed")
    parser.add_argument("--sleep", type=int, default=500, help="10 ms jobs of the sleep run")
    parser.add_argument(
        "--http-seconds", type=float, default=5.0, help="seconds of HTTP load (default: 5)"
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every job count and duration"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="--scale 0.1: a run of well under a minute per few systems",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs per system; medians shown")
    parser.add_argument("--markdown", action="store_true", help="pipe tables instead of reST")
    parser.add_argument("--save", metavar="FILE", help="also write the figures to FILE as JSON")
    parser.add_argument(
        "--load",
        metavar="FILE",
        help="measure nothing: print the tables of figures saved with --save",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run flask-jobrunner's drain worker under py-spy; print its busiest functions",
    )
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds one system's run may take"
    )
    options = parser.parse_args(argv)
    if options.quick:
        options.scale = min(options.scale, 0.1)
    if options.workloads is None:
        options.workloads = QUICK_WORKLOADS if options.quick else WORKLOADS
    if options.repeats < 1 or options.scale <= 0:
        parser.error("--repeats must be at least 1 and --scale above 0")
    return options


def scale_of(options: argparse.Namespace) -> Scale:
    """The job counts of the run."""
    factor = options.scale
    return Scale(
        jobs=max(int(options.jobs * factor), 20),
        latency=max(int(options.latency * factor), 20),
        sleep=max(int(options.sleep * factor), 20),
        http_seconds=max(options.http_seconds * factor, 1.0),
        timeout=options.timeout,
    )


def run_driver(config: dict[str, object], timeout: float) -> dict[str, object]:
    """Run one measurement in a fresh process; its figures, or ``problem`` if it failed."""
    command = [sys.executable, "-m", "bench.driver", json.dumps(config)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    try:
        finished = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"problem": f"timed out after {timeout:.0f} s"}
    for line in finished.stdout.splitlines():
        if line.startswith(MARK):
            figures: dict[str, object] = json.loads(line[len(MARK) :])
            return figures
    tail = (finished.stderr or finished.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"problem": f"failed: {tail[0]}"}


def main(argv: list[str] | None = None) -> None:
    """Measure every chosen system (or load saved figures), then print the tables."""
    options = parse(argv)
    if options.load:
        with open(options.load) as file:
            saved = json.load(file)
        rows = [Row(**row) for row in saved["rows"]]
        print(render(rows, options.markdown, saved["notes"]))
        return
    scale = scale_of(options)
    plan = [("jobrunner", backend) for backend in options.backends]
    plan += [(name, PEER_BACKEND[name]) for name in options.peers]
    notes = notes_of(scale, options.repeats)
    print(
        f"{scale.jobs} no-op jobs, {scale.latency} sequential, {scale.sleep} x 10 ms,"
        f" {scale.http_seconds:g} s of HTTP; {options.repeats} repeat(s); median shown.",
        file=sys.stderr,
    )
    rows: list[Row] = []
    profiles: list[tuple[str, str]] = []
    for system, backend in plan:
        if system != "jobrunner" and (missing := systems.missing_peer(system)):
            print(missing, file=sys.stderr, flush=True)
            notes.append(missing)
            continue
        workloads = [w for w in options.workloads if system == "jobrunner" or w != "http"]
        config = {
            "system": system,
            "backend": backend,
            "workloads": workloads,
            "scale": dataclasses.asdict(scale),
            "profile": options.profile and system == "jobrunner",
        }
        runs, problem, label, note = [], None, system, ""
        started = time.monotonic()
        for _ in range(options.repeats):
            result = run_driver(config, options.timeout)
            if "problem" in result:
                problem = str(result["problem"])
                break
            label, note = str(result.pop("label")), str(result.pop("note"))
            if "profile" in result:
                profiles.append((label, str(result.pop("profile"))))
            runs.append(result)
        if label == system and system == "jobrunner":
            label = f"flask-jobrunner ({backend})"
        row = Row(system, backend, label, median_figures(runs) if runs else {}, problem)
        if note and note not in notes:
            notes.append(note)
        rows.append(row)
        summary = problem or ", ".join(f"{k} {v:.4g}" for k, v in row.figures.items())
        print(
            f"{label}: {summary} ({time.monotonic() - started:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    if "submit_many" in options.workloads:
        for row in rows:
            if not row.is_peer and not row.problem and "submit_many" not in row.figures:
                notes.append(f"{row.label}: submit_many n/a (the package has no jobs.submit_many)")
    if options.save:
        with open(options.save, "w") as file:
            json.dump({"rows": [dataclasses.asdict(row) for row in rows], "notes": notes}, file)
    print(render(rows, options.markdown, notes))
    for label, profile in profiles:
        print(f"\nProfile (py-spy) of the drain worker of {label}:\n")
        print(profile)
