"""The tables: figures per system, ratios to the peers, and the issue's targets.

Tables come as reST simple tables (readable in a terminal, pasted as they are
into ``docs/performance.rst``) or, with ``markdown=True``, as pipe tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Metric:
    """One figure: its key, its column title, its direction and its format."""

    key: str
    title: str
    higher_is_better: bool
    form: str = "{:,.0f}"

    def show(self, value: float | None) -> str:
        """The value formatted, or ``-`` when it was not measured."""
        return "-" if value is None else self.form.format(value)


METRICS = [
    Metric("enqueue", "enqueue/s", True),
    Metric("submit_many", "submit_many/s", True),
    Metric("drain", "drain/s", True),
    Metric("p50_ms", "p50 ms", False, "{:.2f}"),
    Metric("p99_ms", "p99 ms", False, "{:.2f}"),
    Metric("sleep_s", "sleep s", False, "{:.2f}"),
    Metric("sleep_x", "sleep/ideal", False, "{:.3f}"),
    Metric("cpu_ms", "CPU ms/job", False, "{:.2f}"),
    Metric("rss_mb", "RSS MB", False, "{:.0f}"),
    Metric("http_rps", "HTTP req/s", True),
    Metric("http_jobs", "HTTP jobs/s", True),
]
CALL_METRICS = [
    Metric("calls_enqueue", "submit", False, "{:.2f}"),
    Metric("calls_submit_many", "submit_many", False, "{:.3f}"),
    Metric("calls_worker_bulk", "worker, full queue", False, "{:.2f}"),
    Metric("calls_worker_single", "worker, one by one", False, "{:.2f}"),
]
STEP_METRICS = [
    Metric("steps_submitted", "submit returned", False, "{:.2f}"),
    Metric("steps_claimed", "claimed", False, "{:.2f}"),
    Metric("steps_finished", "finished", False, "{:.2f}"),
    Metric("steps_seen", "seen completed", False, "{:.2f}"),
]
BY_KEY = {metric.key: metric for metric in [*METRICS, *CALL_METRICS, *STEP_METRICS]}
#: The peer each backend's targets name.
TARGET_PEER = {
    "redis": "huey",
    "postgresql": "procrastinate",
    "memory": "flask-executor",
    "sqlite": "celery",
    "mysql": "celery",
}
IDEAL_SLEEP_X = 1.15
MAX_RSS_MB = 60.0


@dataclass
class Row:
    """One system on one backend: its figures, or why it has none."""

    system: str
    backend: str
    label: str
    figures: dict[str, float] = field(default_factory=dict)
    problem: str | None = None

    @property
    def is_peer(self) -> bool:
        """Whether the row is a peer's, not flask-jobrunner's."""
        return self.system != "jobrunner"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    if markdown:
        lines = ["| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    rule = "  ".join("=" * width for width in widths)

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        return "  ".join(
            [first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))]
        ).rstrip()

    return "\n".join([rule, line(header), rule, *(line(row) for row in rows), rule])


def figures_table(
    rows: Sequence[Row], markdown: bool = False, metrics: Sequence[Metric] = METRICS
) -> str:
    """The *metrics* figures of every row."""
    shown = [m for m in metrics if any(m.key in row.figures for row in rows)]
    header = ["system", *(m.title for m in shown)]
    body = []
    for row in rows:
        if row.problem:
            body.append([row.label, *(["-"] * len(shown))])
            continue
        body.append([row.label, *(m.show(row.figures.get(m.key)) for m in shown)])
    return _table(header, body, markdown)


#: Peers that keep no job state: they set no "best peer" figure for job runners that do.
STATELESS_PEERS = {"flask-executor"}


def best_peer(rows: Sequence[Row], key: str) -> Row | None:
    """The peer row with the best *key* figure, among the peers that keep job state."""
    metric = BY_KEY[key]
    candidates = [
        r
        for r in rows
        if r.is_peer and r.system not in STATELESS_PEERS and r.figures.get(key) is not None
    ]
    if not candidates:
        return None
    choose: Callable[..., Row] = max if metric.higher_is_better else min
    return choose(candidates, key=lambda r: r.figures[key])


def peer(rows: Sequence[Row], name: str) -> Row | None:
    """The row of peer *name*, if it was measured."""
    return next((r for r in rows if r.system == name and not r.problem), None)


#: Our figure compared with a peer's: submit_many against the peer's enqueue.
RATIO_KEYS = ["enqueue", "submit_many", "drain", "p50_ms", "p99_ms", "sleep_x", "cpu_ms", "rss_mb"]


def _peer_key(key: str) -> str:
    return "enqueue" if key == "submit_many" else key


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or not theirs:
        return None
    return ours / theirs


def ratios_table(rows: Sequence[Row], markdown: bool = False) -> str:
    """For each flask-jobrunner row, each figure over the best peer's and the target peer's."""
    header = ["flask-jobrunner", *(BY_KEY[k].title for k in RATIO_KEYS)]
    body = []
    for row in rows:
        if row.is_peer or row.problem:
            continue
        target = peer(rows, TARGET_PEER[row.backend])
        cells = [f"{row.backend}: best / {TARGET_PEER[row.backend]}"]
        for key in RATIO_KEYS:
            best = best_peer(rows, _peer_key(key))
            to_best = _ratio(
                row.figures.get(key), best.figures.get(_peer_key(key)) if best else None
            )
            to_target = _ratio(
                row.figures.get(key), target.figures.get(_peer_key(key)) if target else None
            )
            cells.append(f"{_times(to_best)} / {_times(to_target)}")
        body.append(cells)
    return _table(header, body, markdown)


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


@dataclass(frozen=True)
class Target:
    """One of the issue's targets, and whether the run met it."""

    text: str
    met: bool | None
    measured: str


def _compare(
    rows: Sequence[Row], backend: str, key: str, factor: float, peer_name: str | None
) -> Target:
    ours = next((r for r in rows if not r.is_peer and r.backend == backend), None)
    metric = BY_KEY[key]
    sign = ">=" if metric.higher_is_better else "<="
    if peer_name is None:
        text = f"{backend}: {metric.title} {sign} {factor:g}"
        value = None if ours is None else ours.figures.get(key)
        if value is None:
            return Target(text, None, "not measured")
        met = value >= factor if metric.higher_is_better else value <= factor
        return Target(text, met, metric.show(value))
    other = peer(rows, peer_name)
    peer_key = _peer_key(key)
    scale = f"{factor:g}x " if factor != 1 else ""
    text = f"{backend}: {metric.title} {sign} {scale}{peer_name}'s {BY_KEY[peer_key].title}"
    value = None if ours is None else ours.figures.get(key)
    theirs = None if other is None else other.figures.get(peer_key)
    if value is None or theirs is None:
        return Target(text, None, "not measured")
    bound = theirs * factor
    met = value >= bound if metric.higher_is_better else value <= bound
    return Target(
        text,
        met,
        f"{metric.show(value)}, bound {metric.show(bound)} ({value / theirs:.2f}x {peer_name}'s)",
    )


def targets(rows: Sequence[Row]) -> list[Target]:
    """The issue's targets, checked against the rows of one run."""
    backends = [r.backend for r in rows if not r.is_peer]
    found: list[Target] = []
    if "redis" in backends:
        found += [
            _compare(rows, "redis", "drain", 2, "huey"),
            _compare(rows, "redis", "enqueue", 1, "huey"),
            _compare(rows, "redis", "submit_many", 5, "huey"),
            _compare(rows, "redis", "p50_ms", 1, "huey"),
        ]
    if "postgresql" in backends:
        found += [
            _compare(rows, "postgresql", "drain", 3, "procrastinate"),
            _compare(rows, "postgresql", "p50_ms", 0.5, "procrastinate"),
        ]
    if "memory" in backends:
        found.append(_compare(rows, "memory", "drain", 1, "flask-executor"))
    for backend in ("sqlite", "mysql"):
        if backend in backends:
            for key in ("enqueue", "drain", "p50_ms", "p99_ms", "cpu_ms", "rss_mb"):
                found.append(_compare(rows, backend, key, 1, "celery"))
    for backend in backends:
        found.append(_compare(rows, backend, "sleep_x", IDEAL_SLEEP_X, None))
        found.append(_compare(rows, backend, "rss_mb", MAX_RSS_MB, None))
    return found


def targets_table(rows: Sequence[Row], markdown: bool = False) -> str:
    """Each target: met, not met, or not measured, with the figures."""
    body = []
    for target in targets(rows):
        verdict = {True: "met", False: "NOT MET", None: "not measured"}[target.met]
        body.append([target.text, verdict, target.measured])
    return _table(["target", "verdict", "measured"], body, markdown)


def render(rows: Sequence[Row], markdown: bool, notes: Sequence[str]) -> str:
    """The three tables and the notes."""
    parts = [figures_table(rows, markdown)]
    if any(row.is_peer and not row.problem for row in rows):
        parts.append(
            "Ratios: flask-jobrunner's figure over the best peer's / over the peer the"
            " targets name (submit_many is compared with the peers' enqueue). Above 1 is"
            " better for enqueue, submit_many and drain; below 1 for the others. The best"
            " peer is the best of those that keep job state (not Flask-Executor)."
        )
        parts.append(ratios_table(rows, markdown))
    parts.append(targets_table(rows, markdown))
    for title, metrics in (
        (
            "Where a lone job of the latency run spends its time (median ms from the"
            " submit call; the claim and the finish as the store timed them):",
            STEP_METRICS,
        ),
        (
            "Calls to the store per job (Redis commands, pipelines and scripts sent;"
            " SQL statements, and the BEGINs and COMMITs a driver sends):",
            CALL_METRICS,
        ),
    ):
        measured = [r for r in rows if any(m.key in r.figures for m in metrics)]
        if measured:
            parts.append(title)
            parts.append(figures_table(measured, markdown, metrics))
    problems = [f"{row.label}: {row.problem}" for row in rows if row.problem]
    extra = [*notes, *problems]
    if extra:
        parts.append("\n".join(f"- {note}" for note in extra))
    return "\n\n".join(parts)


def median_figures(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The median of each numeric figure over *runs*."""
    import statistics

    keys = {key for run in runs for key, value in run.items() if isinstance(value, float | int)}
    return {key: statistics.median(run[key] for run in runs if key in run) for key in sorted(keys)}
