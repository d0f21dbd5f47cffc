"""Run the TickStock example: ``python -m examples.tickstock``."""

from __future__ import annotations

from . import create_app

HOW_TO = """
TickStock data-maintenance API on http://127.0.0.1:{port}

Submit a job, then poll the URL in its Location header:

  curl -si -X POST http://127.0.0.1:{port}/api/data-maintenance/load-etf-holdings \\
       -H 'Content-Type: application/json' -d '{{"etfs": ["SPY", "QQQ"]}}'
  curl -s http://127.0.0.1:{port}/api/jobs/<job_id>

Or run one in a terminal with a live progress bar (in the flask command's
own process: the default memory backend is not shared between processes):

  .venv/bin/flask --app examples.tickstock jobs submit load-etf-holdings --watch
"""

if __name__ == "__main__":
    port = 5000
    print(HOW_TO.format(port=port), flush=True)
    create_app().run(host="127.0.0.1", port=port)
