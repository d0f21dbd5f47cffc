"""Market data: one client interface, an HTTP client for the vendor, an offline provider.

The jobs only see :class:`MarketDataClient`. Its errors tell a job what to do
next: :class:`ProviderUnavailable` (a 5xx, a 429, a timeout, a refused
connection) is worth retrying, and flask-jobrunner retries it because it is
not a :class:`ValueError`; :class:`InvalidRequest` (any other 4xx, such as an
unknown symbol) is a :class:`ValueError`, so the job fails at once with
``error_type`` ``validation``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import Any, Protocol, TypeVar

import requests

from . import offline_data

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Holding:
    """One position of an ETF."""

    symbol: str
    #: The share of the fund's assets, 0 to 1.
    weight: float


@dataclasses.dataclass(frozen=True)
class EtfHoldings:
    """An ETF's holdings file: every position, as of one close."""

    etf: str
    name: str
    as_of: date
    holdings: tuple[Holding, ...]


@dataclasses.dataclass(frozen=True)
class StockProfile:
    """The reference data of one stock."""

    symbol: str
    name: str
    sector: str


@dataclasses.dataclass(frozen=True)
class Bar:
    """One daily OHLCV bar."""

    symbol: str
    day: date
    open: float
    high: float
    low: float
    close: float
    volume: int


class MarketDataError(Exception):
    """Raised when the market-data provider gives no usable answer."""


class ProviderUnavailable(MarketDataError):
    """Raised when the provider is down, overloaded or too slow: worth trying again later."""


class InvalidRequest(MarketDataError, ValueError):
    """Raised when the provider refuses the request (a 4xx): trying again will not help."""


class UnknownSymbol(InvalidRequest):
    """Raised when the provider knows no stock or ETF of that symbol."""


class MarketDataClient(Protocol):
    """What the jobs need from a market-data provider."""

    def etf_holdings(self, etf: str) -> EtfHoldings:
        """The latest holdings file of *etf*."""
        ...

    def stock_profile(self, symbol: str) -> StockProfile:
        """The name and sector of *symbol*."""
        ...

    def daily_bars(self, symbol: str, start: date, end: date) -> list[Bar]:
        """The daily bars of *symbol* from *start* to *end*, both included."""
        ...

    def close(self) -> None:
        """Release connections; the client is not used again."""
        ...


def _holdings(data: Mapping[str, Any]) -> EtfHoldings:
    return EtfHoldings(
        etf=data["etf"],
        name=data["name"],
        as_of=date.fromisoformat(data["as_of"]),
        holdings=tuple(Holding(row["symbol"], float(row["weight"])) for row in data["holdings"]),
    )


def _bars(symbol: str, rows: Sequence[Mapping[str, Any]]) -> list[Bar]:
    return [
        Bar(
            symbol=symbol,
            day=date.fromisoformat(row["date"]),
            open=float(row["open"]),
            high=float(row["high"]),
            low=float(row["low"]),
            close=float(row["close"]),
            volume=int(row["volume"]),
        )
        for row in rows
    ]


class OfflineMarketData:
    """The provider's data from :mod:`.offline_data`, with a simulated round trip.

    :param latency: Seconds each call takes, as a network call would.
    """

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency

    def etf_holdings(self, etf: str) -> EtfHoldings:
        """The ETF's holdings, as of the previous trading day."""
        self._wait()
        if etf not in offline_data.HOLDINGS:
            raise UnknownSymbol(f"Unknown ETF '{etf}'. Known: {', '.join(offline_data.HOLDINGS)}.")
        return _holdings(etf_holdings_document(etf, date.today()))

    def stock_profile(self, symbol: str) -> StockProfile:
        """The stock's name and sector."""
        self._wait()
        if symbol not in offline_data.PROFILES:
            raise UnknownSymbol(f"Unknown symbol '{symbol}'.")
        name, sector = offline_data.PROFILES[symbol]
        return StockProfile(symbol, name, sector)

    def daily_bars(self, symbol: str, start: date, end: date) -> list[Bar]:
        """The stock's bars for every weekday in the range."""
        self._wait()
        if symbol not in offline_data.PROFILES:
            raise UnknownSymbol(f"Unknown symbol '{symbol}'.")
        return _bars(symbol, offline_data.daily_bars(symbol, start, end))

    def close(self) -> None:
        """Nothing to release."""

    def _wait(self) -> None:
        if self.latency > 0:
            time.sleep(self.latency)


def etf_holdings_document(etf: str, today: date) -> dict[str, Any]:
    """The vendor's JSON holdings file of a known *etf*, as of the close before *today*."""
    return {
        "etf": etf,
        "name": offline_data.ETF_NAMES[etf],
        "as_of": offline_data.previous_trading_day(today).isoformat(),
        "holdings": [
            {"symbol": symbol, "weight": weight} for symbol, weight in offline_data.HOLDINGS[etf]
        ],
    }


class HttpMarketData:
    """The vendor's REST API (``/v1/etfs/<etf>/holdings``, ``/v1/stocks/<symbol>[/bars]``).

    :param base_url: Where the API lives, such as ``https://api.vendor.example``.
    :param api_key: Sent as the ``X-API-Key`` header.
    :param timeout: Seconds to wait for a connection, and then for the answer.
    """

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers["Accept"] = "application/json"
        if api_key:
            self._session.headers["X-API-Key"] = api_key

    def etf_holdings(self, etf: str) -> EtfHoldings:
        """The ETF's latest holdings file."""
        return _parse(_holdings, self._get(f"/v1/etfs/{etf}/holdings", symbol=etf))

    def stock_profile(self, symbol: str) -> StockProfile:
        """The stock's name and sector."""
        data = self._get(f"/v1/stocks/{symbol}", symbol=symbol)
        return _parse(lambda d: StockProfile(d["symbol"], d["name"], d["sector"]), data)

    def daily_bars(self, symbol: str, start: date, end: date) -> list[Bar]:
        """The stock's bars in the range."""
        params = {"start": start.isoformat(), "end": end.isoformat()}
        data = self._get(f"/v1/stocks/{symbol}/bars", symbol=symbol, params=params)
        return _parse(lambda d: _bars(symbol, d["bars"]), data)

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    def _get(self, path: str, *, symbol: str, params: Mapping[str, str] | None = None) -> Any:
        url = self.base_url + path
        try:
            response = self._session.get(url, params=params, timeout=self.timeout)
        except requests.RequestException as error:
            message = f"The market-data provider did not answer: {error}"
            raise ProviderUnavailable(message) from error
        status = response.status_code
        if status == 429 or status >= 500:
            raise ProviderUnavailable(
                f"The market-data provider answered {status} for {path}; try again later."
            )
        if status == 404:
            raise UnknownSymbol(f"Unknown symbol '{symbol}': GET {path} answered 404.")
        if status in (401, 403):
            raise InvalidRequest(
                f"The market-data provider refused the API key ({status})."
                " Check MARKET_DATA_API_KEY."
            )
        if status >= 400:
            raise InvalidRequest(f"The market-data provider refused {path}: {_reason(response)}")
        try:
            return response.json()
        except ValueError as error:  # a proxy's HTML error page, a cut-off body
            raise ProviderUnavailable(f"The provider's answer to {path} is not JSON.") from error


def _parse(build: Callable[[Any], T], data: Any) -> T:
    try:
        return build(data)
    except (KeyError, TypeError, ValueError) as error:
        # Not a ValueError of ours: a vendor's format change is our bug, not the client's input.
        raise MarketDataError(f"Unexpected answer from the provider: {error!r}") from error


def _reason(response: requests.Response) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} {response.reason}"


def client_from_config(config: Mapping[str, Any]) -> MarketDataClient:
    """The client ``MARKET_DATA_PROVIDER`` names (``offline`` or ``http``), set up from *config*."""
    if config["MARKET_DATA_PROVIDER"] == "http":
        return HttpMarketData(
            config["MARKET_DATA_URL"],
            api_key=config["MARKET_DATA_API_KEY"],
            timeout=config["MARKET_DATA_TIMEOUT_SECONDS"],
        )
    return OfflineMarketData(latency=config["OFFLINE_DATA_LATENCY_SECONDS"])
