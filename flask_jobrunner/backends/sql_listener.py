"""PostgreSQL's ``NOTIFY`` of each change of a job, and the ``LISTEN`` connection that wakes the
claims and watchers waiting in a process.

Enqueues and give-backs notify :data:`CHANNEL` in their own statement
(delivered at commit), and every change of a job notifies
:data:`EVENTS_CHANNEL` with the job's id: :func:`notifications` are the
``RETURNING`` columns that send them. One connection per backend,
outside the engine's pool, waits for those notifications in a thread and
wakes every waiting claim, or the callers watching that job, so a new job
starts at once, a finish is seen at once, and an idle worker sends no queries.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa

from .sql_dialects import CONNECT_TIMEOUT
from .sql_schema import jobs

logger = logging.getLogger("flask_jobrunner.backends.sql")

#: The channel a PostgreSQL backend notifies when a job becomes claimable.
CHANNEL = "jobrunner_jobs"
#: The channel a PostgreSQL backend notifies, with the job's id, when a job changes.
EVENTS_CHANNEL = "jobrunner_events"
#: Seconds the listening thread stays, and listens on a channel, after the last
#: caller waiting for it stopped waiting.
LISTEN_IDLE = 2.0
_CHANNELS = (CHANNEL, EVENTS_CHANNEL)


def notifications(*, claimable: bool) -> list[sa.ColumnElement[Any]]:
    """The notifications of a changed row of ``jobs``, as ``RETURNING`` columns.

    :param claimable: Whether the job may be claimed now (it is pending).
    """
    notes: list[sa.ColumnElement[Any]] = [
        sa.func.pg_notify(EVENTS_CHANNEL, jobs.c.id).label("jobrunner_event")
    ]
    if claimable:
        notes.append(sa.func.pg_notify(CHANNEL, jobs.c.queue).label("jobrunner_work"))
    return notes


def execute_notifying(
    connection: sa.Connection, statement: Any, *, notifies: bool, claimable: bool = True
) -> bool:
    """Execute an ``INSERT`` or ``UPDATE`` of ``jobs``; whether it changed a row.

    If *notifies* (on PostgreSQL), each changed row also notifies (delivered
    at commit), in the same round trip: that it changed, and if *claimable*,
    that it may be claimed now.
    """
    if notifies:
        notified = statement.returning(*notifications(claimable=claimable))
        return bool(connection.execute(notified).all())
    return bool(connection.execute(statement).rowcount)


def changed_a_row(
    connection: sa.Connection, statement: Any, parameters: Any, *, notifies: bool
) -> bool:
    """Whether a prebuilt ``UPDATE`` changed a row; if *notifies*, it returns its notifications."""
    result = connection.execute(statement, parameters)
    return bool(result.all()) if notifies else bool(result.rowcount)


def connector(engine: sa.Engine) -> Callable[[], Any]:
    """Opens a psycopg connection outside *engine*'s pool, with the same parameters."""
    import psycopg

    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    cparams = {
        "connect_timeout": CONNECT_TIMEOUT,
        "keepalives": 1,
        "keepalives_idle": 30,
        **cparams,
    }

    def connect() -> Any:
        return psycopg.connect(*cargs, **cparams, autocommit=True)

    return connect


# Connections of a parent process, kept referenced in a forked child so
# that nothing there closes them under the parent.
_ABANDONED: list[Any] = []
# What a byte in a run's pipe means: stop, or look again at the channels wanted.
_STOP, _POKE = b"\0", b"\1"


class _Run:
    # The state of one listening thread; a new thread gets a new one, so a
    # thread on its way out never touches its successor's. The Listener's lock
    # guards its flags and channels.
    def __init__(self) -> None:
        self.listening = False
        self.tried = False
        self.stopping = False
        #: The channels LISTENed on the connection now.
        self.channels: frozenset[str] = frozenset()
        self.connection: Any = None
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._read, self._write = os.pipe()
        self._closed = False

    def stop(self) -> None:
        self.stopping = True
        self._send(_STOP)

    def poke(self) -> None:
        self._send(_POKE)

    def _send(self, byte: bytes) -> None:
        with self._lock:
            if not self._closed:
                os.write(self._write, byte)

    def wait_stop(self, timeout: float) -> bool:
        # A poke does not cut the wait short: the next connection listens to
        # the channels wanted then anyway.
        deadline = time.monotonic() + timeout
        while not self.stopping and (remaining := deadline - time.monotonic()) > 0:
            if select.select([self._read], [], [], remaining)[0]:
                os.read(self._read, 64)
        return self.stopping

    def wait(self, connection: Any, timeout: float) -> tuple[bool, bool]:
        # (the pipe had a byte: stop or look at the channels, the connection has news)
        ready = select.select([connection.fileno(), self._read], [], [], timeout)[0]
        if self._read in ready:
            os.read(self._read, 64)
        return self._read in ready, bool(ready) and self._read not in ready

    def close(self) -> None:
        with self._lock:
            self._closed = True
            os.close(self._read)
            os.close(self._write)

    def forget(self) -> None:
        # In a forked child: the parent's thread is gone, its lock may be held.
        if self.connection is not None:
            _ABANDONED.append(self.connection)
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)


class Listener:
    """A connection, outside the pool, that waits for ``NOTIFY`` in a thread and calls back.

    The thread starts when a claim or a watcher first waits and ends
    :data:`LISTEN_IDLE` seconds after the last one stopped waiting, so an
    idle process holds no extra connection. It listens on a channel only
    while someone waits for it (and :data:`LISTEN_IDLE` seconds after): a
    worker's waiting claims on :data:`CHANNEL`, callers watching jobs on
    :data:`EVENTS_CHANNEL`, so a worker is not woken by every change of every
    job. *wake* and *changed* (with ``None``) are also called whenever the
    connection is made or lost, since a notification may have been missed
    meanwhile.

    :param connect: Opens a new psycopg connection.
    :param wake: Called from the thread on every notification of :data:`CHANNEL`.
    :param changed: Called from the thread with the job id of every
        notification of :data:`EVENTS_CHANNEL`.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        wake: Callable[[], None],
        changed: Callable[[str | None], None],
    ) -> None:
        self._connect = connect
        self._wake = wake
        self._changed = changed
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        # Notified whenever a run's connection or channels change.
        self._updated = threading.Condition(self._lock)
        self._run: _Run | None = None
        self._waiters = dict.fromkeys(_CHANNELS, 0)
        self._left_at = dict.fromkeys(_CHANNELS, -math.inf)

    @property
    def is_listening(self) -> bool:
        """Whether the connection is up; while it is not, waiting callers poll."""
        run = self._run
        return run is not None and run.listening

    def listens(self, channel: str) -> bool:
        """Whether notifications of *channel* arrive now; while not, its waiters poll."""
        run = self._run
        return run is not None and run.listening and channel in run.channels

    def enter(self, timeout: float, *, channel: str = CHANNEL) -> bool:
        """Count a caller waiting for *channel*, listen to it if needed; returns :meth:`listens`.

        The thread's first connection attempt, or its ``LISTEN`` of a new
        channel, is waited for up to *timeout*.
        """
        with self._lock:
            self._waiters[channel] += 1
            run = self._run
            if run is None:
                run = self._run = _Run()
                run.thread = threading.Thread(
                    target=self._listen, args=(run,), name="sql-backend-listener", daemon=True
                )
                run.thread.start()
            elif channel not in run.channels:
                # Even while it connects: it may have chosen its channels already.
                run.poke()
            self._updated.wait_for(
                lambda: run.listening == (channel in run.channels) and run.tried, timeout
            )
        return self.listens(channel)

    def leave(self, *, channel: str = CHANNEL) -> None:
        """Count a caller that no longer waits for *channel*."""
        with self._lock:
            self._waiters[channel] -= 1
            self._left_at[channel] = time.monotonic()

    def close(self) -> None:
        """Stop listening and close the connection; a later claim starts again."""
        with self._lock:
            run, self._run = self._run, None
        if run is not None and run.thread is not None:
            run.stop()
            run.thread.join(CONNECT_TIMEOUT + 1)

    def after_fork(self) -> None:
        """Forget the parent's thread in a forked child, leaving its connection alone."""
        if self._run is not None:
            self._run.forget()
        self._reset()

    def _listen(self, run: _Run) -> None:
        backoff = 0.05
        try:
            while True:
                try:
                    run.connection = self._connect()
                    self._listen_to_wanted(run)
                except Exception as error:
                    logger.debug("Could not LISTEN for new jobs: %s", error)
                else:
                    backoff = 0.05
                    with self._lock:
                        run.listening = run.tried = True
                        self._updated.notify_all()
                    self._wake_everyone()
                    self._receive(run)
                    with self._lock:
                        run.listening = False
                        run.channels = frozenset()
                    self._wake_everyone()  # waiting callers go back to polling
                finally:
                    self._disconnect(run)
                with self._lock:
                    run.tried = True
                    self._updated.notify_all()
                if run.wait_stop(backoff) or self._is_done(run):
                    return
                backoff = min(backoff * 2, 2.0)
        finally:
            run.close()

    def _listen_to_wanted(self, run: _Run) -> None:
        # LISTEN to the channels someone waits for, UNLISTEN the others.
        with self._lock:
            now = time.monotonic()
            wanted = frozenset(
                channel
                for channel in _CHANNELS
                if self._waiters[channel] > 0 or now - self._left_at[channel] <= LISTEN_IDLE
            )
            # A channel about to go is gone already for a caller entering now:
            # it asks for it again, and waits for the answer.
            run.channels = run.channels & wanted
            listened = run.channels
        if wanted == listened:
            return
        commands = [f"LISTEN {channel}" for channel in sorted(wanted - listened)]
        commands += [f"UNLISTEN {channel}" for channel in sorted(listened - wanted)]
        run.connection.execute("; ".join(commands))
        with self._lock:
            run.channels = wanted
            self._updated.notify_all()
        # Notifications that came with the answer wait in psycopg's backlog.
        self._dispatch(run.connection.notifies(timeout=0))

    def _receive(self, run: _Run) -> None:
        # Returns when told to stop, when idle, or when the connection broke.
        try:
            review_at = time.monotonic() + LISTEN_IDLE / 4
            while not self._is_done(run):
                poked, news = run.wait(run.connection, LISTEN_IDLE / 4)
                if run.stopping:
                    return
                if news:
                    self._dispatch(run.connection.notifies(timeout=0))
                # Asked to, or a while passed (busy or not): drop channels unwanted.
                if poked or time.monotonic() >= review_at:
                    self._listen_to_wanted(run)
                    review_at = time.monotonic() + LISTEN_IDLE / 4
        except Exception as error:
            logger.warning("The LISTEN connection for new jobs broke: %s", error)

    def _dispatch(self, notifications: Iterable[Any]) -> None:
        # One wake-up of the claims per batch, however many jobs arrived.
        has_work = False
        for notification in notifications:
            if notification.channel == EVENTS_CHANNEL:
                self._changed(notification.payload)
            else:
                has_work = True
        if has_work:
            self._wake()

    def _wake_everyone(self) -> None:
        self._wake()
        self._changed(None)

    def _is_done(self, run: _Run) -> bool:
        with self._lock:
            if self._run is not run:  # closed
                return True
            idle = time.monotonic() - max(self._left_at.values()) > LISTEN_IDLE
            if not any(self._waiters.values()) and idle:
                self._run = None
                return True
            return False

    @staticmethod
    def _disconnect(run: _Run) -> None:
        connection, run.connection = run.connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:  # already broken
                logger.debug("Closing the LISTEN connection failed.", exc_info=True)
