"""The extension objects, created once and bound to each app in ``create_app``."""

from __future__ import annotations

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

from flask_jobrunner import JobRunner


class Base(DeclarativeBase):
    """The declarative base of TickStock's models."""


#: TickStock's database: stocks, ETFs, their holdings and daily bars.
db = SQLAlchemy(model_class=Base)

#: The background jobs that maintain that data.
jobs = JobRunner()
