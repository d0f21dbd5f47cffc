"""What the data-maintenance jobs keep up to date: stocks, ETFs, holdings, daily bars."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from sqlalchemy import BigInteger, Double, ForeignKey, String, func, select
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .extensions import db

# Double, not Float: MySQL's FLOAT is single precision, too coarse for prices and small weights.
Real = Annotated[float, mapped_column(Double)]


class Stock(db.Model):  # type: ignore[name-defined,misc]
    """A listed stock TickStock tracks."""

    __tablename__ = "stocks"

    symbol: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    sector: Mapped[str] = mapped_column(String(64))
    #: The last day a holdings file listed it, or it was added by hand:
    #: a stock no ETF holds any more goes stale from then on.
    last_seen: Mapped[date]

    def __repr__(self) -> str:
        return f"<Stock {self.symbol}>"


class Etf(db.Model):  # type: ignore[name-defined,misc]
    """An exchange-traded fund and its current holdings."""

    __tablename__ = "etfs"

    symbol: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    #: The date of the holdings file the holdings come from.
    as_of: Mapped[date]
    holdings: Mapped[list[EtfHolding]] = relationship(
        back_populates="fund",
        cascade="all, delete-orphan",
        order_by="EtfHolding.weight.desc()",
    )

    def __repr__(self) -> str:
        return f"<Etf {self.symbol} as of {self.as_of}>"


class EtfHolding(db.Model):  # type: ignore[name-defined,misc]
    """One stock an ETF holds, with its weight in the fund (0 to 1)."""

    __tablename__ = "etf_holdings"

    etf: Mapped[str] = mapped_column(ForeignKey("etfs.symbol"), primary_key=True)
    symbol: Mapped[str] = mapped_column(ForeignKey("stocks.symbol"), primary_key=True)
    weight: Mapped[Real]
    as_of: Mapped[date]
    fund: Mapped[Etf] = relationship(back_populates="holdings")

    def __repr__(self) -> str:
        return f"<EtfHolding {self.etf} {self.symbol} {self.weight:.4%}>"


class DailyBar(db.Model):  # type: ignore[name-defined,misc]
    """A stock's open, high, low, close and volume on one trading day."""

    __tablename__ = "daily_bars"

    symbol: Mapped[str] = mapped_column(ForeignKey("stocks.symbol"), primary_key=True)
    day: Mapped[date] = mapped_column(primary_key=True)
    open: Mapped[Real]
    high: Mapped[Real]
    low: Mapped[Real]
    close: Mapped[Real]
    volume: Mapped[int] = mapped_column(BigInteger)

    def __repr__(self) -> str:
        return f"<DailyBar {self.symbol} {self.day} close={self.close}>"


def table_counts() -> dict[str, int]:
    """How many rows each of TickStock's tables holds."""
    models = {"stocks": Stock, "etfs": Etf, "etf_holdings": EtfHolding, "daily_bars": DailyBar}
    return {
        name: db.session.scalar(select(func.count()).select_from(model)) or 0
        for name, model in models.items()
    }
