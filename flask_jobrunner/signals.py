"""Signals sent as jobs move, for extensions and monitoring.

Each is sent with the Flask app as sender and the :class:`~flask_jobrunner.Job`
as ``job``. Receivers run in the thread that sends: keep them quick.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: Sent after a job was stored, in the submitting thread.
job_submitted = _signals.signal("job-submitted")
#: Sent in the worker thread, inside the app context, before the task runs.
job_started = _signals.signal("job-started")
#: Sent in the worker, inside the app context, after a progress report was stored.
job_progress = _signals.signal("job-progress")
#: Sent in the worker after a job's final state (or its retry) was stored.
job_finished = _signals.signal("job-finished")
