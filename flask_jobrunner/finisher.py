"""The finisher: one thread that writes the final states of a worker's jobs.

A pool thread that ends a job hands its outcome here and takes the next job
at once. The finisher sends every outcome handed over while its previous
write was in flight in one :meth:`~flask_jobrunner.backends.base.Backend.finish_many`
call, so a busy worker pays one round trip for many finishes. No finish is
held back to wait for company, and a job that runs alone is written from
its own thread at once, sparing the hand-over between threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .backends.base import Backend
from .context import JobContext
from .errors import BackendUnavailable
from .job import Job
from .record import Outcome

logger = logging.getLogger("flask_jobrunner")

#: The most finishes sent in one call.
MAX_BATCH = 256

#: Called with each handed-over job and whether its final state was stored.
FinishedCallback = Callable[[JobContext, Job, bool], None]


class PendingFinish:
    """A final state handed to the :class:`Finisher`; :meth:`wait` tells whether it was stored."""

    def __init__(self, context: JobContext, job: Job, outcome: Outcome) -> None:
        self.context = context
        self.job = job
        self.outcome = outcome
        self.stored = False
        self._written = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the write was made; whether the final state was stored."""
        self._written.wait(timeout)
        return self.stored

    def done(self, stored: bool) -> None:
        """Record the answer of the write."""
        self.stored = stored
        self._written.set()


class Finisher:
    """Writes the outcomes handed to :meth:`finish` in batches, from a thread of its own.

    :param backend: Where the jobs are stored.
    :param on_finished: Called, in the thread that wrote, after each write.
    :param name: The thread's name.
    """

    def __init__(self, backend: Backend, on_finished: FinishedCallback, *, name: str) -> None:
        self._backend = backend
        self._on_finished = on_finished
        self._pending: list[PendingFinish] = []
        self._changed = threading.Condition()
        self._stopping = False
        self._writing = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the finisher's thread."""
        self._thread.start()

    def finish(
        self, context: JobContext, job: Job, outcome: Outcome, *, alone: bool = False
    ) -> PendingFinish:
        """Store *outcome* as the final state of the job.

        It is left for the finisher's thread, which sends it with the others
        that gather while its previous write is in flight, and this returns
        at once. But if the caller says its job is *alone* (no other runs
        or waits) and no write is in flight, the caller writes it at once: a
        lone job then costs no hand-over between threads. After :meth:`stop`
        it is always written in the caller's thread.
        """
        pending = PendingFinish(context, job, outcome)
        with self._changed:
            alone = alone and not self._writing and not self._pending
            if not alone and not self._stopping:
                self._pending.append(pending)
                self._changed.notify()
                return pending
            self._writing += 1
        try:
            self._write([pending])
        finally:
            with self._changed:
                self._writing -= 1
        return pending

    def stop(self) -> None:
        """Write every outcome handed over so far, then end the thread."""
        with self._changed:
            self._stopping = True
            self._changed.notify()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._stopping:
                    self._changed.wait()
                if not self._pending:
                    return
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                self._writing += 1
            try:
                self._write(batch)
            finally:
                with self._changed:
                    self._writing -= 1

    def _write(self, batch: list[PendingFinish]) -> None:
        try:
            stored = self._backend.finish_many(
                [(item.context.id, item.context.token, item.outcome) for item in batch]
            )
        except Exception as error:  # the thread never dies; the leases bring the jobs back
            if isinstance(error, BackendUnavailable):
                logger.error("Could not store the outcome of %d jobs: %s", len(batch), error)
            else:
                logger.exception("Could not store the outcome of %d jobs.", len(batch))
            stored = [False] * len(batch)
        for item, was_stored in zip(batch, stored, strict=True):
            try:
                self._on_finished(item.context, item.job, was_stored)
            except Exception:
                logger.exception("The worker failed after finishing job %s.", item.context.id)
            finally:
                item.done(was_stored)
