"""GET /metrics in one process (the Flask test client): what each request adds to the counters."""

from __future__ import annotations

from typing import Any

import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from tests.support import CREDIT_ROW, upload

PREDICT_ROUTE = "/api/models/<name>/predict"


def scrape(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(r.get_data(as_text=True))
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_predictions_uploads_and_routes_are_counted(client: Any, credit_pipeline: Any) -> None:
    before = scrape(client)
    created = upload(client, "credit", credit_pipeline)
    assert created.status_code == 201
    rows = [CREDIT_ROW] * 3
    for _ in range(4):
        r = client.post("/api/models/credit/predict", json={"data": rows})
        assert r.status_code == 200
    bad = client.post("/api/models/credit/predict", json={"data": {**CREDIT_ROW, "age": "old"}})
    assert bad.status_code == 422
    assert client.get("/no/such/page").status_code == 404
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("maas_http_requests_total", method="POST", route=PREDICT_ROUTE, status="200") == 4
    assert delta("maas_http_requests_total", method="POST", route=PREDICT_ROUTE, status="422") == 1
    assert delta("maas_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert delta("maas_http_request_duration_seconds_count", route=PREDICT_ROUTE) == 5
    # The upload's trial row is not a prediction of version 1; the four requests are.
    assert delta("maas_prediction_rows_total", model="credit", version="1") == 12
    assert delta("maas_prediction_duration_seconds_count", model="credit", version="1") == 4
    assert delta("maas_uploads_total", outcome="created") == 1
    assert delta("maas_upload_bytes_total") == created.json["size_bytes"]
    # The upload's runner serves the version at once: every request for it is a cache hit (the
    # refused one too: the version's runner was found before its input was checked).
    assert delta("maas_model_cache_hits_total") == 5 and delta("maas_model_cache_misses_total") == 0
    refused = upload(client, "credit", b"not a pickle")
    assert refused.status_code == 422
    assert (
        value(scrape(client), "maas_uploads_total", outcome="refused")
        - value(before, "maas_uploads_total", outcome="refused")
        == 1
    )


def test_loads_misses_and_failures_are_counted(make_app: Any, credit_pipeline: Any) -> None:
    from tests.estimators.fixture_models import FussyRegressor

    first = make_app(trusted_modules=("tests",)).test_client()
    assert upload(first, "credit", credit_pipeline).status_code == 201
    fussy = FussyRegressor().fit(pd.DataFrame({"a": [1.0], "b": [2.0]}))
    assert upload(first, "fussy", fussy).status_code == 201
    # Another worker (app) on the same registry has loaded nothing yet.
    other = make_app(trusted_modules=("tests",)).test_client()
    before = scrape(other)
    assert other.post("/api/models/credit/predict", json={"data": CREDIT_ROW}).status_code == 200
    assert other.post("/api/models/credit/predict", json={"data": CREDIT_ROW}).status_code == 200
    failed = other.post("/api/models/fussy/predict", json={"data": {"a": 99, "b": 2}})
    assert failed.status_code == 422
    after = scrape(other)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("maas_model_loads_total", outcome="ok") == 2
    assert delta("maas_model_load_duration_seconds_count") == 2
    assert delta("maas_model_cache_misses_total") == 2 and delta("maas_model_cache_hits_total") == 1
    assert delta("maas_prediction_failures_total", model="fussy", version="1", kind="model_error") == 1
    assert value(after, "maas_models_in_memory") >= 2


def test_metrics_are_documented_and_open_without_the_api_token(make_app: Any) -> None:
    client = make_app(api_token="reader-token").test_client()
    assert client.get("/api/models").status_code == 401
    assert client.get("/metrics").status_code == 200
    spec = client.get("/openapi.json").json
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
