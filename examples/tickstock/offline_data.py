"""The offline provider's data: SPY, QQQ and DIA, their holdings and daily bars.

Everything is generated deterministically, so every run, every process and
the local stub of the vendor's HTTP API see the same data: the well-known
large caps by name, then a few hundred made-up but plausible tickers from a
seeded generator. Holding weights fall off with rank and sum to 1 per ETF.
A daily bar is a pure function of its symbol and date (weekdays only;
exchange holidays are not modelled), so a backfill of any range needs no
stored state.
"""

from __future__ import annotations

import hashlib
import math
import random
import string
from datetime import date, timedelta

SECTORS = (
    "Communication Services",
    "Consumer Discretionary",
    "Consumer Staples",
    "Energy",
    "Financials",
    "Health Care",
    "Industrials",
    "Information Technology",
    "Materials",
    "Real Estate",
    "Utilities",
)
_COM, _CD, _CS, _EN, _FIN, _HC, _IND, _IT, _MAT = SECTORS[:9]

#: Real large caps, roughly by size: (symbol, name, sector).
KNOWN_STOCKS: tuple[tuple[str, str, str], ...] = (
    ("AAPL", "Apple Inc.", _IT),
    ("MSFT", "Microsoft Corp.", _IT),
    ("NVDA", "NVIDIA Corp.", _IT),
    ("AMZN", "Amazon.com Inc.", _CD),
    ("META", "Meta Platforms Inc.", _COM),
    ("GOOGL", "Alphabet Inc. Class A", _COM),
    ("GOOG", "Alphabet Inc. Class C", _COM),
    ("BRK.B", "Berkshire Hathaway Inc. Class B", _FIN),
    ("AVGO", "Broadcom Inc.", _IT),
    ("LLY", "Eli Lilly and Co.", _HC),
    ("JPM", "JPMorgan Chase & Co.", _FIN),
    ("TSLA", "Tesla Inc.", _CD),
    ("UNH", "UnitedHealth Group Inc.", _HC),
    ("XOM", "Exxon Mobil Corp.", _EN),
    ("V", "Visa Inc. Class A", _FIN),
    ("MA", "Mastercard Inc. Class A", _FIN),
    ("PG", "Procter & Gamble Co.", _CS),
    ("JNJ", "Johnson & Johnson", _HC),
    ("HD", "Home Depot Inc.", _CD),
    ("COST", "Costco Wholesale Corp.", _CS),
    ("MRK", "Merck & Co. Inc.", _HC),
    ("ABBV", "AbbVie Inc.", _HC),
    ("CVX", "Chevron Corp.", _EN),
    ("CRM", "Salesforce Inc.", _IT),
    ("NFLX", "Netflix Inc.", _COM),
    ("AMD", "Advanced Micro Devices Inc.", _IT),
    ("PEP", "PepsiCo Inc.", _CS),
    ("KO", "Coca-Cola Co.", _CS),
    ("ADBE", "Adobe Inc.", _IT),
    ("WMT", "Walmart Inc.", _CS),
    ("CSCO", "Cisco Systems Inc.", _IT),
    ("LIN", "Linde plc", _MAT),
    ("TMUS", "T-Mobile US Inc.", _COM),
    ("QCOM", "Qualcomm Inc.", _IT),
    ("INTU", "Intuit Inc.", _IT),
    ("TXN", "Texas Instruments Inc.", _IT),
    ("ISRG", "Intuitive Surgical Inc.", _HC),
    ("BKNG", "Booking Holdings Inc.", _CD),
    ("AMGN", "Amgen Inc.", _HC),
    ("MCD", "McDonald's Corp.", _CD),
    ("GS", "Goldman Sachs Group Inc.", _FIN),
    ("CAT", "Caterpillar Inc.", _IND),
    ("IBM", "International Business Machines Corp.", _IT),
    ("AXP", "American Express Co.", _FIN),
    ("DIS", "Walt Disney Co.", _COM),
    ("VZ", "Verizon Communications Inc.", _COM),
    ("HON", "Honeywell International Inc.", _IND),
    ("BA", "Boeing Co.", _IND),
    ("NKE", "Nike Inc. Class B", _CD),
    ("SHW", "Sherwin-Williams Co.", _MAT),
    ("TRV", "Travelers Companies Inc.", _FIN),
    ("MMM", "3M Co.", _IND),
    # Nasdaq-100 members outside the S&P 500.
    ("ASML", "ASML Holding N.V. ADR", _IT),
    ("PDD", "PDD Holdings Inc. ADR", _CD),
    ("ARM", "Arm Holdings plc ADR", _IT),
    ("MELI", "MercadoLibre Inc.", _CD),
)

#: The Dow's 30 members, as DIA holds them.
DOW_30 = (
    "UNH",
    "GS",
    "MSFT",
    "HD",
    "CAT",
    "AMGN",
    "CRM",
    "V",
    "MCD",
    "AXP",
    "TRV",
    "JPM",
    "IBM",
    "AAPL",
    "HON",
    "AMZN",
    "BA",
    "PG",
    "CVX",
    "JNJ",
    "NVDA",
    "MRK",
    "SHW",
    "DIS",
    "MMM",
    "WMT",
    "NKE",
    "KO",
    "CSCO",
    "VZ",
)
_NASDAQ_ONLY = ("ASML", "PDD", "ARM", "MELI")
_QQQ_KNOWN = (
    "AAPL",
    "MSFT",
    "NVDA",
    "AMZN",
    "AVGO",
    "META",
    "GOOGL",
    "GOOG",
    "COST",
    "TSLA",
    "NFLX",
    "AMD",
    "PEP",
    "ADBE",
    "CSCO",
    "LIN",
    "TMUS",
    "QCOM",
    "INTU",
    "TXN",
    "ISRG",
    "BKNG",
    "AMGN",
    "HON",
    "ASML",
    "PDD",
    "ARM",
    "MELI",
)

ETF_NAMES = {
    "SPY": "SPDR S&P 500 ETF Trust",
    "QQQ": "Invesco QQQ Trust, Series 1",
    "DIA": "SPDR Dow Jones Industrial Average ETF Trust",
}
SPY_SIZE, QQQ_SIZE, EXTRA_SIZE = 250, 100, 20

_SYLLABLES = (
    "al",
    "ar",
    "bel",
    "cor",
    "dyn",
    "en",
    "ex",
    "gen",
    "hal",
    "ion",
    "kor",
    "lum",
    "mar",
    "nov",
    "or",
    "pax",
    "quin",
    "ral",
    "sol",
    "tor",
    "ver",
    "zen",
)
_SUFFIXES = ("Corp.", "Inc.", "Holdings Inc.", "Group Inc.", "Technologies Inc.", "Industries")


def _generate() -> tuple[dict[str, tuple[str, str]], dict[str, list[str]], list[str]]:
    rng = random.Random(20240628)  # fixed: the data is part of the example
    profiles = {symbol: (name, sector) for symbol, name, sector in KNOWN_STOCKS}

    def new_symbols(count: int) -> list[str]:
        made: list[str] = []
        while len(made) < count:
            symbol = "".join(rng.choices(string.ascii_uppercase, k=rng.choice((3, 3, 4))))
            if symbol not in profiles:
                words = "".join(rng.sample(_SYLLABLES, 2)).title()
                profiles[symbol] = (f"{words} {rng.choice(_SUFFIXES)}", rng.choice(SECTORS))
                made.append(symbol)
        return made

    sp_known = [symbol for symbol, _, _ in KNOWN_STOCKS if symbol not in _NASDAQ_ONLY]
    spy = sp_known + new_symbols(SPY_SIZE - len(sp_known))
    nasdaq_only = new_symbols(15)
    qqq_fill = [s for s in spy[len(sp_known) :] if rng.random() < 0.4]
    qqq = [*_QQQ_KNOWN, *nasdaq_only, *qqq_fill][:QQQ_SIZE]
    extras = new_symbols(EXTRA_SIZE)
    return profiles, {"SPY": spy, "QQQ": qqq, "DIA": list(DOW_30)}, extras


#: Every symbol the provider knows: (name, sector).
PROFILES, _MEMBERS, EXTRA_SYMBOLS = _generate()


def _weights(count: int) -> list[float]:
    raw = [1 / (rank + 4) ** 1.2 for rank in range(count)]
    total = sum(raw)
    weights = [round(value / total, 6) for value in raw]
    weights[0] = round(weights[0] + 1 - sum(weights), 6)  # rounding leftovers to the largest
    return weights


#: Each ETF's holdings: (symbol, weight), largest first.
HOLDINGS: dict[str, list[tuple[str, float]]] = {
    etf: list(zip(members, _weights(len(members)), strict=True))
    for etf, members in _MEMBERS.items()
}


def previous_trading_day(day: date) -> date:
    """The last weekday before *day*: the close that holdings and bars are as of."""
    day -= timedelta(days=1)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return day


def _unit(*parts: str) -> float:
    # Not hash(): it is salted per process, and the data must be the same everywhere.
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def daily_bar(symbol: str, day: date) -> dict[str, float | int | str]:
    """The OHLCV bar of *symbol* on *day*, as the vendor's JSON has it."""
    base = 15 + 485 * _unit(symbol, "base")
    phase = 2 * math.pi * _unit(symbol, "phase")
    t = day.toordinal()
    trend = 1 + 0.15 * math.sin(t / 45 + phase) + 0.04 * math.sin(t / 7.3 + 2 * phase)
    key = day.isoformat()
    close = round(base * trend * (1 + 0.03 * (_unit(symbol, key, "close") - 0.5)), 2)
    open_ = round(close * (1 + 0.02 * (_unit(symbol, key, "open") - 0.5)), 2)
    high = round(max(open_, close) * (1 + 0.01 * _unit(symbol, key, "high")), 2)
    low = round(min(open_, close) * (1 - 0.01 * _unit(symbol, key, "low")), 2)
    volume = int(2e5 * (1 + 60 * _unit(symbol, "volume")) * (0.6 + 0.8 * _unit(symbol, key, "v")))
    return {"date": key, "open": open_, "high": high, "low": low, "close": close, "volume": volume}


def daily_bars(symbol: str, start: date, end: date) -> list[dict[str, float | int | str]]:
    """The bars of *symbol* for every weekday from *start* to *end*, both included."""
    days = (start + timedelta(days=offset) for offset in range((end - start).days + 1))
    return [daily_bar(symbol, day) for day in days if day.weekday() < 5]
