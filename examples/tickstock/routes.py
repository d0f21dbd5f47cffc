"""TickStock's HTTP API: submit data-maintenance jobs, look at the data they keep.

``POST /api/data-maintenance/<job>`` answers ``202 Accepted`` with the job's
polling URL; clients then poll flask-jobrunner's own ``GET /api/jobs/<id>``.
Both are protected by one policy: ``Authorization: Bearer <TICKSTOCK_API_TOKEN>``.
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify, request
from sqlalchemy import select
from werkzeug.exceptions import HTTPException

from flask_jobrunner import InvalidArguments, Job, NotAuthorized, Task

from . import tasks
from .extensions import db, jobs
from .models import Etf, table_counts

api = Blueprint("tickstock", __name__, url_prefix="/api")

#: The jobs clients may submit, by the name in the URL.
MAINTENANCE_JOBS: dict[str, Task[..., dict[str, Any]]] = {
    "load-etf-holdings": tasks.load_etf_holdings,
    "backfill-daily-bars": tasks.backfill_daily_bars,
    "add-symbols": tasks.add_symbols,
    "purge-stale-symbols": tasks.purge_stale_symbols,
}


def has_valid_token() -> bool:
    """Whether the request carries the API token; always, when none is configured.

    Without ``TICKSTOCK_API_TOKEN`` the demo stays open for local use
    (``create_app`` logs a warning saying so).
    """
    token: str | None = current_app.config["TICKSTOCK_API_TOKEN"]
    if not token:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # compare_digest: the time taken must not tell how much of a guess was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())


@jobs.authorize
def authorize(action: str, task_name: str | None, job: Job | None) -> bool:
    """flask-jobrunner's policy for ``/api/jobs``: the same token as TickStock's own routes."""
    return has_valid_token()


@api.before_request
def require_token() -> None:
    """Refuse TickStock's own routes without the token, as ``/api/jobs`` does."""
    if not has_valid_token():
        raise NotAuthorized("Send the API token as 'Authorization: Bearer <token>'.")


@api.get("/data-maintenance")
def overview() -> Response:
    """The jobs clients may submit, and how many rows each table holds."""
    # The docstrings are the one description of each job; clients see their first line.
    summaries = {
        name: (task.__doc__ or "").split("\n")[0].replace("*", "")
        for name, task in MAINTENANCE_JOBS.items()
    }
    return jsonify(jobs=summaries, tables=table_counts())


@api.post("/data-maintenance/<job>")
def submit(job: str) -> Response:
    """Submit a data-maintenance job; the JSON body holds its arguments (none: defaults)."""
    task = MAINTENANCE_JOBS.get(job)
    if task is None:
        known = ", ".join(MAINTENANCE_JOBS)
        abort(404, f"There is no data-maintenance job '{job}'. Jobs: {known}.")
    arguments = request.get_json() if request.content_length else {}
    if not isinstance(arguments, dict):
        raise InvalidArguments("The request body must be a JSON object of the job's arguments.")
    submitted = jobs.enqueue(
        task, kwargs=arguments, idempotency_key=request.headers.get("Idempotency-Key")
    )
    return jobs.accepted(submitted)


@api.get("/etfs/<symbol>")
def etf(symbol: str) -> Response:
    """An ETF with its largest holdings (``?limit=``, 10 by default)."""
    row = db.session.scalar(select(Etf).where(Etf.symbol == symbol.upper()))
    if row is None:
        abort(404, f"ETF '{symbol}' is not loaded. Run the load-etf-holdings job.")
    limit = request.args.get("limit", 10, type=int)
    return jsonify(
        symbol=row.symbol,
        name=row.name,
        as_of=row.as_of.isoformat(),
        holdings_count=len(row.holdings),
        top_holdings=[{"symbol": h.symbol, "weight": h.weight} for h in row.holdings[:limit]],
    )


@api.app_errorhandler(HTTPException)
def json_error(error: HTTPException) -> Response | HTTPException:
    """Answer HTTP errors under ``/api`` in the JSON shape flask-jobrunner uses."""
    if not request.path.startswith("/api/"):
        return error
    response = jsonify(error=error.description, details=None)
    response.status_code = error.code or 500
    return response
