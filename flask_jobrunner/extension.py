"""``JobRunner``: the Flask extension that ties tasks, backend, worker and API together."""

from __future__ import annotations

import atexit
import dataclasses
import math
import os
import signal
import sys
import threading
import typing as t
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, tzinfo

from flask import Flask, Response, current_app, has_request_context, jsonify, request

from .backends import load_backend
from .backends.base import Backend
from .config import Settings, check_options, read_settings
from .errors import (
    ConfigurationError,
    InvalidArguments,
    JobNotFound,
    JobRunnerError,
    TaskNotFound,
)
from .executor import execute, job_context
from .job import Job
from .record import JobRecord, JobStatus, is_job_id, new_job_id, utcnow
from .schedule import Schedule, Scheduler, make_schedule, resolve_run_at
from .signals import job_submitted
from .task import Task
from .worker import Worker

P = t.ParamSpec("P")
R = t.TypeVar("R")

#: ``fn(action, task_name, job) -> bool``; see :meth:`JobRunner.authorize`.
AuthorizeCallback = Callable[[str, "str | None", "Job | None"], bool]
#: ``fn() -> str | None``; see :meth:`JobRunner.identity`.
IdentityCallback = Callable[[], "str | None"]

_states: weakref.WeakSet[AppState] = weakref.WeakSet()


class AppState:
    """What one app's ``JobRunner`` holds, kept in ``app.extensions["jobrunner"]``.

    :param runner: The extension.
    :param settings: The app's validated ``JOBRUNNER_*`` settings.
    :param backend: The app's backend.
    """

    def __init__(self, runner: JobRunner, settings: Settings, backend: Backend) -> None:
        self.runner = runner
        self.settings = settings
        self.backend = backend
        self.worker: Worker | None = None
        self._worker_pid: int | None = None
        self._draining = False
        self._lock = threading.Lock()
        self.scheduler: Scheduler | None = None
        self._scheduler_pid: int | None = None
        _states.add(self)

    def ensure_worker(self, app: Flask) -> None:
        """Start this process's worker once, unless the app only enqueues.

        A process forked after the worker started (as gunicorn forks) starts
        its own: threads do not survive a fork. None starts while a shutdown
        drains the last one: a job submitted meanwhile (say, by a draining
        job) waits in the queue.
        """
        self.ensure_scheduler(app)
        if self._worker_pid == os.getpid() or not self.settings.run_workers:
            return
        if self.settings.eager:
            return
        with self._lock:
            if self._worker_pid == os.getpid() or self._draining:
                return
            # Before the first job can start, so a SIGTERM never kills a job outright.
            _stop_on_sigterm()
            atexit.register(self.shutdown)
            worker = Worker(app, self, threads=self.settings.max_workers)
            # Known before it starts: a SIGTERM during the start must still drain it.
            self.worker, self._worker_pid = worker, os.getpid()
            worker.start()

    def ensure_scheduler(self, app: Flask) -> None:
        """Start this process's scheduler thread once, if the app has schedules.

        It starts where the worker does (a web process's first request or
        submit, ``flask jobs worker``), even when the app only enqueues; not
        with ``JOBRUNNER_SCHEDULER = False`` nor in eager mode.
        """
        if self._scheduler_pid == os.getpid() or not self.runner.schedules:
            return
        if not self.settings.scheduler or self.settings.eager:
            return
        with self._lock:
            if self._scheduler_pid == os.getpid() or self._draining:
                return
            scheduler = Scheduler(app, self)
            self.scheduler, self._scheduler_pid = scheduler, os.getpid()
            atexit.register(self.stop_scheduler)
            scheduler.start()

    def stop_scheduler(self, timeout: float = 10.0) -> None:
        """Stop this process's scheduler thread, if it runs; a submit under way ends first."""
        with self._lock:
            scheduler, self.scheduler = self.scheduler, None
            mine = self._scheduler_pid == os.getpid()
            self._scheduler_pid = None
        if scheduler is not None and mine:
            atexit.unregister(self.stop_scheduler)
            scheduler.stop(timeout)

    def adopt_worker(self, worker: Worker) -> None:
        """Make *worker*, started by ``flask jobs worker``, this process's worker.

        A job it runs that submits another then finds a worker running and
        starts no second pool.
        """
        with self._lock:
            self.worker, self._worker_pid = worker, os.getpid()

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop the worker, draining running jobs for up to *timeout* seconds.

        Returns whether every running job finished in time.
        """
        self.stop_scheduler()
        with self._lock:
            worker, self.worker = self.worker, None
            mine = self._worker_pid == os.getpid()
            self._worker_pid = None
            if worker is not None and mine:
                self._draining = True
        if worker is None or not mine:
            return True
        atexit.unregister(self.shutdown)
        if timeout is None:
            timeout = self.settings.shutdown_timeout
        try:
            return worker.stop(timeout)
        finally:
            self._draining = False

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self.worker = None
        self._worker_pid = None
        self._draining = False
        self.scheduler = None
        self._scheduler_pid = None


def _new_record(
    state: AppState,
    task: Task[t.Any, t.Any],
    args: list[t.Any],
    kwargs: dict[str, t.Any],
    created_by: str | None,
) -> JobRecord:
    """A new pending job of *task*, its arguments validated already."""
    return JobRecord(
        id=new_job_id(),
        task=task.name,
        queue=task.queue,
        args=args,
        kwargs=kwargs,
        max_retries=task.retries,
        timeout=task.timeout or state.settings.timeout,
        created_by=created_by,
        unique_key=task.name if task.unique else None,
    )


def _call_arguments(
    task: Task[t.Any, t.Any], number: int, call: Mapping[str, t.Any] | Sequence[t.Any]
) -> tuple[list[t.Any], dict[str, t.Any]]:
    """The validated arguments of call *number* of a :meth:`JobRunner.submit_many`."""
    if isinstance(call, Mapping):
        args: Sequence[t.Any] = ()
        kwargs: Mapping[str, t.Any] = call
    elif isinstance(call, (list, tuple)):
        args, kwargs = call, {}
    else:
        raise InvalidArguments(
            f"Call {number} of 'submit_many' for task '{task.name}' is a"
            f" {type(call).__name__}: pass a mapping of keyword arguments or a list or"
            " tuple of positional arguments.",
            [{"call": number, "parameter": None, "message": "Not a mapping, list or tuple"}],
        )
    try:
        return task.validate(args, kwargs)
    except InvalidArguments as error:
        details = error.details if isinstance(error.details, list) else []
        raise InvalidArguments(
            f"Call {number} of 'submit_many': {error.message}",
            [{"call": number, **detail} for detail in details],
        ) from None


def _reset_after_fork() -> None:
    for state in list(_states):
        state._after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_reset_after_fork)


def _stop_on_sigterm() -> None:
    """Make SIGTERM a normal exit, so the at-exit drain runs, if nobody handles it yet."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(0)


class PeriodicDecorator(t.Protocol):
    """What :meth:`JobRunner.periodic` returns: it takes a task or a function, returns a task."""

    @t.overload
    def __call__(self, func: Task[P, R], /) -> Task[P, R]: ...

    @t.overload
    def __call__(self, func: Callable[P, R], /) -> Task[P, R]: ...

    def __call__(self, func: t.Any, /) -> t.Any:
        """Register the schedule for *func* and return its task."""


@dataclasses.dataclass
class JobPage:
    """A page of jobs from :meth:`JobRunner.list`, newest first."""

    #: The jobs on this page.
    jobs: list[Job]
    #: Pass it as ``cursor`` to get the next page; ``None`` on the last page.
    next_cursor: str | None

    def __iter__(self) -> Iterator[Job]:
        return iter(self.jobs)

    def __len__(self) -> int:
        return len(self.jobs)


class JobRunner:
    """Background jobs for a Flask app.

    Register tasks with :meth:`task`; submit them with
    :meth:`Task.submit <flask_jobrunner.Task.submit>` or :meth:`submit`;
    clients use the HTTP API mounted at ``JOBRUNNER_URL_PREFIX``.

    :param app: The app to set up now; or call :meth:`init_app` later.
    :param options: Defaults for the ``JOBRUNNER_*`` settings, in lower case
        without the prefix (``backend="sqlite:///jobs.db"``); the app's
        config overrides them.
    """

    def __init__(self, app: Flask | None = None, **options: t.Any) -> None:
        check_options(options)
        self.options = options
        #: Every registered task by name.
        self.tasks: dict[str, Task[t.Any, t.Any]] = {}
        #: Every periodic schedule by name; see :meth:`periodic`.
        self.schedules: dict[str, Schedule] = {}
        self.authorize_callback: AuthorizeCallback | None = None
        self.identity_callback: IdentityCallback | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Set up *app*: read its settings, open its backend, mount the API and CLI.

        :raises ConfigurationError: if a setting or the backend URL is not usable.
        """
        from .api import create_blueprint, error_response, json_routing_errors
        from .cli import jobs_cli

        settings = read_settings(app.config, self.options)
        for key, value in settings.model_dump().items():
            app.config.setdefault(f"JOBRUNNER_{key.upper()}", value)
        backend = settings.backend
        if not isinstance(backend, Backend):
            backend = load_backend(backend, app=app, **settings.model_dump(exclude={"backend"}))
        state = AppState(self, settings, backend)
        app.extensions["jobrunner"] = state
        app.register_blueprint(create_blueprint(settings.url_prefix))
        if settings.dashboard:
            from .dashboard import create_blueprint as create_dashboard

            app.register_blueprint(create_dashboard(settings.dashboard_url))
        app.before_request(json_routing_errors)
        # An app's own submit route answers bad input as the API does, not with a 500;
        # a handler the app registered for these errors first is kept.
        if JobRunnerError not in app.error_handler_spec[None][None]:
            app.register_error_handler(JobRunnerError, error_response)
        if settings.run_workers and not settings.eager:
            # Now, in the main thread: the pool starts later in a request thread,
            # which may not set signal handlers, and SIGTERM must still drain it.
            _stop_on_sigterm()
            app.before_request(lambda: state.ensure_worker(app))
        elif settings.scheduler and not settings.eager:
            app.before_request(lambda: state.ensure_scheduler(app))
        app.cli.add_command(jobs_cli)

    @property
    def queues(self) -> list[str]:
        """Every queue a registered task uses, ``"default"`` first."""
        names = {task.queue for task in self.tasks.values()} - {"default"}
        return ["default", *sorted(names)]

    # -- tasks ---------------------------------------------------------------

    @t.overload
    def task(self, func: Callable[P, R], /) -> Task[P, R]: ...

    @t.overload
    def task(
        self,
        *,
        name: str | None = None,
        retries: int = 0,
        retry_backoff: float = 1.0,
        timeout: float | None = None,
        unique: bool = False,
        http: bool = False,
        queue: str = "default",
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        func: Callable[..., t.Any] | None = None,
        *,
        name: str | None = None,
        retries: int = 0,
        retry_backoff: float = 1.0,
        timeout: float | None = None,
        unique: bool = False,
        http: bool = False,
        queue: str = "default",
    ) -> t.Any:
        """Register a function as a task; use as ``@jobs.task`` or ``@jobs.task(...)``.

        :param name: The name clients submit it by; defaults to the function's name.
        :param retries: How many times a failed job is tried again (not after a ValueError).
        :param retry_backoff: Seconds before the first retry; doubles each time, with jitter.
        :param timeout: Seconds a job may run; defaults to ``JOBRUNNER_TIMEOUT``.
        :param unique: Allow at most one pending or running job of this task.
        :param http: Let clients submit it by name over the HTTP API.
        :param queue: The queue its jobs go to.
        :raises ConfigurationError: if a task of the same name exists.
        """

        def register(func: Callable[..., t.Any]) -> Task[t.Any, t.Any]:
            task = Task(
                self,
                func,
                name=name,
                retries=retries,
                retry_backoff=retry_backoff,
                timeout=timeout,
                unique=unique,
                http=http,
                queue=queue,
            )
            existing = self.tasks.get(task.name)
            if existing is not None:
                raise ConfigurationError(
                    f"A task named '{task.name}' is already registered"
                    f" ({existing.func.__module__}.{existing.func.__qualname__})."
                    f" Pass name='...' to register this one under another name."
                )
            self.tasks[task.name] = task
            return task

        return register if func is None else register(func)

    def periodic(
        self,
        cron: str | None = None,
        /,
        *,
        every: timedelta | float | None = None,
        timezone: str | tzinfo = "UTC",
        args: Sequence[t.Any] = (),
        kwargs: Mapping[str, t.Any] | None = None,
        name: str | None = None,
    ) -> PeriodicDecorator:
        """Submit a task on a schedule, as ``@jobs.periodic("0 2 * * *", timezone="UTC")``.

        It decorates a plain function, which it registers as a task with the
        default options, or a :class:`Task` (put it above ``@jobs.task(...)``,
        or call ``jobs.periodic(...)(task)``); it returns the task. Each tick
        submits one job with *args* and *kwargs*, once across every process
        that shares a durable backend; see :doc:`/scheduling`.

        :param cron: A cron expression, read in *timezone*: five fields, or
            six with seconds last.
        :param every: Instead of *cron*, a fixed interval (a ``timedelta`` or
            seconds, at least one second); ticks fall on whole multiples of it
            since 1970-01-01 UTC.
        :param timezone: An IANA timezone name or a ``tzinfo`` for *cron*.
        :param args: Positional arguments of every job, checked now.
        :param kwargs: Keyword arguments of every job, checked now.
        :param name: The schedule's name; defaults to the task's name. It
            identifies ticks across processes and restarts: keep it stable.
        :raises ConfigurationError: if the schedule is not usable, or a
            schedule of the same name exists.
        """

        def register(func: t.Any) -> t.Any:
            task = func if isinstance(func, Task) else self.task(func)
            schedule = make_schedule(
                task,
                cron,
                every=every,
                timezone_name=timezone,
                args=args,
                kwargs=kwargs,
                name=name,
            )
            if schedule.name in self.schedules:
                raise ConfigurationError(
                    f"A schedule named '{schedule.name}' is already registered."
                    " Pass name='...' to register this one under another name."
                )
            self.schedules[schedule.name] = schedule
            return task

        return t.cast(PeriodicDecorator, register)

    def get_task(self, name: str) -> Task[t.Any, t.Any]:
        """The task registered as *name*.

        :raises TaskNotFound: if there is none.
        """
        task = self.tasks.get(name)
        if task is None:
            raise TaskNotFound(f"There is no task named '{name}'.")
        return task

    # -- jobs ----------------------------------------------------------------

    def submit(self, name: str, /, *args: t.Any, **kwargs: t.Any) -> Job:
        """Submit a job of the task registered as *name*; see :meth:`Task.submit`.

        :raises TaskNotFound: if there is no such task.
        :raises InvalidArguments: if the arguments do not fit the task.
        :raises JobConflict: if the task is ``unique`` and already has a job.
        :raises BackendUnavailable: if the backend cannot be reached.
        """
        return self.get_task(name).submit(*args, **kwargs)

    def enqueue(
        self,
        task: Task[t.Any, t.Any] | str,
        args: Sequence[t.Any] = (),
        kwargs: Mapping[str, t.Any] | None = None,
        *,
        idempotency_key: str | None = None,
        created_by: str | None = None,
        delay: float | None = None,
        run_at: datetime | None = None,
    ) -> Job:
        """Submit a job with every option; the form the HTTP API uses.

        Here *args* and *kwargs* are always the task's own arguments, even
        for a task with parameters named ``delay`` or ``run_at``.

        :param task: The task or its name.
        :param args: Positional arguments.
        :param kwargs: Keyword arguments.
        :param idempotency_key: A client's key: the same key (for the same
            identity) within ``JOBRUNNER_RESULT_TTL`` returns the first job.
        :param created_by: Who submits; defaults to the identity of the
            current request when :meth:`identity` is set.
        :param delay: Seconds before the job may start, on the backend's clock.
        :param run_at: When the job may start: a timezone-aware datetime (a
            naive one is refused); one in the past starts it at once. Not
            with *delay*.
        :raises InvalidArguments: if the arguments do not fit the task, or
            *delay* or *run_at* is not usable.
        """
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        state = self.get_state(app)
        if isinstance(task, str):
            task = self.get_task(task)
        args, kwargs = task.validate(args, kwargs or {})
        if created_by is None and has_request_context():
            created_by = self.current_identity()
        record = _new_record(state, task, args, kwargs, created_by)
        record.run_at = resolve_run_at(state.backend.now, delay, run_at)
        if idempotency_key is not None:
            record.idempotency_key = f"{created_by}:{idempotency_key}"
        stored, created = state.backend.enqueue(record)
        job = Job(stored, state.backend)
        if not created:
            return job
        if job_submitted.receivers:  # blinker's send costs a submit more than this check
            job_submitted.send(app, job=job)
        if state.settings.eager:
            self._run_eagerly(app, state, task.queue)
            return job.refresh()
        state.ensure_worker(app)
        return job

    def submit_many(
        self,
        task: Task[t.Any, t.Any] | str,
        calls: Iterable[Mapping[str, t.Any] | Sequence[t.Any]],
        *,
        created_by: str | None = None,
    ) -> list[Job]:
        """Submit many jobs of one task in one backend call; returns their handles in order.

        Each item of *calls* holds the arguments of one job: a mapping holds
        keyword arguments, a list or tuple positional ones. Every call is
        checked before anything is stored, and then the jobs are stored all
        at once (on Redis and SQL, all or none), far faster than a
        :meth:`submit` per job. A ``unique`` task cannot be submitted this
        way, and there is no idempotency key: use :meth:`enqueue` for those.

        :param task: The task or its name.
        :param calls: The arguments of each job.
        :param created_by: Who submits; defaults to the identity of the
            current request when :meth:`identity` is set.
        :raises TaskNotFound: if there is no such task.
        :raises InvalidArguments: if the task is ``unique``, or if a call does
            not fit the task (the message names the call, counted from 0, and
            the parameter); nothing is stored then.
        :raises BackendUnavailable: if the backend cannot be reached.
        """
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        state = self.get_state(app)
        if isinstance(task, str):
            task = self.get_task(task)
        if task.unique:
            raise InvalidArguments(
                f"The task '{task.name}' is unique, so 'submit_many' cannot submit it:"
                " each of its jobs needs a check of its own. Call 'submit' once per job."
            )
        if created_by is None and has_request_context():
            created_by = self.current_identity()
        records = [
            _new_record(state, task, *_call_arguments(task, number, call), created_by)
            for number, call in enumerate(calls)
        ]
        if not records:
            return []
        state.backend.enqueue_many(records)
        jobs = []
        announce = bool(job_submitted.receivers)
        for record in records:
            record.status = JobStatus.PENDING
            job = Job(record, state.backend)
            if announce:
                job_submitted.send(app, job=job)
            jobs.append(job)
        if state.settings.eager:
            self._run_eagerly(app, state, task.queue)
            return [job.refresh() for job in jobs]
        state.ensure_worker(app)
        return jobs

    def get(self, job_id: str) -> Job | None:
        """The job with this id, or ``None`` if it is unknown, expired or not a job id."""
        if not is_job_id(job_id):
            return None
        state = self.get_state()
        record = state.backend.get(job_id)
        return None if record is None else Job(record, state.backend)

    def list(
        self,
        *,
        status: JobStatus | str | None = None,
        task: str | None = None,
        created_by: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """A page of jobs, newest first.

        :param status: Only jobs in this status.
        :param task: Only jobs of this task.
        :param created_by: Only jobs submitted by this identity.
        :param limit: The most jobs on the page.
        :param cursor: ``next_cursor`` of the previous page.
        :raises InvalidArguments: if *cursor* is not a cursor.
        """
        state = self.get_state()
        records, next_cursor = state.backend.list_jobs(
            status=None if status is None else JobStatus(status),
            task=task,
            created_by=created_by,
            limit=limit,
            cursor=cursor,
        )
        return JobPage([Job(record, state.backend) for record in records], next_cursor)

    def cancel(self, job_id: str) -> Job:
        """Cancel a job: a pending one at once, a running one at its next check.

        Returns the job as it is after the request; a finished job is
        returned unchanged.

        :raises JobNotFound: if there is no such job.
        """
        state = self.get_state()
        record = state.backend.request_cancel(job_id) if is_job_id(job_id) else None
        if record is None:
            raise JobNotFound(f"There is no job with id '{job_id}'.")
        if state.worker is not None and record.cancel_requested:
            state.worker.cancel_requested(job_id)
        return Job(record, state.backend)

    def accepted(self, job: Job) -> Response:
        """The ``202 Accepted`` response for a submitted job, for an app's own routes.

        It carries ``Location`` and ``Retry-After`` headers and the body
        ``{"job_id", "status", "message", "polling_url"}``.
        """
        state = self.get_state()
        url = self.polling_url(job.id)
        response = jsonify(
            job_id=job.id,
            status=job.status.value,
            message="Job accepted for processing",
            polling_url=url,
        )
        response.status_code = 202
        response.headers["Location"] = url
        retry_after = state.settings.retry_after_initial
        run_at = job.record.run_at
        if run_at is not None and job.record.started_at is None:
            # A delayed job: the first poll worth making is when it may start.
            wait = math.ceil((run_at - utcnow()).total_seconds())
            retry_after = max(retry_after, min(wait, state.settings.retry_after_max))
        response.headers["Retry-After"] = str(retry_after)
        return response

    def polling_url(self, job_id: str) -> str:
        """The URL path where clients read the job.

        During a request it starts with the request's script root, so it
        stays right for an app mounted below the root of the server.
        """
        root = request.script_root if has_request_context() else ""
        return f"{root}{self.get_state().settings.url_prefix}/{job_id}"

    def shutdown(self, app: Flask | None = None, timeout: float | None = None) -> bool:
        """Stop the app's worker in this process: stop claiming, drain, give back.

        :param app: The app; defaults to the current app.
        :param timeout: Seconds to let running jobs finish; defaults to
            ``JOBRUNNER_SHUTDOWN_TIMEOUT``.
        :returns: Whether every running job finished in time.
        """
        return self.get_state(app).shutdown(timeout)

    # -- access ----------------------------------------------------------------

    def authorize(self, func: AuthorizeCallback) -> AuthorizeCallback:
        """Register the function that decides who may use the HTTP API.

        It is called as ``func(action, task_name, job)`` with *action* one of
        ``"submit"``, ``"read"``, ``"list"`` and ``"cancel"``, and answers
        ``True`` to allow. Until one is registered the API answers 403, unless
        the app is in testing or debug mode or ``JOBRUNNER_API_OPEN`` is set.

        With an :meth:`identity`, it is also asked about each job of another
        client that a request reads, cancels or lists, with that job: ``True``
        grants it, so compare ``job.created_by`` before answering ``True``.
        """
        self.authorize_callback = func
        return func

    def identity(self, func: IdentityCallback) -> IdentityCallback:
        """Register the function that names the client of the current request.

        Its answer is stored as a job's ``created_by``; a client then reads,
        lists and cancels only its own jobs over HTTP, unless
        :meth:`authorize` allows it another's job.
        """
        self.identity_callback = func
        return func

    def current_identity(self) -> str | None:
        """The identity of the current request's client, or ``None``."""
        if self.identity_callback is None:
            return None
        identity = self.identity_callback()
        return None if identity is None else str(identity)

    # -- internals -------------------------------------------------------------

    def get_state(self, app: Flask | None = None) -> AppState:
        """The state this extension keeps for *app* (default: the current app).

        :raises RuntimeError: if *app* was not set up with this extension.
        """
        if app is None:
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        state = app.extensions.get("jobrunner")
        if not isinstance(state, AppState) or state.runner is not self:
            raise RuntimeError(
                "The app is not registered with this 'JobRunner'. Did you forget to call"
                " 'init_app'?"
            )
        return state

    def _run_eagerly(self, app: Flask, state: AppState, queue: str) -> None:
        # Retries are due at once in eager mode, so this loop also runs them.
        while claims := state.backend.claim([queue], lease=state.settings.lease):
            claim = claims[0]
            execute(app, state, job_context(app, state, claim), Job(claim.record, state.backend))
