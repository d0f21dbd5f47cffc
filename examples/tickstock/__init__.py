"""TickStock's data-maintenance service, built on flask-jobrunner.

Background jobs keep a small market database up to date: ETF holdings,
the stocks they hold, daily bars. Clients submit jobs over HTTP and poll
them; operators can also run them from the terminal with a progress bar::

    python -m examples.tickstock
    flask --app examples.tickstock jobs submit load-etf-holdings --watch

The ETF holdings are also loaded every night at 02:00 New York time, by
whichever process of the app (web or ``flask jobs worker``) sees the tick
first: one job per night across all of them (``flask jobs schedule`` lists
it).

Settings come from the environment or ``examples/tickstock/.env`` (see
:mod:`.config`). By default one SQLite file in the instance folder holds both
the app's data and the jobs, and the jobs run in the web process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from .config import config_from_env, read_environment
from .extensions import db, jobs
from .routes import api


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Create the TickStock app.

    :param config: Flask config that wins over the environment, as tests use it.
    """
    app = Flask(__name__)
    app.config.from_mapping(config_from_env(read_environment()))
    app.config.from_mapping(config or {})
    db.init_app(app)
    # After db: the 'database' job store (JOBRUNNER_BACKEND 'sqlalchemy') is db's engine.
    jobs.init_app(app)
    app.register_blueprint(api)
    with app.app_context():
        db.create_all()
    if not app.config["TICKSTOCK_API_TOKEN"]:
        app.logger.warning(
            "TICKSTOCK_API_TOKEN is not set: the API is open to every client, as suits a"
            " demo on 127.0.0.1. Set it before the app is reachable from elsewhere."
        )
    return app


__all__ = ["create_app", "db", "jobs"]
