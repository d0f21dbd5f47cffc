"""A local stand-in for the market-data vendor's REST API, serving the offline data.

The tests run :class:`~.marketdata.HttpMarketData` against it (see
:func:`serving`), so the real request and response code is exercised. To try
the HTTP client by hand, run ``python -m examples.tickstock.provider_stub``
and start TickStock with
``MARKET_DATA_PROVIDER=http MARKET_DATA_URL=http://127.0.0.1:5001``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import date

from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server

from . import offline_data
from .marketdata import etf_holdings_document

#: The longest range one bars request may ask for, as vendors cap it.
MAX_BAR_DAYS = 3660


def create_stub_app(api_key: str | None = None, outage: int = 0) -> Flask:
    """The vendor API as a WSGI app.

    :param api_key: When set, requests without this ``X-API-Key`` get 401.
    :param outage: How many requests, from the first, get 503, as in a vendor's bad minute.
    """
    app = Flask(__name__)
    lock = threading.Lock()
    failures_left = outage

    def error(status: int, message: str) -> Response:
        response = jsonify(error=message)
        response.status_code = status
        return response

    @app.before_request
    def refuse_when_down_or_unauthorized() -> Response | None:
        nonlocal failures_left
        with lock:
            failing, failures_left = failures_left > 0, max(failures_left - 1, 0)
        if failing:
            return error(503, "The service is temporarily unavailable.")
        if api_key is not None and request.headers.get("X-API-Key") != api_key:
            return error(401, "A valid X-API-Key header is required.")
        return None

    @app.get("/v1/etfs/<etf>/holdings")
    def holdings(etf: str) -> Response:
        if etf not in offline_data.HOLDINGS:
            return error(404, f"Unknown ETF '{etf}'.")
        return jsonify(etf_holdings_document(etf, date.today()))

    @app.get("/v1/stocks/<symbol>")
    def profile(symbol: str) -> Response:
        if symbol not in offline_data.PROFILES:
            return error(404, f"Unknown symbol '{symbol}'.")
        name, sector = offline_data.PROFILES[symbol]
        return jsonify(symbol=symbol, name=name, sector=sector)

    @app.get("/v1/stocks/<symbol>/bars")
    def bars(symbol: str) -> Response:
        if symbol not in offline_data.PROFILES:
            return error(404, f"Unknown symbol '{symbol}'.")
        try:
            start = date.fromisoformat(request.args["start"])
            end = date.fromisoformat(request.args["end"])
        except (KeyError, ValueError):
            return error(400, "'start' and 'end' must be dates as YYYY-MM-DD.")
        if not 0 <= (end - start).days < MAX_BAR_DAYS:
            return error(400, f"'start' must be before 'end', at most {MAX_BAR_DAYS} days apart.")
        return jsonify(symbol=symbol, bars=offline_data.daily_bars(symbol, start, end))

    return app


@contextlib.contextmanager
def serving(app: Flask, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve *app* on a free port in a background thread; yields its base URL.

    The server is shut down, and its thread joined, on leaving the block.
    """
    server = make_server(host, 0, app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="provider-stub",
        daemon=True,
    )
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


if __name__ == "__main__":
    create_stub_app().run(host="127.0.0.1", port=5001)
