"""The systems the benchmark measures: flask-jobrunner per backend, and each peer.

Each module holds one system: its tasks (importable by its own worker
command), how to submit, how to tell a job is done, and how its worker runs.
"""

from __future__ import annotations

import importlib

from bench.systems.base import System

#: Name -> ``module:Class``, imported only when chosen, so a peer that is not
#: installed costs nothing until it is asked for.
PEERS = {
    "huey": "bench.systems.huey_peer:Huey",
    "dramatiq": "bench.systems.dramatiq_peer:Dramatiq",
    "celery": "bench.systems.celery_peer:Celery",
    "rq": "bench.systems.rq_peer:RQ",
    "procrastinate": "bench.systems.procrastinate_peer:Procrastinate",
    "flask-executor": "bench.systems.flask_executor_peer:FlaskExecutor",
}
JOBRUNNER_BACKENDS = ["memory", "sqlite", "postgresql", "mysql", "redis"]
#: The distribution each peer comes from, to say what to install when it is missing.
PEER_PACKAGES = {
    "huey": "huey",
    "dramatiq": "dramatiq",
    "celery": "celery",
    "rq": "rq",
    "procrastinate": "procrastinate",
    "flask-executor": "flask_executor",
}


def load(name: str) -> type[System]:
    """The class of system *name*: a peer's name or ``jobrunner``."""
    spec = "bench.systems.jobrunner:JobRunnerSystem" if name == "jobrunner" else PEERS[name]
    module, _, attribute = spec.partition(":")
    cls: type[System] = getattr(importlib.import_module(module), attribute)
    return cls


def missing_peer(name: str) -> str | None:
    """Why peer *name* cannot run here (its package is not installed), or ``None``."""
    try:
        importlib.import_module(PEER_PACKAGES[name])
    except ImportError:
        return f"{name}: skipped, not installed (pip install -r bench/requirements.txt)"
    return None
