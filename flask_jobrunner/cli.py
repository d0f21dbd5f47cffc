"""``flask jobs …``: look at, submit and cancel jobs from the terminal."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
import typing as t
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import click
from flask import current_app
from flask.cli import AppGroup

from .backends.base import revision
from .errors import BackendUnavailable, JobRunnerError
from .job import Job
from .record import JobRecord, JobStatus

if t.TYPE_CHECKING:
    from .extension import AppState

jobs_cli = AppGroup("jobs", help="Background jobs of this app.")

#: The exit status of ``flask jobs watch`` (and ``submit --watch``) for each way a job ends.
WATCH_EXIT_STATUS = {JobStatus.COMPLETED: 0, JobStatus.FAILED: 1, JobStatus.CANCELLED: 3}
#: The exit status when the job is unknown, or expired while it was watched.
WATCH_GONE_STATUS = 4
# Seconds of one wait for a change; a quiet job is simply waited for again.
_WATCH_WAIT = 10.0
_WATCH_MAX_BACKOFF = 30.0


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
        _watch_to_the_end(job)


@jobs_cli.command("watch")
@click.argument("job_id")
def watch_command(job_id: str) -> None:
    """Follow a job until it ends: a progress bar, then its status document.

    Exits with status 0 if the job completed, 1 if it failed, 3 if it was
    cancelled, and 4 if there is no such job. Without a terminal it prints
    one line per change instead of the bar.
    """
    try:
        job = _state().runner.get(job_id)
    except JobRunnerError as error:
        raise click.ClickException(error.message) from None
    if job is None:
        click.echo(f"Error: There is no job with id '{job_id}'.", err=True)
        raise SystemExit(WATCH_GONE_STATUS)
    _watch_to_the_end(job)


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


@jobs_cli.command("schedule")
def schedule_command() -> None:
    """List the periodic schedules and when each runs next."""
    state = _state()
    schedules = sorted(state.runner.schedules.values(), key=lambda schedule: schedule.name)
    if not schedules:
        click.echo("No periodic schedules are registered.")
        return
    now = datetime.now(timezone.utc)
    for schedule in schedules:
        tick = schedule.next_tick(now)
        local = tick.astimezone(schedule.timezone)
        shown = "" if schedule.every is not None else f" ({local:%Y-%m-%d %H:%M:%S %Z})"
        click.echo(
            f"{schedule.name}  task {schedule.task.name}  {schedule.describe()}"
            f"  next {tick:%Y-%m-%dT%H:%M:%SZ}{shown}"
        )
    if not state.settings.scheduler:
        click.echo("JOBRUNNER_SCHEDULER is False: no process of this app submits them.")


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


def _watch_to_the_end(job: Job) -> t.NoReturn:
    """Show the job's changes until it ends, print its status document, exit with its status."""
    record = _watch(job)
    if record is None:
        click.echo(f"Error: Job '{job.id}' no longer exists; finished jobs expire.", err=True)
        raise SystemExit(WATCH_GONE_STATUS)
    job.record = record
    _print_job(job)
    raise SystemExit(WATCH_EXIT_STATUS[record.status])


def _watch(job: Job) -> JobRecord | None:
    """Show each change of the job until it ends; the final record, or ``None`` if it vanished.

    An unreachable backend is waited for, with a growing pause, as workers do.
    """
    from .events import follow

    backend = _state().backend
    record, seen = job.record, None
    delay = 1.0
    with _progress_display(job.task) as show:
        while True:
            try:
                for change in follow(backend, record, after=seen, wait=_WATCH_WAIT):
                    if change is not None:
                        record, seen, delay = change, revision(change), 1.0
                        show(change)
                return record if record.is_finished else None
            except BackendUnavailable as error:
                click.echo(f"{error.message} Trying again in {delay:g} s.", err=True)
                time.sleep(delay)
                delay = min(delay * 2, _WATCH_MAX_BACKOFF)


@contextlib.contextmanager
def _progress_display(label: str) -> Iterator[Callable[[JobRecord], None]]:
    """A function that shows one state of a job: on a bar in a terminal, else as a line."""
    if not sys.stdout.isatty():
        yield lambda record: click.echo(_progress_line(record))
        return
    with click.progressbar(length=100, label=label, show_eta=False) as bar:

        def show(record: JobRecord) -> None:
            bar.label = f"{record.task}: {record.message or record.status.value}"
            steps = max(int(_percentage(record)) - bar.pos, 0)
            if steps:
                bar.update(steps)
            else:  # update() draws only when the bar moves; the label changed
                bar.render_progress()

        yield show


def _progress_line(record: JobRecord) -> str:
    parts = [f"{record.status.value:<11}", f"{_percentage(record):5.1f}%"]
    if record.items_processed is not None:
        total = "?" if record.total_items is None else record.total_items
        parts.append(f"{record.items_processed}/{total}")
    if record.message:
        parts.append(record.message)
    return "  ".join(parts)


def _percentage(record: JobRecord) -> float:
    return 100.0 if record.status is JobStatus.COMPLETED else record.percentage or 0.0
