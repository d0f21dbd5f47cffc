"""The benchmark runs, quickly, on the memory and SQLite backends and prints its tables.

Peers are left out (they are installed from ``bench/requirements.txt`` only),
except to show that a peer that is not installed is skipped with a clear line.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
from collections.abc import Callable

import pytest

from bench import cli, systems

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _python(*args: str, timeout: float) -> str:
    """What ``python *args`` prints, run from the repository; it must exit 0."""
    finished = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert finished.returncode == 0, finished.stderr
    return finished.stdout


def _row(output: str, label: str) -> list[str]:
    line = next(line for line in output.splitlines() if line.startswith(label))
    return line[len(label) :].split()


def test_quick_run_prints_figures_and_targets() -> None:
    command = ["-m", "bench", "--quick", "--peers", "none"]
    command += ["--backends", "memory,sqlite", "--workloads", "drain,latency,submit_many,sleep"]
    command += ["--jobs", "1000", "--timeout", "60"]
    output = _python(*command, timeout=90)
    header = next(line for line in output.splitlines() if line.startswith("system"))
    assert header.split()[1:4] == ["enqueue/s", "submit_many/s", "drain/s"]
    for label in ("flask-jobrunner (memory)", "flask-jobrunner (sqlite)"):
        cells = _row(output, label)
        # enqueue, submit_many and drain are rates: numbers above zero.
        assert all(float(cell.replace(",", "")) > 0 for cell in cells[:3]), cells
    assert re.search(r"^memory: sleep/ideal <= 1\.15 +(met|NOT MET) ", output, re.MULTILINE)
    assert re.search(r"^sqlite: RSS MB <= 60 +(met|NOT MET) ", output, re.MULTILINE)
    assert "failed" not in output
    # The lone jobs' steps, as the store timed them: claimed, finished, then seen done.
    steps = output.split("Where a lone job", 1)[1]
    for label in ("flask-jobrunner (memory)", "flask-jobrunner (sqlite)"):
        submitted, claimed, finished, seen = map(float, _row(steps, label))
        assert 0 < submitted < seen
        assert 0 < claimed <= finished <= seen


def test_peer_not_installed_is_skipped_with_a_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # None in sys.modules makes "import huey" raise ImportError, as if it were absent.
    monkeypatch.setitem(sys.modules, "huey", None)
    assert systems.missing_peer("huey") is not None
    cli.main(["--backends", "none", "--peers", "huey", "--quick"])
    captured = capsys.readouterr()
    skipped = "huey: skipped, not installed (pip install -r bench/requirements.txt)"
    assert skipped in captured.err
    assert skipped in captured.out


def test_unknown_backend_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--backends", "memory,oracle"])
    assert "unknown backends: oracle" in capsys.readouterr().err


_COUNT_A_SUBMIT = """
import json, sys
from bench import counting
counting.install()
from bench.app import create_app, noop
app = create_app(backend=sys.argv[1], run_workers=False)
with app.app_context():
    app.extensions["jobrunner"].backend.setup()
    noop.submit()
    before = counting.total()
    noop.submit()
    print(json.dumps(counting.total() - before))
"""


@pytest.mark.parametrize(
    ("backend_id", "sent"),
    [
        ("sqlite", 3),  # BEGIN IMMEDIATE, INSERT, COMMIT
        ("postgresql", 1),  # one INSERT in autocommit
        ("mysql", 1),  # one INSERT in autocommit
    ],
)
def test_calls_count_what_the_driver_sends_for_a_submit(
    backend_id: str, sent: int, backend_url_for: Callable[[str], str]
) -> None:
    assert int(_python("-c", _COUNT_A_SUBMIT, backend_url_for(backend_id), timeout=60)) == sent
