"""``flask jobs …``: look at, submit and cancel jobs from the terminal."""

from __future__ import annotations

import json
import logging
import time
import typing as t

import click
from flask import current_app
from flask.cli import AppGroup

from .errors import JobRunnerError
from .job import Job
from .record import JobStatus

if t.TYPE_CHECKING:
    from .extension import AppState

jobs_cli = AppGroup("jobs", help="Background jobs of this app.")


def _state() -> AppState:
    state: AppState = current_app.extensions["jobrunner"]
    return state


def _print_job(job: Job) -> None:
    click.echo(json.dumps(job.to_dict(), indent=2, default=str))


@jobs_cli.command("list")
@click.option(
    "--status",
    type=click.Choice([status.value for status in JobStatus]),
    help="Only jobs in this status.",
)
@click.option("--task", help="Only jobs of this task.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many jobs."
)
def list_command(status: str | None, task: str | None, limit: int) -> None:
    """List jobs, newest first."""
    for job in _state().runner.list(status=status, task=task, limit=limit):
        progress = "" if job.percentage is None else f" {job.percentage:5.1f}%"
        click.echo(f"{job.id}  {job.status.value:<11} {job.task}{progress}")


@jobs_cli.command("show")
@click.argument("job_id")
def show_command(job_id: str) -> None:
    """Show the status document of one job."""
    job = _state().runner.get(job_id)
    if job is None:
        raise click.ClickException(f"There is no job with id '{job_id}'.")
    _print_job(job)


@jobs_cli.command("submit")
@click.argument("task")
@click.option(
    "--arg",
    "arguments",
    multiple=True,
    metavar="NAME=VALUE",
    help="A keyword argument; VALUE is read as JSON when it parses.",
)
@click.option("--watch", is_flag=True, help="Show a progress bar until the job ends.")
def submit_command(task: str, arguments: tuple[str, ...], watch: bool) -> None:
    """Submit a job of TASK (its name with '-' or '_')."""
    runner = _state().runner
    kwargs: dict[str, t.Any] = {}
    for argument in arguments:
        name, separator, text = argument.partition("=")
        if not separator:
            raise click.BadParameter(f"'{argument}' is not NAME=VALUE.", param_hint="--arg")
        try:
            kwargs[name] = json.loads(text)
        except ValueError:
            kwargs[name] = text
    name = task if task in runner.tasks else task.replace("-", "_")
    try:
        job = runner.submit(name, **kwargs)
    except JobRunnerError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"Submitted job {job.id}")
    if watch:
        job = _watch(job)
        _print_job(job)
        if job.status.value != "completed":
            raise SystemExit(1)


@jobs_cli.command("cancel")
@click.argument("job_id")
def cancel_command(job_id: str) -> None:
    """Cancel a job."""
    try:
        job = _state().runner.cancel(job_id)
    except JobRunnerError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"Job {job.id} is {job.status.value}.")


@jobs_cli.command("cleanup")
def cleanup_command() -> None:
    """Delete finished jobs older than JOBRUNNER_RESULT_TTL."""
    click.echo(f"Deleted {_state().backend.purge_expired()} expired jobs.")


@jobs_cli.command("worker")
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="How many worker processes to run.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="Jobs each process runs at once.  [default: JOBRUNNER_MAX_WORKERS]",
)
@click.option(
    "--queue",
    "queues",
    multiple=True,
    metavar="NAME",
    help="A queue to take jobs from; repeat for several.  [default: every task's queue]",
)
@click.option("--burst", is_flag=True, help="Exit once no job is left to run.")
def worker_command(
    processes: int, threads: int | None, queues: tuple[str, ...], burst: bool
) -> None:
    """Run jobs in this process (or in several), until SIGTERM or Ctrl-C.

    The first signal drains: no new job starts, running jobs get up to
    JOBRUNNER_SHUTDOWN_TIMEOUT seconds to finish, the rest go back to the
    queue. A second signal exits at once.
    """
    from .process import run_worker, supervise

    state = _state()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if processes > 1 and not state.backend.is_shared:
        raise click.UsageError(
            f"--processes {processes} needs a backend shared between processes; the"
            f" {type(state.backend).__name__} lives in one process. Use SQLite, PostgreSQL,"
            " MariaDB or Redis as JOBRUNNER_BACKEND."
        )
    _log_to_stderr()
    threads = threads or state.settings.max_workers
    served = list(queues) or None
    if processes == 1:
        status = run_worker(app, threads=threads, queues=served, burst=burst)
    else:
        status = supervise(app, processes=processes, threads=threads, queues=served, burst=burst)
    raise SystemExit(status)


@jobs_cli.command("init-db")
def init_db_command() -> None:
    """Create the tables the SQL backend keeps jobs in (nothing to do for others)."""
    backend = _state().backend
    try:
        backend.setup()
    except JobRunnerError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"The {type(backend).__name__} is ready.")


def _log_to_stderr() -> None:
    # A worker's log is its only output; show it unless the app set logging up.
    logger = logging.getLogger("flask_jobrunner")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(message)s")
        )
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _watch(job: Job) -> Job:
    with click.progressbar(length=100, label=job.task, show_percent=True) as bar:
        shown = 0
        while not job.is_finished:
            time.sleep(0.2)
            job.refresh()
            percentage = int(job.percentage or 0)
            bar.label = f"{job.task}: {job.message or job.status.value}"
            bar.update(percentage - shown)
            shown = percentage
        bar.update(100 - shown if job.status.value == "completed" else 0)
    return job
