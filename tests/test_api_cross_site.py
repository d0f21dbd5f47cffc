"""The API refuses the POSTs a page of another site can make a browser send."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from conftest import assert_error
from flask_jobrunner import JobRunner

PREFIX = "/api/jobs"
SITE = "http://localhost"


@pytest.fixture
def client(jobs: JobRunner) -> Iterator[FlaskClient]:
    @jobs.task(http=True)
    def report(year: int = 2024) -> int:
        return year

    app = Flask("jobrunner_cross_site_test")
    app.testing = True
    app.config["JOBRUNNER_RUN_WORKERS"] = False
    jobs.init_app(app)
    yield app.test_client()
    jobs.shutdown(app, timeout=10)


def pending_job(client: FlaskClient) -> str:
    response = client.post(f"{PREFIX}/report", json={})
    assert response.status_code == 202
    job_id: str = response.get_json()["job_id"]
    return job_id


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain"],
)
@pytest.mark.parametrize("path", ["/report", "", "/{job_id}/cancel"])
def test_a_form_body_is_refused_even_when_empty(
    client: FlaskClient, content_type: str, path: str
) -> None:
    job_id = pending_job(client)

    response = client.post(
        PREFIX + path.format(job_id=job_id), data=b"", headers={"Content-Type": content_type}
    )

    body = assert_error(response, 415)
    assert "JSON" in body["error"]
    assert client.get(f"{PREFIX}/{job_id}").get_json()["status"] == "pending"
    assert len(client.get(PREFIX).get_json()["jobs"]) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://evil.example"},
        {"Origin": "https://localhost"},  # another scheme is another origin
    ],
)
def test_a_cross_site_post_without_json_is_refused(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    job_id = pending_job(client)

    cancel = client.post(f"{PREFIX}/{job_id}/cancel", headers=headers)
    submit = client.post(f"{PREFIX}/report", headers=headers)

    assert "another site" in assert_error(cancel, 403)["error"]
    assert_error(submit, 403)
    assert client.get(f"{PREFIX}/{job_id}").get_json()["status"] == "pending"
    assert len(client.get(PREFIX).get_json()["jobs"]) == 1


@pytest.mark.parametrize(
    "headers",
    [{}, {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}, {"Origin": SITE}],
)
def test_a_post_without_json_from_this_site_or_no_browser_is_served(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    job_id = pending_job(client)

    assert client.post(f"{PREFIX}/report", headers=headers).status_code == 202
    assert client.post(f"{PREFIX}/{job_id}/cancel", headers=headers).status_code == 202


def test_a_json_post_from_another_origin_is_left_to_the_apps_cors_policy(
    client: FlaskClient,
) -> None:
    # A browser sends a cross-origin JSON POST only after the app's CORS
    # preflight allowed it, so refusing it here would break a deliberate setup.
    response = client.post(
        f"{PREFIX}/report",
        json={"year": 2025},
        headers={"Origin": "http://app.example", "Sec-Fetch-Site": "cross-site"},
    )

    assert response.status_code == 202
