"""Run TickStock on http://127.0.0.1:5000: ``python -m examples.tickstock``."""

from __future__ import annotations

import re

from . import create_app, db

HOW_TO = """
TickStock data-maintenance API on http://{host}:{port}
  data:      {database}
  job store: {backend}
  provider:  {provider}

Submit a job, then poll the URL in its Location header until it is completed:

  curl -si -X POST http://{host}:{port}/api/data-maintenance/load-etf-holdings{auth} \\
       -H 'Content-Type: application/json' -d '{{"etfs": ["SPY", "QQQ", "DIA"]}}'
  curl -s http://{host}:{port}/api/jobs/<job_id>{auth}
  curl -s http://{host}:{port}/api/etfs/SPY{auth}

Other jobs: backfill-daily-bars {{"days": 30}}, add-symbols {{"symbols": ["SRQL"]}},
purge-stale-symbols {{"older_than_days": 30}}; the row counts: GET /api/data-maintenance.

Or run a job from a terminal with a live progress bar:

  flask --app examples.tickstock jobs submit backfill-daily-bars --arg days=90 --watch
"""


def main(host: str = "127.0.0.1", port: int = 5000) -> None:
    """Print how to use the API, then serve it until Ctrl-C."""
    app = create_app()
    token = app.config["TICKSTOCK_API_TOKEN"]
    with app.app_context():
        database = db.engine.url.render_as_string(hide_password=True)
    backend = app.config["JOBRUNNER_BACKEND"]
    if backend == "sqlalchemy":
        backend = "the same database"
    else:
        backend = re.sub(r"://([^:@/]*):[^@/]+@", r"://\1:***@", backend)  # no password on screen
    print(
        HOW_TO.format(
            host=host,
            port=port,
            database=database,
            backend=backend,
            provider=app.config["MARKET_DATA_PROVIDER"],
            auth=' -H "Authorization: Bearer $TICKSTOCK_API_TOKEN"' if token else "",
        ),
        flush=True,
    )
    app.run(host=host, port=port)


if __name__ == "__main__":
    main()
