"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a real server.

The app runs under werkzeug's threaded WSGI server on a loopback port, with
the in-process worker. Its task waits on the test before each step, so the
test decides when progress moves and watches the page follow it. Skipped
when Playwright or ``/usr/bin/chromium`` is missing, failed instead when
``JOBRUNNER_TEST_REQUIRE_SERVICES=1``. No browser is ever downloaded.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from conftest import REQUIRE_SERVICES, free_port
from flask_jobrunner import JobRunner, current_job

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = pathlib.Path(__file__).resolve().parent / "artifacts"
#: How long the page may take to show a change (ms); generous for a loaded CI machine.
SHOWN = 15_000
PAGES = 4


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed (pip install -e '.[dev]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)"
    return None


@pytest.fixture
def browser_page() -> Iterator[Any]:
    """A fresh page in headless Chromium; console errors are kept in ``page.console_errors``."""
    missing = _missing()
    if missing is not None:
        if REQUIRE_SERVICES:
            pytest.fail(f"{missing} (JOBRUNNER_TEST_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 720})
            errors: list[str] = []
            page.on(
                "console",
                lambda message: errors.append(message.text) if message.type == "error" else None,
            )
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.console_errors = errors
            yield page
        finally:
            browser.close()


class Steps:
    """Lets the test release a task's steps one at a time, and ends it when the test ends."""

    def __init__(self) -> None:
        self.released = threading.Semaphore(0)
        self.ended = threading.Event()

    def next(self) -> None:
        """Let one waiting step of one job go on."""
        self.released.release()

    def wait(self) -> None:
        """In the task: wait for the test, checking for a cancel meanwhile."""
        while not self.released.acquire(timeout=0.05):
            current_job.check()  # raises once the job is cancelled
            if self.ended.is_set():
                raise RuntimeError("The test ended before it released this step.")


@pytest.fixture
def steps() -> Iterator[Steps]:
    controller = Steps()
    yield controller
    controller.ended.set()


@pytest.fixture(params=["sqlite", "memory"])
def live_server(
    request: pytest.FixtureRequest,
    jobs: JobRunner,
    steps: Steps,
    backend_url_for: Callable[[str], str],
    backend_options: dict[str, Any],
) -> Iterator[str]:
    """The base URL of a threaded WSGI server of an app with the dashboard and a worker."""

    @jobs.task(http=True)
    def crawl(pages: int = PAGES, label: str = "") -> dict[str, Any]:
        """Crawl a few pages, one step at a time."""
        for page in range(1, pages + 1):
            steps.wait()
            current_job.progress(done=page, total=pages, message=f"Crawled page {page} of {pages}")
        return {"pages": pages, "label": label}

    app = Flask("jobrunner_browser_test")
    app.secret_key = "browser-test-secret"
    app.config.update(
        JOBRUNNER_BACKEND=backend_url_for(str(request.param)),
        JOBRUNNER_DASHBOARD=True,
        JOBRUNNER_API_OPEN=True,
        JOBRUNNER_PROGRESS_INTERVAL=0,
        JOBRUNNER_MAX_WORKERS=2,
        JOBRUNNER_SHUTDOWN_TIMEOUT=5,
        JOBRUNNER_RETRY_AFTER_INITIAL=1,
        JOBRUNNER_RESULT_TTL=backend_options["result_ttl"],
    )
    jobs.init_app(app)
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="browser-test-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        steps.ended.set()
        server.shutdown()
        thread.join(10)
        server.server_close()
        jobs.shutdown(app, timeout=10)
        jobs.get_state(app).backend.close()


def submit_from_the_form(page: Any, base: str, label: str) -> str:
    """Submit ``crawl`` from its dashboard form; returns the new job's id."""
    page.goto(f"{base}/jobs/")
    page.get_by_role("link", name="Submit crawl").click()
    page.get_by_label("label").fill(label)
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url(f"{base}/jobs/*-*-*-*-*")
    assert "Job submitted." in page.content()
    job_id: str = page.url.rsplit("/", 1)[1]
    return job_id


def test_a_job_submitted_from_the_form_shows_live_progress_to_100_percent(
    browser_page: Any, live_server: str, steps: Steps
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    job_id = submit_from_the_form(page, live_server, "nightly <run>")

    page.goto(f"{live_server}/jobs/")
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    expect(row).to_be_visible()
    # Set after loading: still there at the end only if the page was never reloaded.
    page.evaluate("window.stillTheSamePage = true")
    seen = []
    for step in range(1, PAGES + 1):
        steps.next()
        percent = 100 * step // PAGES
        expect(row.locator('[data-field="percentage"]')).to_have_text(f"{percent} %", timeout=SHOWN)
        expect(row.locator('[data-field="message"]')).to_have_text(
            f"Crawled page {step} of {PAGES}", timeout=SHOWN
        )
        seen.append(row.locator("progress").evaluate("bar => bar.value"))
        if step == 2:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(
                path=str(ARTIFACTS / "dashboard-progress.png"),
                full_page=True,
                animations="disabled",
            )
    expect(row.locator('[data-field="status"]')).to_have_text("completed", timeout=SHOWN)

    assert seen == [25, 50, 75, 100]
    assert page.evaluate("window.stillTheSamePage") is True
    row.get_by_role("link", name="crawl", exact=True).click()
    page.wait_for_url(f"{live_server}/jobs/{job_id}")
    expect(page.locator("h1 .status")).to_have_text("completed")
    expect(page.locator("pre.json")).to_contain_text('"label": "nightly <run>"')
    expect(page.locator("progress")).to_have_attribute("value", "100.0")
    assert page.get_by_role("button", name="Cancel job").count() == 0
    assert page.console_errors == []


def test_a_running_job_cancelled_from_its_page_becomes_cancelled(
    browser_page: Any, live_server: str, steps: Steps
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    job_id = submit_from_the_form(page, live_server, "to cancel")
    steps.next()
    expect(page.locator('[data-field="percentage"]')).to_have_text("25 %", timeout=SHOWN)
    expect(page.locator("h1 .status")).to_have_text("in progress")

    page.get_by_role("button", name="Cancel job").click()

    page.wait_for_url(f"{live_server}/jobs/{job_id}")
    expect(page.locator("h1 .status")).to_have_text("cancelled", timeout=SHOWN)
    expect(page.locator("dl.facts")).to_contain_text("Cancelled")
    assert page.get_by_role("button", name="Cancel job").count() == 0
    page.goto(f"{live_server}/jobs/?status=cancelled")
    expect(page.locator(f'tr[data-job-id="{job_id}"] [data-field="status"]')).to_have_text(
        "cancelled"
    )
    assert page.console_errors == []


def test_a_page_of_many_unfinished_jobs_stays_usable_and_follows_them_all(
    browser_page: Any, live_server: str, steps: Steps
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    for _ in range(6):
        response = page.request.post(f"{live_server}/api/jobs/crawl", data={"pages": 1})
        assert response.status == 202
    page.goto(f"{live_server}/jobs/")
    rows = page.locator("tr.job")
    expect(rows).to_have_count(6)

    # A browser opens about six connections to a site: streams must leave some for clicks.
    first = rows.first.get_attribute("data-job-id")
    rows.first.get_by_role("link", name="crawl", exact=True).click(timeout=10_000)
    page.wait_for_url(f"{live_server}/jobs/{first}", timeout=5_000)
    page.goto(f"{live_server}/jobs/")
    for _ in range(6):
        steps.next()

    for index in range(6):
        expect(rows.nth(index).locator('[data-field="status"]')).to_have_text(
            "completed", timeout=SHOWN
        )
        expect(rows.nth(index).locator('[data-field="percentage"]')).to_have_text("100 %")
    assert page.console_errors == []
