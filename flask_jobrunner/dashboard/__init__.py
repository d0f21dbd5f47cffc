"""The jobs dashboard: web pages to watch, submit and cancel jobs (``JOBRUNNER_DASHBOARD``)."""

from __future__ import annotations

from .views import create_blueprint

__all__ = ["create_blueprint"]
