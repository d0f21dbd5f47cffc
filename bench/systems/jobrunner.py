"""flask-jobrunner on one of its backends, its worker run by ``flask jobs worker``."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bench import app as bench_app
from bench.processes import WorkerProcess, cpu_seconds, peak_rss_mb
from bench.stores import jobrunner_store
from bench.systems.base import POLL, System
from flask_jobrunner import JobStatus
from flask_jobrunner.worker import Worker

if TYPE_CHECKING:
    from bench.workloads import LoneJob

_UNFINISHED = (JobStatus.PENDING, JobStatus.IN_PROGRESS)
#: The figures of :meth:`JobRunnerSystem.lone_job_steps`.
STEP_KEYS = ("steps_submitted", "steps_claimed", "steps_finished", "steps_seen")


class JobRunnerSystem(System):
    """flask-jobrunner: a worker process with 4 threads, or 4 threads here for memory."""

    #: Where the first worker process writes its py-spy samples, if anywhere.
    profile_to: pathlib.Path | None = None

    def open(self) -> None:
        """Make the private store and the app that submits to it."""
        self.label = f"flask-jobrunner ({self.backend})"
        self.in_process = self.backend == "memory"
        if self.in_process:
            self.note = "memory: the worker's 4 threads run in the benchmark's process"
        self.url = self._stack.enter_context(jobrunner_store(self.backend, self.directory))
        self.prefix = f"jrbench:{uuid.uuid4().hex[:8]}"
        self.app = bench_app.create_app(
            backend=self.url, redis_prefix=self.prefix, run_workers=False, max_jobs=1_000_000
        )
        self.state = self.app.extensions["jobrunner"]
        self.state.backend.setup()
        self._stack.callback(self.state.backend.close)
        self._stack.callback(self.state.backend.clear)
        self._context = self.app.app_context()
        self._context.push()
        self._stack.callback(self._context.pop)
        self._thread_worker: Worker | None = None

    @property
    def environment(self) -> dict[str, str]:
        """The ``FLASK_JOBRUNNER_*`` variables of a process serving this store."""
        return {
            "FLASK_JOBRUNNER_BACKEND": self.url,
            "FLASK_JOBRUNNER_REDIS_PREFIX": self.prefix,
            "FLASK_JOBRUNNER_MAX_JOBS": "1000000",
        }

    def worker_command(self) -> tuple[list[str], Mapping[str, str]]:
        """``flask jobs worker --threads 4`` on the bench app."""
        command = [sys.executable, "-m", "flask", "--app", "bench.app:create_app"]
        command += ["jobs", "worker", "--threads", "4"]
        if self.profile_to is not None and not self.profile_to.exists():
            # Only the first worker (the drain's); py-spy writes when the worker exits.
            spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or "py-spy"
            record = [spy, "record", "--format", "raw", "--rate", "250", "--nonblocking", "--gil"]
            command = [*record, "-o", str(self.profile_to), "--", *command]
        return command, self.environment

    def start_worker(self) -> None:
        """A worker process; for memory, a worker of 4 threads in this process."""
        if not self.in_process:
            super().start_worker()
            return
        self._thread_worker = Worker(self.app, self.state, threads=4)
        self._thread_worker.start()

    def stop_worker(self) -> None:
        """Stop the worker process or the in-process threads."""
        if self._thread_worker is not None:
            self._thread_worker.stop(30)
            self._thread_worker = None
        if self.worker is not None and self._is_profiled:
            # Under py-spy: stop the worker it started, so py-spy writes its samples.
            for pid in self.worker.tree()[1:]:
                os.kill(pid, signal.SIGTERM)
            self.worker.process.wait(60)
        super().stop_worker()

    def _worker_pids(self) -> list[int]:
        assert self.worker is not None
        pids = self.worker.tree()
        return pids[1:] if self._is_profiled else pids

    @property
    def _is_profiled(self) -> bool:
        return self.worker is not None and self.worker.command[1] == "record"

    def worker_cpu(self) -> float:
        """CPU of the worker process (not py-spy's), or of this whole process for memory."""
        return time.process_time() if self.in_process else cpu_seconds(self._worker_pids())

    def worker_peak_rss(self) -> float:
        """Peak RSS of the worker process, or of this whole process for memory."""
        pids = [os.getpid()] if self.in_process else self._worker_pids()
        return peak_rss_mb(pids)

    def submit_noop(self) -> str:
        """``noop.submit()``."""
        return bench_app.noop.submit().id

    def submit_sleep(self, seconds: float) -> str:
        """``nap.submit(seconds)``."""
        return bench_app.nap.submit(seconds).id

    def submit_many_noop(self, count: int) -> list[Any] | None:
        """``jobs.submit_many(...)`` when the package has it."""
        submit_many = getattr(bench_app.jobs, "submit_many", None)
        if submit_many is None:
            return None
        return [job.id for job in submit_many(bench_app.noop, [{}] * count)]

    def discard_queued(self) -> None:
        """Delete every job (the store holds this run's alone)."""
        self.state.backend.clear()

    def is_done(self, handle: Any) -> bool:
        """Whether the stored job is completed."""
        record = self.state.backend.get(handle)
        if record is not None and record.is_finished and record.status != JobStatus.COMPLETED:
            raise RuntimeError(f"job {handle} ended {record.status.value}: {record.error}")
        return record is not None and record.status == JobStatus.COMPLETED

    def still_pending(self, handles: Sequence[Any]) -> list[Any]:
        """One ``counts()`` round trip: the store holds this run's jobs alone."""
        counts = self.state.backend.counts()
        if counts[JobStatus.FAILED] or counts[JobStatus.CANCELLED]:
            raise RuntimeError(f"some benchmark jobs did not complete: {counts}")
        unfinished = min(sum(counts[status] for status in _UNFINISHED), len(handles))
        return list(handles[len(handles) - unfinished :]) if unfinished else []

    def wait_one(self, handle: Any, timeout: float, poll: float = POLL) -> None:
        """The backend's own wait in this process; polling like the peers otherwise."""
        if not self.in_process:
            super().wait_one(handle, timeout, poll)
            return
        record = self.state.backend.wait_finished(handle, timeout)
        if record is None or record.status != JobStatus.COMPLETED:
            raise TimeoutError(f"job {handle} was not completed within {timeout} s")

    def http_figures(self, seconds: float) -> dict[str, float]:
        """POST-then-poll through gunicorn; for memory, its jobs run in gunicorn's process."""
        from bench.http_load import gunicorn, post_then_poll

        env = dict(self.environment, FLASK_JOBRUNNER_MAX_WORKERS="4")
        env["FLASK_JOBRUNNER_RUN_WORKERS"] = "true" if self.in_process else "false"
        server, port = gunicorn(env, str(self.directory))
        try:
            return post_then_poll(port, seconds)
        finally:
            server.stop()

    def lone_job_steps(self, samples: Sequence[LoneJob]) -> dict[str, float]:
        """Where the latency run's jobs spent their time: median ms from the submit call.

        The claim and the finish are the times the store wrote into each job
        (``started_at``, ``finished_at``), on its own clock, which is this
        machine's for the loopback servers of the benchmark.
        """
        steps: dict[str, list[float]] = {key: [] for key in STEP_KEYS}
        for sample in samples:
            record = self.state.backend.get(sample.handle)
            if record is None or record.started_at is None or record.finished_at is None:
                continue
            steps["steps_submitted"].append(sample.submitted)
            steps["steps_claimed"].append(record.started_at.timestamp() - sample.moment)
            steps["steps_finished"].append(record.finished_at.timestamp() - sample.moment)
            steps["steps_seen"].append(sample.seen)
        return {key: statistics.median(values) * 1000 for key, values in steps.items() if values}

    def store_calls(self, jobs: int, sequential: int, timeout: float) -> dict[str, float]:
        """Calls to the store per job: to enqueue, and by the worker in bulk and one by one."""
        from bench import counting

        if self.in_process:
            return {}
        counting.install()
        self.state.backend.clear()
        figures: dict[str, float] = {}
        before = counting.total()
        handles = [self.submit_noop() for _ in range(jobs)]
        figures["calls_enqueue"] = (counting.total() - before) / jobs
        before = counting.total()
        if self.submit_many_noop(jobs) is not None:
            figures["calls_submit_many"] = (counting.total() - before) / jobs
            self.state.backend.clear()
            handles = [self.submit_noop() for _ in range(jobs)]
        figures["calls_worker_bulk"] = self._worker_calls(lambda: self.wait_all(handles, timeout))

        def one_by_one() -> None:
            for _ in range(sequential):
                self.wait_one(self.submit_noop(), timeout)

        figures["calls_worker_single"] = self._worker_calls(one_by_one)
        return figures

    def _worker_calls(self, work: Callable[[], None]) -> float:
        """Store calls of a counting worker during *work*, per job it completed."""
        output = self.directory / f"calls-{uuid.uuid4().hex[:6]}.json"
        command, env = self.worker_command()
        counted = [sys.executable, "-m", "bench.counting", str(output)]
        counted += command[command.index("--app") :]
        self.worker = WorkerProcess(counted, env, self.directory / "counting-worker.log")
        try:
            work()
        finally:
            self.stop_worker()
        jobs: int = self.state.backend.counts()[JobStatus.COMPLETED]
        self.state.backend.clear()
        calls: dict[str, int] = json.loads(output.read_text())
        return sum(calls.values()) / max(jobs, 1)
