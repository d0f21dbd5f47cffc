"""The TickStock example app: a job submitted over HTTP runs to the end with progress."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from conftest import wait_until
from examples.tickstock import create_app, jobs


@pytest.fixture
def tickstock() -> Iterator[Flask]:
    app = create_app(
        {
            "TESTING": True,
            "TICKSTOCK_PROVIDER_LATENCY": 0.005,
            "JOBRUNNER_PROGRESS_INTERVAL": 0,
        }
    )
    yield app
    jobs.shutdown(app, timeout=10)


def test_load_etf_holdings_reports_progress_and_completes(tickstock: Flask) -> None:
    client = tickstock.test_client()
    response = client.post("/api/data-maintenance/load-etf-holdings", json={"etfs": ["SPY", "DIA"]})
    assert response.status_code == 202
    location = response.headers["Location"]
    seen: list[float] = []

    def finished() -> dict[str, object] | None:
        document = client.get(location).get_json()
        if "percentage" in document:
            seen.append(document["percentage"])
        return document if document["status"] == "completed" else None

    document = wait_until(finished, timeout=20)
    assert document["result"] == {
        "etfs_processed": 2,
        "holdings_loaded": {"SPY": 10, "DIA": 10},
    }
    assert document["items_processed"] == document["total_items"] == 20
    assert document["message"] == "Processed 20 of 20 symbols"
    assert seen == sorted(seen)


def test_unknown_etf_fails_as_validation_error(tickstock: Flask) -> None:
    client: FlaskClient = tickstock.test_client()
    response = client.post("/api/data-maintenance/load-etf-holdings", json={"etfs": ["XYZ"]})

    def failed() -> dict[str, object] | None:
        document = client.get(response.headers["Location"]).get_json()
        return document if document["status"] == "failed" else None

    document = wait_until(failed)
    assert document["error_type"] == "validation"
    assert "XYZ" in document["error"]


def test_api_token_protects_the_api_when_configured(tickstock: Flask) -> None:
    tickstock.config["TICKSTOCK_API_TOKEN"] = "s3cret"
    client = tickstock.test_client()
    refused = client.post("/api/jobs/load-etf-holdings", json={"etfs": ["DIA"]})
    assert refused.status_code == 403
    accepted = client.post(
        "/api/jobs/load-etf-holdings",
        json={"etfs": ["DIA"]},
        headers={"Authorization": "Bearer s3cret"},
    )
    assert accepted.status_code == 202
    with tickstock.app_context():
        assert jobs.get(accepted.get_json()["job_id"]).wait(20).status.value == "completed"


@pytest.mark.parametrize(
    ("body", "status"),
    [('{"etfs": "SPY"}', 400), ('{"funds": ["SPY"]}', 400), ("[1, 2]", 400), ("{", 400)],
    ids=["wrong-type", "unknown-argument", "not-an-object", "malformed"],
)
def test_bad_input_to_the_submit_route_is_a_client_error(
    tickstock: Flask, body: str, status: int
) -> None:
    client = tickstock.test_client()

    response = client.post(
        "/api/data-maintenance/load-etf-holdings", data=body, content_type="application/json"
    )

    assert response.status_code == status
    with tickstock.app_context():
        assert len(jobs.list()) == 0
