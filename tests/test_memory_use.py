"""What a worker process loads: only what running jobs needs, to keep its memory small."""

from __future__ import annotations

import json
import subprocess
import sys

# An app with an HTTP task and no cron schedule, whose worker runs the queue empty and exits.
WORKER = """
import json, sys
from flask import Flask
from flask_jobrunner import JobRunner

jobs = JobRunner()

@jobs.task(http=True)
def add(a: int, b: int) -> int:
    return a + b

@jobs.periodic(every=60)
@jobs.task
def tick() -> None:
    pass

app = Flask("worker")
app.config.update(JOBRUNNER_RUN_WORKERS=False, JOBRUNNER_SCHEDULER=False)
jobs.init_app(app)
with app.app_context():
    job = add.submit(2, 3)
result = app.test_cli_runner().invoke(args=["jobs", "worker", "--burst"])
with app.app_context():
    status = jobs.get(job.id).status.value
print(json.dumps({"output": result.output, "status": status, "modules": sorted(sys.modules)}))
"""

#: Modules that serve HTTP routes, the dashboard, or cron schedules: a worker needs none.
NOT_FOR_WORKERS = (
    "flask_jobrunner.dashboard",
    "flask_jobrunner.events",
    "flask_jobrunner.openapi",
    "croniter",
    "dateutil",
)


def test_a_worker_loads_no_module_of_the_routes_dashboard_or_cron_schedules() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WORKER], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["status"] == "completed", report["output"]
    loaded = [
        name
        for name in report["modules"]
        if any(name == module or name.startswith(f"{module}.") for module in NOT_FOR_WORKERS)
    ]
    assert loaded == []
    # The API is still mounted, so its routes and url_for work in the worker too.
    assert "flask_jobrunner.api" in report["modules"]
