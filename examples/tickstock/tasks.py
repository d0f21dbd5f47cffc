"""The data-maintenance jobs: load ETF holdings, backfill bars, add and purge symbols.

Each job is ``unique`` (one of a kind at a time, as two loads of the same
data would only fight over the same rows), reports progress per symbol, and
commits after each symbol, before reporting. Committing per symbol keeps the
work done when a job fails part-way, and keeps write transactions short: on
SQLite, the job store's progress write needs the file's one write lock,
which an uncommitted change of the job itself would hold. Every write is an
upsert, so a retried job simply does its work again. No task sets a
``timeout``: ``JOB_TIMEOUT_SECONDS`` applies to all of them.

:func:`load_etf_holdings` also runs on its own every night at 02:00 New
York time (``flask jobs schedule`` shows the next run): the providers
publish holdings files overnight, and the load is done long before the open.

Transient provider errors (:class:`~.marketdata.ProviderUnavailable`) are
retried with back-off; an unknown symbol (:class:`~.marketdata.UnknownSymbol`,
a :class:`ValueError`) fails the job at once as a ``validation`` error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Annotated, Any, cast

from flask import current_app
from pydantic import AfterValidator, Field, StringConstraints
from sqlalchemy import CursorResult, delete, select

from flask_jobrunner import current_job

from .extensions import db, jobs
from .marketdata import Bar, EtfHoldings, MarketDataClient, StockProfile, client_from_config
from .models import DailyBar, Etf, EtfHolding, Stock
from .offline_data import previous_trading_day

#: A ticker as clients may write it (``brk.b``); tasks receive it upper-cased.
Symbol = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9.]{0,9}$"), AfterValidator(str.upper)
]
#: A span of calendar days, up to ten years.
Days = Annotated[int, Field(ge=1, le=3650)]

DEFAULT_ETFS = ["SPY", "QQQ", "DIA"]  # read only: it is the default of a parameter
#: Provider outages are retried 3 times, after about 2, 4 and 8 seconds.
RETRIES, RETRY_BACKOFF = 3, 2.0
#: When the ETF holdings are loaded again: nightly, in the market's timezone.
NIGHTLY_LOAD, MARKET_TIMEZONE = "0 2 * * *", "America/New_York"


@contextlib.contextmanager
def market_data() -> Iterator[MarketDataClient]:
    """A market-data client for one job, as the app's config sets it up."""
    client = client_from_config(current_app.config)
    try:
        yield client
    finally:
        client.close()


def report(done: int, total: int) -> None:
    """Report progress in symbols; also where a cancelled or timed-out job stops."""
    current_job.progress(done=done, total=total, message=f"Processed {done} of {total} symbols")


# Every night at 02:00 New York time, long before the open. One job per night
# however many web and worker processes run; a unique task, so a night's load
# that is still running when the next one is due makes that one skip.
@jobs.periodic(NIGHTLY_LOAD, timezone=MARKET_TIMEZONE, name="nightly-etf-holdings")
@jobs.task(unique=True, http=True, retries=RETRIES, retry_backoff=RETRY_BACKOFF)
def load_etf_holdings(
    etfs: Annotated[list[Symbol], Field(min_length=1, max_length=20)] = DEFAULT_ETFS,
) -> dict[str, Any]:
    """Load the holdings files of *etfs*: upsert each held stock, then each ETF's holdings.

    A stock that left an ETF loses that holding; :func:`purge_stale_symbols`
    removes stocks no ETF holds any more.
    """
    with market_data() as client:
        files = [client.etf_holdings(etf) for etf in etfs]
        symbols = sorted({holding.symbol for file in files for holding in file.holdings})
        as_of = max(file.as_of for file in files)
        report(0, len(symbols))
        for done, symbol in enumerate(symbols, 1):
            upsert_stock(client.stock_profile(symbol), seen=as_of)
            db.session.commit()
            report(done, len(symbols))
    removed = sum(replace_holdings(file) for file in files)
    db.session.commit()
    return {
        "as_of": as_of.isoformat(),
        "holdings": {file.etf: len(file.holdings) for file in files},
        "holdings_removed": removed,
        "stocks": len(symbols),
    }


@jobs.task(unique=True, http=True, retries=RETRIES, retry_backoff=RETRY_BACKOFF)
def backfill_daily_bars(
    symbols: Annotated[list[Symbol], Field(min_length=1, max_length=1000)] | None = None,
    days: Days = 30,
    end: date | None = None,
) -> dict[str, Any]:
    """Fetch and upsert the daily bars of the last *days* calendar days up to *end*.

    :param symbols: Tracked stocks to backfill; all of them by default.
    :param days: How many calendar days, *end* included.
    :param end: The last day; by default the previous trading day.
    """
    end = end or previous_trading_day(date.today())
    start = end - timedelta(days=days - 1)
    tracked = set(db.session.scalars(select(Stock.symbol)))
    if symbols is None:
        symbols = sorted(tracked)
    untracked = [symbol for symbol in symbols if symbol not in tracked]
    if untracked:
        raise ValueError(
            f"Not tracked: {', '.join(untracked)}."
            " Load them first, with load-etf-holdings or add-symbols."
        )
    written = 0
    report(0, len(symbols))
    with market_data() as client:
        for done, symbol in enumerate(symbols, 1):
            written += upsert_bars(symbol, client.daily_bars(symbol, start, end), start, end)
            db.session.commit()
            report(done, len(symbols))
    return {"start": start.isoformat(), "end": end.isoformat(), "bars": written}


@jobs.task(unique=True, http=True, retries=RETRIES, retry_backoff=RETRY_BACKOFF)
def add_symbols(
    symbols: Annotated[list[Symbol], Field(min_length=1, max_length=500)],
) -> dict[str, Any]:
    """Start tracking *symbols* that no ETF holds, with the provider's reference data.

    An unknown symbol stops the job with a ``validation`` error naming it;
    the symbols before it stay added.
    """
    today = date.today()
    report(0, len(symbols))
    with market_data() as client:
        for done, symbol in enumerate(symbols):
            try:
                profile = client.stock_profile(symbol)
            except ValueError as error:
                message = f"{error} Added {done} of {len(symbols)} symbols before it."
                raise type(error)(message) from error
            upsert_stock(profile, seen=today)
            db.session.commit()
            report(done + 1, len(symbols))
    return {"added": symbols}


@jobs.task(unique=True, http=True)
def purge_stale_symbols(older_than_days: Days = 30) -> dict[str, Any]:
    """Delete stocks that no ETF holds and nobody listed for *older_than_days*, with their bars."""
    cutoff = date.today() - timedelta(days=older_than_days)
    held = select(EtfHolding.symbol)
    stale = list(
        db.session.scalars(
            select(Stock.symbol)
            .where(Stock.last_seen < cutoff, Stock.symbol.not_in(held))
            .order_by(Stock.symbol)
        )
    )
    report(0, len(stale))
    bars = 0
    for done, symbol in enumerate(stale, 1):
        deleted = db.session.execute(delete(DailyBar).where(DailyBar.symbol == symbol))
        bars += cast(CursorResult[Any], deleted).rowcount
        db.session.execute(delete(Stock).where(Stock.symbol == symbol))
        db.session.commit()
        report(done, len(stale))
    return {"purged": stale, "bars_deleted": bars}


# -- upserts: portable ORM code, the same on SQLite, PostgreSQL and MariaDB ----------


def upsert_stock(profile: StockProfile, *, seen: date) -> Stock:
    """Insert or update the stock of *profile*, seen on *seen*."""
    stock = db.session.get(Stock, profile.symbol)
    if stock is None:
        stock = Stock(symbol=profile.symbol)
        db.session.add(stock)
    stock.name, stock.sector = profile.name, profile.sector
    stock.last_seen = max(seen, stock.last_seen or seen)
    return stock


def replace_holdings(file: EtfHoldings) -> int:
    """Make the ETF's holdings those of *file*; returns how many holdings it dropped."""
    etf = db.session.get(Etf, file.etf)
    if etf is None:
        etf = Etf(symbol=file.etf)
        db.session.add(etf)
    etf.name, etf.as_of = file.name, file.as_of
    current = {holding.symbol: holding for holding in etf.holdings}
    for position in file.holdings:
        row = current.pop(position.symbol, None)
        if row is None:
            row = EtfHolding(symbol=position.symbol)
            etf.holdings.append(row)
        row.weight, row.as_of = position.weight, file.as_of
    for dropped in current.values():
        etf.holdings.remove(dropped)
    return len(current)


def upsert_bars(symbol: str, bars: list[Bar], start: date, end: date) -> int:
    """Insert or update *bars* of *symbol*, all within *start* to *end*; returns their number."""
    stored = {
        row.day: row
        for row in db.session.scalars(
            select(DailyBar).where(DailyBar.symbol == symbol, DailyBar.day.between(start, end))
        )
    }
    for bar in bars:
        row = stored.get(bar.day)
        if row is None:
            row = DailyBar(symbol=symbol, day=bar.day)
            db.session.add(row)
        row.open, row.high, row.low, row.close = bar.open, bar.high, bar.low, bar.close
        row.volume = bar.volume
    return len(bars)
