"""The worker: a bounded pool of threads fed by claims from the backend.

The idle pool threads take turns at claiming: one of them, the leader,
claims as many ready jobs as there are idle threads, in one backend call,
runs the first itself and hands the others to idle threads, one of which
leads the next claim. So a job runs on the thread that claimed it, with no
hand-over between threads, unless it came in a batch. While more jobs wait,
a thread that ends one claims its next itself, unless the prefetcher (see
:mod:`flask_jobrunner.prefetcher`) claimed one ahead for it while short
jobs kept every thread busy. The pool threads run jobs
with :mod:`flask_jobrunner.executor`; one finisher thread writes their final
states, many per call (see :mod:`flask_jobrunner.finisher`), and one monitor
thread renews leases, stores throttled progress, ends jobs that run past
their timeout and takes back jobs whose lease ran out elsewhere.

Where claims are local (the memory backend), a claim costs no round trip
and batches save nothing, but every hand-over between threads costs a wake
and a GIL switch, and two threads running quick jobs side by side only take
turns at the GIL and the backend's lock. So the leader claims one job at a
time, a thread that ends a job claims its next itself, and an idle thread
claims beside a running job only once it ran :data:`CLAIM_BESIDE_AFTER`:
quick jobs run back to back on one thread, and slow ones still run on all.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from flask import Flask

from .backends.base import Backend
from .context import JobContext
from .errors import BackendUnavailable
from .executor import execute, job_context, send_finished, timeout_outcome
from .finisher import Finisher
from .job import Job
from .prefetcher import Prefetcher
from .record import Claim, Outcome
from .signals import job_finished

if TYPE_CHECKING:
    from .extension import AppState

logger = logging.getLogger("flask_jobrunner")

#: Seconds between two rounds of the monitor (timeouts are seen this late at most).
MONITOR_TICK = 0.05
#: Seconds a job must have run for its thread to claim the next job itself.
SELF_CLAIM_AFTER = 0.002
#: Seconds a job must have run, where claims are local, before an idle thread claims beside it.
CLAIM_BESIDE_AFTER = 0.001
#: Longest wait between claim attempts when the backend is unreachable.
MAX_BACKOFF = 5.0


class Worker:
    """Runs the jobs of one app in *threads* threads of this process.

    :param app: The real app object; every job runs in its app context.
    :param state: The app's jobrunner state (settings, backend, tasks).
    :param threads: How many jobs run at once.
    :param queues: The queues to take jobs from; by default those of every
        task registered at the time of each claim, so a task registered after
        the start is served too.
    """

    def __init__(
        self, app: Flask, state: AppState, *, threads: int, queues: Sequence[str] | None = None
    ) -> None:
        self.app = app
        self.state = state
        self.threads = threads
        self.queues = None if queues is None else list(queues)
        # The task count and the queues of those tasks, when self.queues is None.
        self._queues_of_tasks: tuple[int, list[str]] = (-1, [])
        self.name = f"jobrunner-{uuid.uuid4().hex[:8]}"
        self._stopping = threading.Event()
        self._out_of_work = threading.Event()
        self._monitor_stop = threading.Event()
        # Guards the idle count, the jobs handed to idle threads, the leader's turn
        # and the deputy's; the deputy waits on a condition of its own.
        slots = threading.Lock()
        self._slots = threading.Condition(slots)
        self._deputy_turn = threading.Condition(slots)
        self._idle = 0
        self._handed: collections.deque[tuple[JobContext, Job]] = collections.deque()
        self._leading = False
        self._has_deputy = False
        # A backend in this process claims with no round trip: see the module's docstring.
        self._claims_are_local = not state.backend.is_shared
        # When each pool thread's current job started (monotonic), None while idle.
        # Read without a lock: it only steers who claims, and claims are atomic.
        self._job_started: list[float | None] = [None] * threads
        # By claim token, not job id: a job whose lease ran out may be taken back
        # and claimed again by this same worker while its first run still ends.
        self._running: dict[str, JobContext] = {}
        self._running_changed = threading.Condition()
        self._pool: list[threading.Thread] = []
        # Whether the last claim suggested more jobs are due (see _claim_next).
        self._backlog = False
        self._finisher = Finisher(state.backend, self._finished, name=f"{self.name}-finish")
        # Batching pays off where a finish costs a round trip the backend can share;
        # elsewhere each pool thread writes its own, in parallel.
        batches = type(state.backend).finish_many is not Backend.finish_many
        self._finish = self._finish_later if batches else None
        self._monitor: threading.Thread | None = None
        # A claim costs a round trip only where the backend is shared.
        self._ahead = (
            Prefetcher(
                self._claim_ahead,
                self._give_back,
                is_busy=self._is_busy,
                threads=threads,
                shortest=SELF_CLAIM_AFTER,
                max_wait=state.settings.lease / 3,
                name=f"{self.name}-ahead",
            )
            if state.backend.is_shared
            else None
        )

    @property
    def is_running(self) -> bool:
        """Whether the worker was started and not stopped."""
        return bool(self._pool) and not self._stopping.is_set()

    def start(self) -> None:
        """Start the pool, the finisher (if it batches) and the monitor threads."""
        if self._finish is not None:
            self._finisher.start()
        if self._ahead is not None:
            self._ahead.start()
        for number in range(self.threads):
            thread = threading.Thread(
                target=self._run_jobs, args=(number,), name=f"{self.name}-{number}", daemon=True
            )
            thread.start()
            self._pool.append(thread)
        self._monitor = threading.Thread(
            target=self._watch, name=f"{self.name}-monitor", daemon=True
        )
        self._monitor.start()

    def wait_out_of_work(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds until no job runs here and none is ready to claim.

        ``flask jobs worker --burst`` stops then. Jobs scheduled for later
        (retries waiting out their backoff) do not count as ready.
        """
        return self._out_of_work.wait(timeout)

    def stop(self, timeout: float) -> bool:
        """Stop claiming, let running jobs finish for *timeout* seconds, give the rest back.

        Returns whether every running job finished in time.
        """
        self._stopping.set()
        self.state.backend.interrupt()  # wakes the leader's claim
        with self._slots:
            self._slots.notify_all()
            self._deputy_turn.notify_all()
        for claim in self._ahead.stop() if self._ahead is not None else []:
            self._give_back(claim)
        deadline = time.monotonic() + timeout
        with self._running_changed:
            while self._running and (remaining := deadline - time.monotonic()) > 0:
                self._running_changed.wait(remaining)
            unfinished = list(self._running.values())
        # A job whose task ended is not given back: the finisher writes its final state.
        unfinished = [context for context in unfinished if not context.is_finishing]
        for context in unfinished:
            logger.warning("Job %s did not finish before shutdown; giving it back.", context.id)
            self._call_backend(self.state.backend.release, context.id, context.token)
            context.mark_lost()
        # Every outcome handed over is written before the worker ends.
        self._finisher.stop()
        self._monitor_stop.set()
        if self._monitor is not None:
            self._monitor.join()
        for thread in self._pool:
            thread.join(0 if unfinished else None)
        return not unfinished

    def cancel_requested(self, job_id: str) -> None:
        """Tell a job running here that it was cancelled, without waiting for a heartbeat."""
        for context in list(self._running.values()):
            if context.id == job_id:
                context.mark_cancel_requested()

    # -- threads -----------------------------------------------------------

    def _take(self, number: int) -> tuple[JobContext, Job] | None:
        # The next job of idle thread *number*: one a leader handed over, or one
        # it claims as the leader; None once the worker stops.
        with self._slots:
            self._idle += 1
            self._job_started[number] = None
            while True:
                if self._handed:  # the leader counted it out of the idle ones already
                    return self._handed.popleft()
                if self._stopping.is_set():
                    self._idle -= 1
                    return None
                if not self._leading:
                    beside = self._quick_job_ends_in() if self._claims_are_local else 0.0
                    if beside <= 0:
                        self._leading = True
                        break
                    # The deputy: with the GIL, a claim beside a thread that runs quick jobs
                    # back to back would only make the two take turns at the backend's lock,
                    # so it waits until that job has run a while (a runner that runs out of
                    # jobs takes the turn itself, and the deputy waits as others do).
                    if not self._has_deputy:
                        self._has_deputy = True
                        try:
                            self._deputy_turn.wait(beside)
                        finally:
                            self._has_deputy = False
                        continue
                self._slots.wait()
        try:
            return self._lead(number)
        except BaseException:  # the turn passes on, or every idle thread would wait forever
            with self._slots:
                self._idle -= 1
                self._leading = False
                self._slots.notify()
            raise

    def _quick_job_ends_in(self, besides: int | None = None) -> float:
        # Seconds until no pool thread (but *besides*) runs a job younger than CLAIM_BESIDE_AFTER.
        started = [
            moment
            for number, moment in enumerate(self._job_started)
            if moment is not None and number != besides
        ]
        if not started:
            return 0.0
        return max(started) + CLAIM_BESIDE_AFTER - time.monotonic()

    def _lead(self, number: int) -> tuple[JobContext, Job] | None:
        # Claims for every idle thread (for itself alone where claims are local)
        # until some job comes; runs the first and hands the rest over, waking as
        # many idle threads plus one, the next leader (or leaving the turn to a
        # waiting deputy).
        backoff = 0.0
        settings = self.state.settings
        while not self._stopping.is_set():
            with self._slots:
                idle = self._idle
            limit = 1 if self._claims_are_local else idle
            try:
                claims = self.state.backend.claim(
                    self._queues(), lease=settings.lease, limit=limit, timeout=1.0
                )
                backoff = 0.0
            except Exception as error:
                self._out_of_work.clear()
                backoff = min(max(backoff * 2, 0.1), MAX_BACKOFF)
                if isinstance(error, BackendUnavailable):  # an outage needs no traceback
                    logger.warning("%s Trying again in %.1f s.", error, backoff)
                else:
                    logger.exception("Claiming jobs failed; trying again in %.1f s.", backoff)
                self._stopping.wait(backoff)
                continue
            if not claims:
                with self._slots:
                    if self._idle == self.threads:
                        self._out_of_work.set()
                continue
            self._out_of_work.clear()
            # A full claim suggests more jobs are due: threads then claim their next themselves.
            self._backlog = len(claims) == limit
            items = [item for claim in claims if (item := self._started(claim)) is not None]
            if not items:
                continue
            with self._slots:
                self._idle -= len(items)
                self._job_started[number] = time.monotonic()
                self._handed.extend(items[1:])
                self._leading = False
                # The handed jobs' threads and the next leader; a waiting deputy leads next.
                self._slots.notify(len(items) - 1 if self._has_deputy else len(items))
            return items[0]
        with self._slots:
            self._idle -= 1
            self._leading = False
            self._slots.notify_all()
        return None

    def _started(self, claim: Claim) -> tuple[JobContext, Job] | None:
        # Registered before it runs, so a stop never misses a job about to start;
        # a claim that comes back after the stop began is given back at once.
        context = job_context(self.app, self.state, claim)
        with self._running_changed:
            if not self._stopping.is_set():
                self._running[context.token] = context
                return context, Job(claim.record, self.state.backend)
        self._call_backend(self.state.backend.release, claim.record.id, claim.token)
        return None

    def _run_jobs(self, number: int) -> None:
        item = self._take(number)
        while item is not None:
            context, job = item
            started = self._job_started[number] = time.monotonic()
            try:
                execute(self.app, self.state, context, job, self._finish)
            except BaseException:  # a pool thread never dies; the lease brings the job back
                logger.exception("The worker failed around job %s.", context.id)
            finally:
                if not context.is_finishing:  # else the finisher lets it go once written
                    self._forget(context)
            ran = time.monotonic() - started
            item = self._claimed_ahead(ran)
            if item is None:
                if self._claims_are_local:
                    # Two threads running quick jobs side by side only take turns at the GIL
                    # and the backend's lock: of two such, the first to end one steps back.
                    claims_own = ran >= CLAIM_BESIDE_AFTER or self._quick_job_ends_in(number) <= 0
                else:
                    # Jobs quicker than a claim's round trip are better claimed in batches by
                    # the leader; after a longer one, the thread's own claim saves waiting.
                    claims_own = ran >= SELF_CLAIM_AFTER
                item = self._claim_next() if claims_own else None
            if item is None:
                item = self._take(number)

    def _claim_next(self) -> tuple[JobContext, Job] | None:
        # While jobs wait, a thread that ends one claims its next itself, not
        # waiting for its turn to lead. Only when none is left does it go idle.
        if not self._backlog or self._stopping.is_set():
            return None
        try:
            claims = self.state.backend.claim(self._queues(), lease=self.state.settings.lease)
        except Exception:  # the leader reports it and backs off
            self._backlog = False
            return None
        if not claims:
            self._backlog = False
            return None
        return self._started(claims[0])

    def _claimed_ahead(self, ran: float) -> tuple[JobContext, Job] | None:
        # A job the prefetcher claimed ahead, after one that ran *ran* seconds.
        if self._ahead is None:
            return None
        self._ahead.job_ended(ran)
        claim = self._ahead.take()
        return None if claim is None else self._started(claim)

    def _claim_ahead(self, limit: int) -> list[Claim]:
        try:
            claims = self.state.backend.claim(
                self._queues(), lease=self.state.settings.lease, limit=limit
            )
        except Exception:  # the leader reports it and backs off
            claims = []
        if not claims:
            self._backlog = False
        return claims

    def _is_busy(self) -> bool:
        return self._backlog and not self._idle and not self._stopping.is_set()

    def _give_back(self, claim: Claim) -> None:
        self._call_backend(self.state.backend.release, claim.record.id, claim.token)

    def _queues(self) -> Sequence[str]:
        if self.queues is not None:
            return self.queues
        # Tasks are only ever added (a name registered twice raises), so the queues
        # change only when the count does; working them out costs more than a claim here.
        tasks = len(self.state.runner.tasks)
        if tasks != self._queues_of_tasks[0]:
            self._queues_of_tasks = (tasks, self.state.runner.queues)
        return self._queues_of_tasks[1]

    def _finish_later(self, context: JobContext, job: Job, outcome: Outcome) -> None:
        context.mark_finishing()
        # A lone job is written from its own thread at once: the latency path.
        alone = self._idle == self.threads - 1 and not self._handed
        pending = self._finisher.finish(context, job, outcome, alone=alone)
        # Receivers run in the job's own thread, never holding up other finishes;
        # without any, the thread takes its next job while the write is in flight.
        if job_finished.receivers and pending.wait():
            send_finished(self.app, job)

    def _finished(self, context: JobContext, job: Job, stored: bool) -> None:
        self._forget(context)

    def _forget(self, context: JobContext) -> None:
        with self._running_changed:
            self._running.pop(context.token, None)
            if self._stopping.is_set():  # only stop() waits, once it set this
                self._running_changed.notify_all()

    def _watch(self) -> None:
        settings = self.state.settings
        heartbeat_every = settings.lease / 3
        maintenance_every = min(settings.lease / 2, 30.0)
        last_heartbeat: dict[str, float] = {}
        next_maintenance = time.monotonic()
        while not self._monitor_stop.wait(MONITOR_TICK):
            now = time.monotonic()
            for context in list(self._running.values()):
                if context.is_finishing:  # its outcome is decided and on its way
                    continue
                try:
                    if context.timed_out:
                        self._end_timed_out(context)
                    elif context.is_progress_due():
                        context.flush_progress()
                        last_heartbeat[context.token] = now
                    # Counted from the claim, not from this round: a monitor that was held
                    # up (a long GC, a blocking receiver) renews a job it sees late at once.
                    elif (
                        now - last_heartbeat.setdefault(context.token, context.leased_at)
                        >= heartbeat_every
                    ):
                        context.heartbeat()
                        last_heartbeat[context.token] = now
                except Exception:
                    logger.exception("Could not renew the lease of job %s.", context.id)
            for token in set(last_heartbeat) - set(self._running):
                del last_heartbeat[token]
            if now >= next_maintenance:
                next_maintenance = now + maintenance_every
                self._call_backend(
                    self.state.backend.recover_expired, max_recoveries=settings.max_recoveries
                )
                self._call_backend(self.state.backend.purge_expired)

    def _end_timed_out(self, context: JobContext) -> None:
        if not context.mark_timed_out():
            return
        logger.warning("Job %s ran past its timeout of %g s.", context.id, context.timeout)
        if self.state.backend.finish(context.id, context.token, timeout_outcome(context)):
            send_finished(self.app, Job(context.record, self.state.backend))

    def _call_backend(self, method: Callable[..., object], *args: object, **kwargs: object) -> None:
        try:
            method(*args, **kwargs)
        except BackendUnavailable as error:
            logger.warning("The job backend is unavailable: %s", error)
        except Exception:
            logger.exception("A job backend call failed.")
