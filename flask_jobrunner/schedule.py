"""Delayed and periodic jobs: when a job may start, and the thread that submits schedules.

A :class:`Schedule` says when its ticks fall: a cron expression read by
``croniter`` in a timezone, or a fixed interval. The :class:`Scheduler`
thread of each process submits one job per tick. Every process submits each
due tick with an idempotency key made of the schedule's name and the tick, so
the backend stores exactly one job per tick however many processes share it,
and a process that dies halfway loses nothing: the next process that sees the
tick stores it. :meth:`Backend.claim_tick <flask_jobrunner.Backend.claim_tick>`
then records the tick, and the one process it answers ``True`` logs it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import typing as t
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone, tzinfo

from .errors import BackendUnavailable, ConfigurationError, InvalidArguments, JobConflict
from .record import utcnow

if t.TYPE_CHECKING:
    from flask import Flask

    from .extension import AppState
    from .task import Task

logger = logging.getLogger("flask_jobrunner")

#: The name of the scheduler thread of each process.
THREAD_NAME = "jobrunner-scheduler"
#: Longest sleep of the scheduler, so a changed wall clock is noticed this late at most.
MAX_SLEEP = 60.0
#: Longest wait between two tries while the backend is unreachable.
MAX_BACKOFF = 5.0
#: Longest schedule name: it goes into the idempotency key of every job it submits.
MAX_NAME_LENGTH = 150

#: How the idempotency key of every scheduled job starts; refused in a client's key.
SCHEDULE_KEY_PREFIX = "jobrunner-schedule:"

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def resolve_run_at(
    clock: Callable[[], datetime], delay: float | None = None, run_at: datetime | None = None
) -> datetime | None:
    """When a job submitted with *delay* or *run_at* may start (``None``: at once).

    :param clock: The backend's clock, which claims compare ``run_at`` with;
        read only for a *delay*.
    :param delay: Seconds from *now*; a number that is finite and not negative.
    :param run_at: A timezone-aware time; a time in the past starts the job at once.
    :raises InvalidArguments: if a value is not usable, or both are given.
    """
    if delay is not None and run_at is not None:
        raise InvalidArguments(
            "Give 'delay' or 'run_at', not both.", [{"parameter": "delay", "message": "both"}]
        )
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, (int, float)):
            raise _invalid("delay", f"'delay' must be a number of seconds, not {delay!r}.")
        if not math.isfinite(delay) or delay < 0:
            raise _invalid("delay", f"'delay' must be finite seconds >= 0, not {delay}.")
        if delay == 0:
            return None
        try:
            return clock() + timedelta(seconds=delay)
        except OverflowError:
            raise _invalid("delay", f"'delay' of {delay} seconds is too far ahead.") from None
    if run_at is not None:
        if not isinstance(run_at, datetime):
            raise _invalid("run_at", f"'run_at' must be a datetime, not {run_at!r}.")
        if run_at.utcoffset() is None:
            raise _invalid(
                "run_at",
                f"'run_at' {run_at.isoformat()} has no timezone. Pass an aware datetime,"
                " such as datetime.now(timezone.utc) + timedelta(minutes=5).",
            )
        return run_at.astimezone(timezone.utc)
    return None


def _invalid(parameter: str, message: str) -> InvalidArguments:
    return InvalidArguments(message, [{"parameter": parameter, "message": message}])


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When a task is submitted on its own; made by :meth:`JobRunner.periodic
    <flask_jobrunner.JobRunner.periodic>`.

    Exactly one of :attr:`cron` and :attr:`every` is set.
    """

    #: The schedule's name, unique in its :class:`~flask_jobrunner.JobRunner`.
    name: str
    #: The task each tick submits.
    task: Task[t.Any, t.Any]
    #: A cron expression: five fields, or six with seconds last (``croniter``'s syntax).
    cron: str | None = None
    #: A fixed interval; ticks fall on whole multiples of it since 1970-01-01 UTC.
    every: timedelta | None = None
    #: The timezone a cron expression is read in.
    timezone: tzinfo = timezone.utc
    #: Positional arguments of every submitted job.
    args: tuple[t.Any, ...] = ()
    #: Keyword arguments of every submitted job.
    kwargs: Mapping[str, t.Any] = dataclasses.field(default_factory=dict)

    def next_tick(self, after: datetime) -> datetime:
        """The first tick strictly after *after*, as an aware UTC datetime."""
        if self.every is not None:
            step = self.every // timedelta(microseconds=1)
            elapsed = (after - _EPOCH) // timedelta(microseconds=1)
            return _EPOCH + timedelta(microseconds=(elapsed // step + 1) * step)
        assert self.cron is not None
        from croniter import croniter

        local = after.astimezone(self.timezone)
        moment: datetime = croniter(self.cron, local).get_next(datetime)
        return moment.astimezone(timezone.utc)

    def ticks(self, after: datetime, until: datetime) -> t.Iterator[datetime]:
        """Every tick later than *after* and no later than *until*, in order."""
        tick = self.next_tick(after)
        while tick <= until:
            yield tick
            tick = self.next_tick(tick)

    def describe(self) -> str:
        """The schedule in words, as ``flask jobs schedule`` shows it."""
        if self.every is not None:
            return f"every {self.every}"
        return f"cron '{self.cron}' ({self.timezone})"

    def idempotency_key(self, tick: datetime) -> str:
        """The idempotency key of the job of *tick*: the same in every process."""
        return f"{SCHEDULE_KEY_PREFIX}{self.name}@{_iso(tick)}"


def make_schedule(
    task: Task[t.Any, t.Any],
    cron: str | None,
    *,
    every: timedelta | float | None,
    timezone_name: str | tzinfo,
    args: Sequence[t.Any],
    kwargs: Mapping[str, t.Any] | None,
    name: str | None,
) -> Schedule:
    """A checked :class:`Schedule`; see :meth:`JobRunner.periodic
    <flask_jobrunner.JobRunner.periodic>`.

    :raises ConfigurationError: naming what is wrong.
    """
    name = name or task.name
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise ConfigurationError(
            f"A schedule name must be 1 to {MAX_NAME_LENGTH} characters long, not {len(name)}."
        )
    if (cron is None) == (every is None):
        raise ConfigurationError(
            f"Schedule '{name}' needs a cron expression or 'every=', and not both."
        )
    interval: timedelta | None = None
    if every is not None:
        interval = every if isinstance(every, timedelta) else _seconds(name, every)
        if interval < timedelta(seconds=1):
            raise ConfigurationError(
                f"Schedule '{name}': 'every' must be at least one second, not {interval}."
            )
    zone = _zone(name, timezone_name)
    if cron is not None:
        # Here, not at import: a process of an app without cron schedules (most
        # workers) never loads croniter and dateutil.
        from croniter import CroniterError, croniter

        if not isinstance(cron, str) or not croniter.is_valid(cron):
            raise ConfigurationError(
                f"Schedule '{name}': {cron!r} is not a cron expression. Use five fields"
                " ('minute hour day month weekday', e.g. '0 2 * * *'), or six with seconds last."
            )
        try:
            croniter(cron, datetime.now(zone)).get_next(datetime)
        except CroniterError as error:  # valid syntax that never matches ('0 0 31 2 *')
            raise ConfigurationError(f"Schedule '{name}': {cron!r} never runs: {error}") from None
    try:
        checked_args, checked_kwargs = task.validate(args, kwargs or {})
    except InvalidArguments as error:
        raise ConfigurationError(f"Schedule '{name}': {error.message}") from None
    return Schedule(
        name=name,
        task=task,
        cron=cron,
        every=interval,
        timezone=zone,
        args=tuple(checked_args),
        kwargs=checked_kwargs,
    )


def _seconds(name: str, every: float) -> timedelta:
    if isinstance(every, bool) or not isinstance(every, (int, float)) or not math.isfinite(every):
        raise ConfigurationError(
            f"Schedule '{name}': 'every' must be a timedelta or seconds, not {every!r}."
        )
    return timedelta(seconds=every)


def _zone(name: str, zone: str | tzinfo) -> tzinfo:
    if isinstance(zone, tzinfo):
        return zone
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigurationError(
            f"Schedule '{name}': unknown timezone {zone!r}. Use an IANA name such as"
            " 'America/New_York' or 'UTC'."
        ) from None


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


class Scheduler:
    """The thread of one process that submits the due ticks of an app's schedules.

    It sleeps until the next tick. On start, ticks of the last
    ``JOBRUNNER_SCHEDULE_CATCHUP`` seconds are submitted too (on a shared
    backend only), those already stored being found by their idempotency key;
    older ones are skipped and logged. An unreachable backend is retried with
    capped backoff, as the worker does.

    :param app: The real app object; jobs are submitted in its app context.
    :param state: The app's jobrunner state.
    """

    def __init__(self, app: Flask, state: AppState) -> None:
        self.app = app
        self.state = state
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # The last tick handled, by schedule name.
        self._done: dict[str, datetime] = {}

    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread; a submit under way is finished first."""
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        settings = self.state.settings
        started = utcnow()
        # A caught-up tick is known by its job's idempotency key, kept as long as the job.
        catchup = timedelta(seconds=min(settings.schedule_catchup, self.state.backend.result_ttl))
        # A process-local backend forgets its jobs with the process: nothing to catch up.
        start = started - catchup if self.state.backend.is_shared else started
        if start < started:
            logger.info(
                "Scheduler (pid %s) catches up ticks since %s; older missed ticks are skipped.",
                os.getpid(),
                _iso(start),
            )
        backoff = 0.0
        while not self._stopping.is_set():
            now = utcnow()
            try:
                self._submit_due(now, start, now - catchup)
                backoff = 0.0
            except Exception as error:  # the thread never dies: it tries again, as the worker does
                backoff = min(max(backoff * 2, 0.1), MAX_BACKOFF)
                if isinstance(error, BackendUnavailable):  # an outage needs no traceback
                    logger.warning("%s The scheduler tries again in %.1f s.", error, backoff)
                else:
                    logger.exception("The scheduler failed; it tries again in %.1f s.", backoff)
                self._stopping.wait(backoff)
                continue
            self._stopping.wait(self._sleep_time())

    def _submit_due(self, now: datetime, start: datetime, oldest: datetime) -> None:
        for schedule in list(self.state.runner.schedules.values()):
            done = self._done.get(schedule.name, start)
            skipped = 0
            for tick in schedule.ticks(done, now):
                if self._stopping.is_set():
                    return
                if tick < oldest:
                    skipped += 1
                else:
                    self._submit(schedule, tick)
                self._done[schedule.name] = tick
            if skipped:
                logger.warning(
                    "Schedule '%s': %d ticks older than JOBRUNNER_SCHEDULE_CATCHUP were skipped.",
                    schedule.name,
                    skipped,
                )
            self._done.setdefault(schedule.name, done)

    def _submit(self, schedule: Schedule, tick: datetime) -> None:
        runner = self.state.runner
        try:
            with self.app.app_context():
                job = runner.enqueue(
                    schedule.task,
                    schedule.args,
                    schedule.kwargs,
                    idempotency_key=schedule.idempotency_key(tick),
                )
        except JobConflict as error:
            if self.state.backend.claim_tick(schedule.name, tick):
                logger.info(
                    "Schedule '%s': tick %s skipped: %s", schedule.name, _iso(tick), error.message
                )
            return
        except BackendUnavailable:
            raise
        except Exception:  # the scheduler never dies of one tick
            logger.exception("Schedule '%s': tick %s failed to submit.", schedule.name, _iso(tick))
            return
        if self.state.backend.claim_tick(schedule.name, tick):
            logger.info("Schedule '%s': tick %s is job %s.", schedule.name, _iso(tick), job.id)

    def _sleep_time(self) -> float:
        schedules = list(self.state.runner.schedules.values())
        now = utcnow()
        upcoming = [
            schedule.next_tick(self._done.get(schedule.name, now)) for schedule in schedules
        ]
        if not upcoming:
            return MAX_SLEEP
        return min(max((min(upcoming) - utcnow()).total_seconds(), 0.0), MAX_SLEEP)
