"""A first cut of TickStock's data-maintenance API, built on flask-jobrunner.

It loads ETF holdings from an offline provider with simulated latency and
reports progress per symbol. Run it with ``python -m examples.tickstock``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, Response, current_app, request

from flask_jobrunner import InvalidArguments, Job, JobRunner, current_job

jobs = JobRunner()

#: The offline provider's data: each ETF and the symbols it holds.
HOLDINGS: dict[str, list[str]] = {
    "SPY": ["AAPL", "MSFT", "NVDA", "AMZN", "META", "GOOGL", "BRK.B", "LLY", "AVGO", "JPM"],
    "QQQ": ["AAPL", "MSFT", "NVDA", "AMZN", "META", "AVGO", "GOOGL", "COST", "TSLA", "NFLX"],
    "DIA": ["UNH", "GS", "MSFT", "HD", "CAT", "AMGN", "V", "MCD", "CRM", "TRV"],
}


@jobs.task(unique=True, http=True, retries=2, timeout=600)
def load_etf_holdings(etfs: list[str] = ["SPY", "QQQ", "DIA"]) -> dict[str, Any]:  # noqa: B006
    """Load the holdings of each ETF, reporting progress per symbol."""
    unknown = [etf for etf in etfs if etf not in HOLDINGS]
    if unknown:
        raise ValueError(f"Unknown ETFs: {', '.join(unknown)}. Known: {', '.join(HOLDINGS)}.")
    latency = current_app.config["TICKSTOCK_PROVIDER_LATENCY"]
    symbols = [(etf, symbol) for etf in etfs for symbol in HOLDINGS[etf]]
    loaded: dict[str, int] = {}
    for done, (etf, _symbol) in enumerate(symbols, 1):
        time.sleep(latency)
        loaded[etf] = loaded.get(etf, 0) + 1
        current_job.progress(
            done=done, total=len(symbols), message=f"Processed {done} of {len(symbols)} symbols"
        )
    return {"etfs_processed": len(etfs), "holdings_loaded": loaded}


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Create the TickStock data-maintenance app."""
    app = Flask(__name__)
    app.config.update(
        TICKSTOCK_API_TOKEN=os.environ.get("TICKSTOCK_API_TOKEN"),
        TICKSTOCK_PROVIDER_LATENCY=0.1,
        JOBRUNNER_PROGRESS_INTERVAL=0.5,
    )
    app.config.update(config or {})
    jobs.init_app(app)

    @jobs.authorize
    def check_token(action: str, task_name: str | None, job: Job | None) -> bool:
        token = current_app.config["TICKSTOCK_API_TOKEN"]
        return token is None or request.headers.get("Authorization") == f"Bearer {token}"

    @app.post("/api/data-maintenance/load-etf-holdings")
    def submit_load_etf_holdings() -> Response:
        # No body: the task's defaults. Errors of flask-jobrunner answer JSON with their code.
        body = request.get_json() if request.content_length else {}
        if not isinstance(body, dict):
            raise InvalidArguments("The request body must be a JSON object of the job's arguments.")
        return jobs.accepted(load_etf_holdings.submit(**body))

    return app
