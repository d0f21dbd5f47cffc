"""Worker subprocesses: started, measured through ``/proc``, and ended by PID.

Only processes this module started are ever signalled: the worker itself and
the children it forked (Dramatiq forks its worker processes).
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

ROOT = pathlib.Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """*pid* and every process descended from it, read from ``/proc``."""
    found = [pid]
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        tasks = pathlib.Path(f"/proc/{current}/task")
        try:
            for task in tasks.iterdir():
                children = (task / "children").read_text().split()
                found.extend(int(child) for child in children)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU seconds used so far by the processes *pids*."""
    total = 0.0
    for pid in pids:
        try:
            fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # Fields 14 and 15 of stat(5) are utime and stime; [0] here is field 3.
        total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def peak_rss_mb(pids: Sequence[int]) -> float:
    """The largest peak resident set size (``VmHWM``) among *pids*, in MiB."""
    peak = 0.0
    for pid in pids:
        try:
            status = pathlib.Path(f"/proc/{pid}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]) / 1024)
    return peak


class WorkerProcess:
    """One worker command run as a subprocess, its output kept in a log file.

    :param command: The command line, run from the repository root.
    :param env: Variables added to this process's environment.
    :param log: Where the worker's stdout and stderr go.
    """

    def __init__(self, command: Sequence[str], env: Mapping[str, str], log: pathlib.Path) -> None:
        self.command = list(command)
        self.log = log
        environment = dict(os.environ, PYTHONPATH=str(ROOT))
        environment.update(env)
        with open(log, "ab") as output:
            self.process = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.pid = self.process.pid
        self._tree: set[int] = {self.pid}

    def tree(self) -> list[int]:
        """The worker's PID and those of its children alive now."""
        pids = process_tree(self.pid)
        self._tree.update(pids)
        return pids

    def check_alive(self) -> None:
        """Raise with the end of the log if the worker has exited."""
        if self.process.poll() is not None:
            raise RuntimeError(
                f"the worker {self.command[:3]} exited with {self.process.returncode}:\n"
                + self.log_tail()
            )

    def log_tail(self, lines: int = 15) -> str:
        """The last *lines* lines the worker wrote."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the worker, wait for it, SIGKILL it (and its children) if it lingers."""
        children = [pid for pid in self.tree() if pid != self.pid]
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        deadline = time.monotonic() + 5
        for pid in children:
            while _is_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _is_alive(pid):
                os.kill(pid, signal.SIGKILL)


def _is_alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
