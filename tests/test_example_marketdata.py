"""TickStock's market-data clients: the offline data, and the HTTP client on a local stub.

The stub serves the offline data over real HTTP on 127.0.0.1, so the
requests, status codes and JSON parsing of :class:`HttpMarketData` are the
real ones.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import date

import pytest

from examples.tickstock import offline_data
from examples.tickstock.marketdata import (
    HttpMarketData,
    InvalidRequest,
    OfflineMarketData,
    ProviderUnavailable,
    UnknownSymbol,
)
from examples.tickstock.provider_stub import create_stub_app, serving

WEEK = (date(2024, 6, 24), date(2024, 6, 30))


@pytest.fixture
def vendor_url() -> Iterator[str]:
    """The base URL of the stub vendor API, which wants the key ``k3y``."""
    with serving(create_stub_app(api_key="k3y")) as url:
        yield url


@pytest.fixture
def client(vendor_url: str) -> Iterator[HttpMarketData]:
    """An HTTP client with the right key."""
    http = HttpMarketData(vendor_url, api_key="k3y", timeout=5)
    yield http
    http.close()


def test_the_http_client_reads_the_same_data_as_the_offline_provider(
    client: HttpMarketData,
) -> None:
    offline = OfflineMarketData()

    assert client.etf_holdings("SPY") == offline.etf_holdings("SPY")
    assert client.stock_profile("BRK.B") == offline.stock_profile("BRK.B")
    assert client.daily_bars("AAPL", *WEEK) == offline.daily_bars("AAPL", *WEEK)


def test_unknown_symbols_and_refused_requests_are_value_errors(client: HttpMarketData) -> None:
    with pytest.raises(UnknownSymbol, match="'XYZ'"):
        client.etf_holdings("XYZ")
    with pytest.raises(UnknownSymbol):
        client.daily_bars("NOPE", *WEEK)
    with pytest.raises(InvalidRequest, match="'start' must be before 'end'"):
        client.daily_bars("AAPL", WEEK[1], WEEK[0])
    assert issubclass(InvalidRequest, ValueError)  # so a job fails as 'validation', unretried


def test_a_wrong_api_key_is_refused_naming_the_setting(vendor_url: str) -> None:
    http = HttpMarketData(vendor_url, api_key="wrong")
    try:
        with pytest.raises(InvalidRequest, match="MARKET_DATA_API_KEY"):
            http.stock_profile("AAPL")
    finally:
        http.close()


def test_5xx_answers_are_transient_errors() -> None:
    with serving(create_stub_app(outage=1)) as url:
        http = HttpMarketData(url)
        try:
            with pytest.raises(ProviderUnavailable, match="503") as raised:
                http.stock_profile("AAPL")
            assert not isinstance(raised.value, ValueError)  # so the job is retried
            assert http.stock_profile("AAPL").name == "Apple Inc."
        finally:
            http.close()


def test_a_refused_connection_is_a_transient_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    http = HttpMarketData(f"http://127.0.0.1:{port}", timeout=2)
    try:
        with pytest.raises(ProviderUnavailable, match="did not answer"):
            http.etf_holdings("SPY")
    finally:
        http.close()


def test_a_provider_too_slow_to_answer_times_out_as_a_transient_error() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepts the connection, never answers
        http = HttpMarketData(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.2)
        try:
            with pytest.raises(ProviderUnavailable, match="did not answer"):
                http.etf_holdings("SPY")
        finally:
            http.close()


# -- the offline data ----------------------------------------------------------


def test_the_offline_etfs_hold_a_few_hundred_symbols_with_weights_summing_to_one() -> None:
    assert {etf: len(holdings) for etf, holdings in offline_data.HOLDINGS.items()} == {
        "SPY": 250,
        "QQQ": 100,
        "DIA": 30,
    }
    for holdings in offline_data.HOLDINGS.values():
        weights = [weight for _, weight in holdings]
        assert sum(weights) == pytest.approx(1, abs=1e-6)
        assert weights == sorted(weights, reverse=True)
        assert len({symbol for symbol, _ in holdings}) == len(holdings)
    held = {symbol for holdings in offline_data.HOLDINGS.values() for symbol, _ in holdings}
    assert 200 < len(held) < 400
    assert held.isdisjoint(offline_data.EXTRA_SYMBOLS)
    assert held | set(offline_data.EXTRA_SYMBOLS) == set(offline_data.PROFILES)


def test_daily_bars_are_weekdays_only_consistent_and_deterministic() -> None:
    bars = OfflineMarketData().daily_bars("MSFT", date(2024, 6, 1), date(2024, 6, 30))

    assert len(bars) == 20
    assert all(bar.day.weekday() < 5 for bar in bars)
    assert all(
        bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high for bar in bars
    )
    assert all(bar.volume > 0 for bar in bars)
    assert bars == OfflineMarketData().daily_bars("MSFT", date(2024, 6, 1), date(2024, 6, 30))
    assert offline_data.daily_bar("MSFT", bars[0].day) != offline_data.daily_bar(
        "AAPL", bars[0].day
    )


def test_holdings_are_as_of_the_previous_trading_day() -> None:
    monday, friday = date(2024, 7, 1), date(2024, 6, 28)

    assert offline_data.previous_trading_day(monday) == friday
    assert offline_data.previous_trading_day(date(2024, 6, 29)) == friday
    assert OfflineMarketData().etf_holdings("DIA").as_of == offline_data.previous_trading_day(
        date.today()
    )


def test_the_offline_provider_refuses_unknown_symbols() -> None:
    offline = OfflineMarketData()
    with pytest.raises(UnknownSymbol):
        offline.etf_holdings("VTI")
    with pytest.raises(UnknownSymbol):
        offline.stock_profile("ZZZZ")
