"""One measurement in a fresh process: ``python -m bench.driver '<json>'``.

Each system runs in a process of its own, so peers' imports never meet, an
in-process system's RSS and CPU are its own, and a crash costs one row. The
figures go to stdout as one line starting with :data:`MARK`.
"""

from __future__ import annotations

import json
import pathlib
import sys
import tempfile
from typing import Any

MARK = "BENCH-FIGURES "


def measure(config: dict[str, Any]) -> dict[str, Any]:
    """The figures of one system on one backend, as *config* asks."""
    from bench import systems
    from bench.systems.base import opened
    from bench.workloads import Scale, run_workloads

    cls = systems.load(config["system"])
    scale = Scale(**config["scale"])
    with tempfile.TemporaryDirectory(prefix="jrbench-") as temporary:
        directory = pathlib.Path(temporary)
        system = cls(config["backend"], directory)
        if config.get("profile"):
            system.profile_to = directory / "worker.prof"  # type: ignore[attr-defined]
        with opened(system):
            figures = run_workloads(system, config["workloads"], scale)
        figures["label"] = system.label
        figures["note"] = system.note
        if config.get("profile") and (directory / "worker.prof").exists():
            figures["profile"] = profile_text(directory / "worker.prof")
        return figures


def profile_text(path: pathlib.Path, lines: int = 20) -> str:
    """The busiest functions of a py-spy raw profile: by own samples, and flask-jobrunner's.

    Each line of the raw (collapsed) format is a stack, root first, and a
    sample count; a frame is ``function (file:line)``.
    """
    import collections
    import re

    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
        own[frames[-1]] += samples
        for frame in set(frames):
            if "flask_jobrunner" in frame:
                inclusive[frame] += samples
    if not total:
        return "no samples"

    def table(counter: collections.Counter[str]) -> str:
        return "\n".join(
            f"{count * 100 / total:6.1f}%  {frame}" for frame, count in counter.most_common(lines)
        )

    return (
        f"{total} samples of the thread holding the GIL; own time:\n{table(own)}\n\n"
        f"flask-jobrunner functions, time including callees:\n{table(inclusive)}"
    )


def main() -> None:
    """Measure what ``argv[1]`` asks and print the figures."""
    figures = measure(json.loads(sys.argv[1]))
    print(MARK + json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
