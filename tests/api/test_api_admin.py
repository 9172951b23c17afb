"""Admin endpoints: auth, uploads (formats, failures leave nothing), aliases, deletes, races."""

from __future__ import annotations

import io
import os
import pickle
import resource
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from sklearn.preprocessing import StandardScaler
from sqlalchemy import event

from tests.support import ADMIN, ADMIN_TOKEN, CREDIT_ROW, joblib_bytes, model_count, store_files, upload

# Writes go through the database's constraints and transactions: both databases.
pytestmark = pytest.mark.postgresql

# -- auth ------------------------------------------------------------------------------------
ADMIN_CALLS = [
    ("post", "/api/admin/models/m/versions"),
    ("patch", "/api/admin/models/m"),
    ("put", "/api/admin/models/m/aliases/prod"),
    ("delete", "/api/admin/models/m/aliases/prod"),
    ("delete", "/api/admin/models/m/versions/1"),
    ("delete", "/api/admin/models/m?force=true"),
    ("patch", "/api/admin/models/m/versions/1"),
]


@pytest.mark.parametrize("method, path", ADMIN_CALLS)
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong",
        "Bearer ",
        "Bearer",
        "Basic dGVzdDp0ZXN0",
        f"Token {ADMIN_TOKEN}",
        "Bearer t\u00e9st",
        f"Bearer {ADMIN_TOKEN}x",
    ],
)
def test_admin_needs_the_token(client: Any, method: str, path: str, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    r = getattr(client, method)(path, json={}, headers=headers)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.json["code"] == 401 and r.json["message"]


@pytest.mark.parametrize("method, path", ADMIN_CALLS)
def test_admin_disabled_without_token(make_app: Any, method: str, path: str) -> None:
    client = make_app(admin_token=None).test_client()
    r = getattr(client, method)(path, json={}, headers=ADMIN)
    assert r.status_code == 403 and "MAAS_ADMIN_TOKEN" in r.json["message"]


def test_api_token_guards_reads_and_predictions(make_app: Any, credit_pipeline: Any) -> None:
    client = make_app(api_token="reader-token").test_client()
    assert upload(client, "credit", credit_pipeline).status_code == 201  # the admin token works
    reader = {"Authorization": "Bearer reader-token"}
    for path in ["/api/models", "/api/models/credit", "/api/models/credit/versions/1", "/api"]:
        denied = client.get(path)
        assert denied.status_code == 401 and denied.headers["WWW-Authenticate"].startswith("Bearer")
        assert client.get(path, headers=reader).status_code == 200
        assert client.get(path, headers=ADMIN).status_code == 200
    body = {"model": "credit", "data": CREDIT_ROW}
    assert client.post("/api/predict", json=body).status_code == 401
    assert client.post("/api/predict", json=body, headers=reader).status_code == 200
    assert client.get("/health/ready").status_code == 200
    # the reader token is not an admin token
    assert upload(client, "credit", credit_pipeline, headers=reader).status_code == 401


# -- uploads ---------------------------------------------------------------------------------
def test_upload_answers_201_with_location(client: Any, credit_pipeline: Any) -> None:
    r = upload(
        client,
        "credit",
        credit_pipeline,
        {"description": "first", "tags": {"team": "risk"}, "aliases": ["production", "champion"]},
    )
    assert r.status_code == 201
    assert r.headers["Location"].endswith("/api/models/credit/versions/1")
    assert r.json["version"] == 1 and r.json["description"] == "first"
    assert r.json["aliases"] == ["champion", "production"]
    assert client.get(r.headers["Location"]).json == r.json


@pytest.mark.parametrize(
    "kind, fmt",
    [
        ("joblib", "joblib"),
        ("joblib-zlib", "joblib"),
        ("joblib-gzip", "joblib"),
        ("joblib-lzma", "joblib"),
        ("pickle-2", "pickle"),
        ("pickle-5", "pickle"),
        ("skops", "skops"),
    ],
)
def test_upload_formats(client: Any, credit_pipeline: Any, kind: str, fmt: str) -> None:
    if kind == "joblib":
        payload = joblib_bytes(credit_pipeline)
    elif kind.startswith("joblib-"):
        payload = joblib_bytes(credit_pipeline, compress=(kind.split("-")[1], 3))
    elif kind.startswith("pickle-"):
        payload = pickle.dumps(credit_pipeline, protocol=int(kind.split("-")[1]))
    else:
        import skops.io

        payload = skops.io.dumps(credit_pipeline)
    r = upload(client, "credit", payload, {"example": CREDIT_ROW})
    assert r.status_code == 201, r.json
    assert r.json["format"] == fmt
    p = client.post("/api/predict", json={"model": "credit", "data": CREDIT_ROW})
    assert p.status_code == 200
    assert p.json["predictions"] == credit_pipeline.predict(__import__("pandas").DataFrame([CREDIT_ROW])).tolist()


def test_same_bytes_twice_share_one_file(app: Any, client: Any, credit_pipeline: Any) -> None:
    payload = joblib_bytes(credit_pipeline)
    assert upload(client, "a", payload).status_code == 201
    assert upload(client, "b", payload).status_code == 201
    assert len(store_files(app)) == 2  # the artifact, and the ONNX graph compiled from it (also one)
    # a failed upload of the same bytes must not remove the files the others use
    assert upload(client, "c", payload, {"example": {"nope": 1}}).status_code == 422
    assert len(store_files(app)) == 2
    assert client.post("/api/predict", json={"model": "a", "data": CREDIT_ROW}).status_code == 200


def _refused(client: Any, app: Any, response: Any, fragment: str) -> None:
    assert response.status_code == 422, response.json
    assert response.json["code"] == 422 and fragment in response.json["message"]
    assert model_count(client) == 0
    assert store_files(app) == []
    tmp = Path(app.extensions["maas"].settings.store_dir) / "tmp"
    assert not any(tmp.iterdir())


def test_refuses_bytes_that_are_not_a_model(app: Any, client: Any) -> None:
    _refused(client, app, upload(client, "m", b"this is not a pickle at all"), "")


def test_refuses_object_without_predict(app: Any, client: Any) -> None:
    scaler = StandardScaler().fit([[1.0], [2.0]])
    _refused(client, app, upload(client, "m", scaler), "no predict method")


def test_refuses_model_without_feature_names_or_schema(app: Any, client: Any, numpy_model: Any) -> None:
    _refused(client, app, upload(client, "m", numpy_model), "feature_names_in_")


def test_refuses_failing_example(app: Any, client: Any, credit_pipeline: Any) -> None:
    _refused(client, app, upload(client, "m", credit_pipeline, {"example": {"age": 1}}), "example")


def test_an_example_that_does_not_fit_lists_each_offending_feature(app: Any, client: Any, credit_pipeline: Any) -> None:
    r = upload(client, "m", credit_pipeline, {"example": {"age": "35", "income": 1.0, "gender": "robot", "zip": 1}})
    _refused(client, app, r, "The example does not fit the feature schema")
    assert r.json["errors"] == {
        "form": {
            "metadata": {
                "example": {
                    "zip": ["Unknown feature."],
                    "age": ["Must be a number, not a string."],
                    "gender": ["Must be one of: 'female', 'male'."],
                    "region": ["Missing feature."],
                }
            }
        }
    }
    assert "version 0" not in r.json["message"]


def test_without_an_example_a_row_built_from_the_schema_must_predict(make_app: Any) -> None:
    from tests.estimators.fixture_models import FussyRegressor

    app = make_app(trusted_modules=("tests",))
    client = app.test_client()
    fussy = FussyRegressor().fit(__import__("pandas").DataFrame({"a": [1.0], "b": [2.0]}))
    bounded = [{"name": "a", "minimum": 60, "maximum": 80}, {"name": "b", "type": "integer", "minimum": 50}]
    r = upload(client, "fussy", fussy, {"features": bounded})
    _refused(client, app, r, "A row built from the feature schema")
    assert r.json["message"] == (
        'A row built from the feature schema ({"a": 70.0, "b": 50}) failed: Model The uploaded model \'fussy\' '
        "failed on this input (ValueError: a row sums to more than 100)."
    )
    assert "version 0" not in r.json["message"]
    # the same model with bounds it can take is recorded
    assert (
        upload(client, "fussy", fussy, {"features": [{"name": "a", "maximum": 40}, {"name": "b"}]}).status_code == 201
    )


def test_smoke_rows() -> None:
    from model_store.features import FeatureSpec, FeatureType
    from serving.operations.upload import smoke_row

    features = [
        FeatureSpec("n", FeatureType.NUMBER, minimum=1, maximum=4),
        FeatureSpec("low", FeatureType.NUMBER, minimum=-3),
        FeatureSpec("free", FeatureType.NUMBER),
        FeatureSpec("i", FeatureType.INTEGER, minimum=3, maximum=4),
        FeatureSpec("s", FeatureType.STRING, allowed=("b", "a")),
        FeatureSpec("t", FeatureType.STRING),
        FeatureSpec("flag", FeatureType.BOOLEAN),
        FeatureSpec("size", FeatureType.INTEGER, allowed=(7, 9)),
    ]
    assert smoke_row(features) == {
        "n": 2.5,
        "low": -3.0,
        "free": 0.0,
        "i": 3,
        "s": "b",
        "t": "",
        "flag": False,
        "size": 7,
    }


def test_refuses_declared_schema_that_does_not_fit(app: Any, client: Any, credit_pipeline: Any) -> None:
    features = [{"name": "age"}, {"name": "salary"}]
    _refused(client, app, upload(client, "m", credit_pipeline, {"features": features}), "do not match")


def test_refuses_unsafe_pickle_and_never_runs_it(app: Any, client: Any, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> Any:
            return (open, (str(marker), "w"))

    r = upload(client, "m", pickle.dumps(Exploit()))
    _refused(client, app, r, "open")  # pickled as io.open on CPython 3.11
    assert r.json["errors"]["artifact"] == [f"{open.__module__}.open"]
    assert not marker.exists()

    class SystemExploit:
        def __reduce__(self) -> Any:
            return (os.system, (f"touch {marker}",))

    r = upload(client, "m", pickle.dumps(SystemExploit()))
    _refused(client, app, r, "system")
    assert not marker.exists()


@pytest.mark.parametrize(
    "metadata, fragment",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"tags": {"a": 1}}', "invalid"),
        ('{"features": [{"name": "age", "type": "date"}]}', "invalid"),
        ('{"features": [{"name": "age", "type": "string", "minimum": 1}]}', "invalid"),
        ('{"features": [{"name": "age", "allowed": ["x"]}]}', "invalid"),
        ('{"colour": "red"}', "invalid"),
        ('{"description": NaN}', "not valid JSON"),
    ],
)
def test_refuses_bad_metadata(app: Any, client: Any, credit_pipeline: Any, metadata: str, fragment: str) -> None:
    r = client.post(
        "/api/admin/models/m/versions",
        data={"file": (io.BytesIO(joblib_bytes(credit_pipeline)), "m.joblib"), "metadata": metadata},
        headers=ADMIN,
        content_type="multipart/form-data",
    )
    _refused(client, app, r, fragment)


# Names as they appear in the URL path (percent-encoded where a client would encode them).
@pytest.mark.parametrize("name", ["Credit", "-credit", "c" * 65, "cr%C3%A9dit", "credit%0A", "cr%20edit", "cr%00edit"])
def test_refuses_bad_model_names(app: Any, client: Any, credit_pipeline: Any, name: str) -> None:
    r = upload(client, name, credit_pipeline)
    _refused(client, app, r, "Invalid model name")


def test_refuses_bad_and_reserved_aliases(app: Any, client: Any, credit_pipeline: Any) -> None:
    r = upload(client, "m", credit_pipeline, {"aliases": ["Prod"]})
    _refused(client, app, r, "Invalid alias")
    r = upload(client, "m", credit_pipeline, {"aliases": ["latest"]})
    assert r.status_code == 409 and "reserved" in r.json["message"]
    assert model_count(client) == 0 and store_files(app) == []


def test_upload_needs_multipart(client: Any) -> None:
    r = client.post("/api/admin/models/m/versions", json={"file": "x"}, headers=ADMIN)
    assert r.status_code == 415 and r.json["message"]


def test_upload_needs_a_file(client: Any) -> None:
    r = client.post(
        "/api/admin/models/m/versions", data={"metadata": "{}"}, headers=ADMIN, content_type="multipart/form-data"
    )
    assert r.status_code == 422 and "file" in r.json["errors"]["multipart"]


def test_upload_limit_is_413_and_leaves_nothing(make_app: Any, credit_pipeline: Any) -> None:
    app = make_app(max_upload_bytes=1000)
    client = app.test_client()
    r = upload(client, "m", credit_pipeline)
    assert r.status_code == 413 and r.json["message"]
    assert model_count(client) == 0 and store_files(app) == []


# -- the model store's disk refusing -----------------------------------------------------------
def store_dir(app: Any) -> Path:
    return Path(app.extensions["maas"].settings.store_dir)


def _store_refused(client: Any, app: Any, response: Any, reason: str) -> None:
    """A 503 in the contract's shape naming the file system's reason; nothing recorded or left."""
    assert response.status_code == 503, response.json
    assert set(response.json) == {"code", "status", "message"}, response.json
    assert response.json["code"] == 503 and response.json["status"] == "Service Unavailable"
    assert response.json["message"] == f"The model store cannot take the artifact ({reason}).", response.json
    assert model_count(client) == 0 and store_files(app) == []
    tmp = store_dir(app) / "tmp"
    assert not tmp.is_dir() or not any(tmp.iterdir())


def test_upload_after_the_store_tmp_was_removed(app: Any, client: Any, credit_pipeline: Any) -> None:
    shutil.rmtree(store_dir(app) / "tmp")
    r = upload(client, "credit", credit_pipeline)
    assert r.status_code == 201, r.json
    assert client.post("/api/predict", json={"model": "credit", "data": CREDIT_ROW}).status_code == 200


def test_upload_into_a_store_whose_directories_are_broken_is_503(app: Any, client: Any, credit_pipeline: Any) -> None:
    """A file where tmp/ should be fails the spool werkzeug writes the upload into; a file
    where objects/ should be fails put(). Both are the store's state: 503, never a 500."""
    for where, reason in (("tmp", "Not a directory"), ("objects", "File exists")):
        path = store_dir(app) / where
        shutil.rmtree(path)
        path.write_text("not a directory")
        _store_refused(client, app, upload(client, "credit", credit_pipeline), reason)
        path.unlink()
    assert upload(client, "credit", credit_pipeline).status_code == 201


def test_upload_the_file_system_refuses_to_spool_is_503(app: Any, client: Any) -> None:
    """The kernel refuses werkzeug's writes into the spool (EFBIG past RLIMIT_FSIZE, as ENOSPC
    for a full disk): a 503 naming it. The test client keeps a body this small in memory."""
    payload = os.urandom(256 * 1024)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        r = upload(client, "big", payload)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    _store_refused(client, app, r, "File too large")


def test_a_refused_upload_looks_up_its_own_sha256_only(app: Any, client: Any, credit_pipeline: Any) -> None:
    """The cleanup after a refused upload (every hostile pickle) checks whether a version uses
    its sha256, under the lock that holds off version writers: one indexed lookup, not a read
    of every version's sha256."""
    for name in ("a", "b", "c"):
        assert upload(client, name, credit_pipeline, {"description": name}).status_code == 201
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(" ".join(statement.split()))

    engine = app.extensions["maas"].db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        r = upload(client, "m", pickle.dumps(StandardScaler))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert r.status_code == 422, r.json
    reads = [s for s in statements if "model_versions" in s and s.startswith("SELECT")]
    assert reads and all("WHERE model_versions.sha256 =" in s for s in reads), statements
    assert not any("DISTINCT" in s for s in statements), statements


def test_filename_is_ignored(app: Any, client: Any, credit_pipeline: Any, tmp_path: Path) -> None:
    r = upload(client, "m", credit_pipeline, filename="../../escape.pkl")
    assert r.status_code == 201
    assert not list(tmp_path.rglob("escape.pkl"))
    assert r.json["sha256"] in [p.name for p in store_files(app)]
    assert len(store_files(app)) == 2  # the artifact, and its ONNX graph, each named by its sha256


# -- aliases and deletes ---------------------------------------------------------------------
@pytest.fixture
def three(client: Any, credit_pipeline: Any) -> Any:
    for _ in range(3):
        assert upload(client, "credit", credit_pipeline).status_code == 201
    return client


def test_alias_create_move_delete(three: Any) -> None:
    r = three.put("/api/admin/models/credit/aliases/production", json={"version": 1}, headers=ADMIN)
    assert r.status_code == 200 and r.json["version"] == 1 and r.json["aliases"] == ["production"]
    assert three.get("/api/models/credit/versions/production").json["version"] == 1
    r = three.put("/api/admin/models/credit/aliases/production", json={"version": "3"}, headers=ADMIN)
    assert r.status_code == 200 and r.json["version"] == 3
    assert three.get("/api/models/credit").json["aliases"] == {"production": 3}
    body = {"model": "credit", "version": "production", "data": CREDIT_ROW}
    assert three.post("/api/predict", json=body).json["version"] == 3
    assert three.delete("/api/admin/models/credit/aliases/production", headers=ADMIN).status_code == 204
    assert three.get("/api/models/credit/versions/production").status_code == 404
    assert three.delete("/api/admin/models/credit/aliases/production", headers=ADMIN).status_code == 404


@pytest.mark.parametrize(
    "alias, body, status",
    [
        ("latest", {"version": 1}, 409),
        ("Prod", {"version": 1}, 422),
        ("1abc", {"version": 1}, 422),
        ("a" * 33, {"version": 1}, 422),
        ("prod", {"version": 9}, 404),
        ("prod", {"version": -1}, 404),
        ("prod", {"version": 2**70}, 404),
        ("prod", {}, 422),
        ("prod", {"version": 1, "extra": True}, 422),
    ],
)
def test_alias_refusals(three: Any, alias: str, body: dict[str, Any], status: int) -> None:
    r = three.put(f"/api/admin/models/credit/aliases/{alias}", json=body, headers=ADMIN)
    assert r.status_code == status and r.json["message"]
    assert three.get("/api/models/credit").json["aliases"] == {}


def test_alias_on_unknown_model_is_404(client: Any) -> None:
    r = client.put("/api/admin/models/ghost/aliases/prod", json={"version": 1}, headers=ADMIN)
    assert r.status_code == 404


def test_delete_version(three: Any) -> None:
    r = three.delete("/api/admin/models/credit/versions/3", headers=ADMIN)
    assert r.status_code == 204
    assert r.data == b""  # a 204 carries no body
    assert three.get("/api/models/credit/versions/3").status_code == 404
    assert three.get("/api/models/credit").json["latest_version"] == 2
    assert three.delete("/api/admin/models/credit/versions/3", headers=ADMIN).status_code == 404
    # numbers are never reused
    assert three.get("/api/models/credit/versions").json[0]["version"] == 2


def test_numbers_never_reused_after_delete(three: Any, credit_pipeline: Any) -> None:
    assert three.delete("/api/admin/models/credit/versions/3", headers=ADMIN).status_code == 204
    assert upload(three, "credit", credit_pipeline).json["version"] == 4


def test_delete_version_under_alias_is_409(three: Any) -> None:
    three.put("/api/admin/models/credit/aliases/production", json={"version": 2}, headers=ADMIN)
    r = three.delete("/api/admin/models/credit/versions/2", headers=ADMIN)
    assert r.status_code == 409 and "production" in r.json["message"]
    assert three.get("/api/models/credit/versions/2").status_code == 200


@pytest.mark.parametrize("version", ["0", "-1", "abc", "latest", "99999999999999999999"])
def test_delete_odd_versions(three: Any, version: str) -> None:
    r = three.delete(f"/api/admin/models/credit/versions/{version}", headers=ADMIN)
    if version == "latest":
        assert r.status_code == 204  # 'latest' is a selector like any other
        assert three.get("/api/models/credit").json["latest_version"] == 2
    else:
        assert r.status_code == 404


def test_patch_description(three: Any) -> None:
    r = three.patch("/api/admin/models/credit", json={"description": "risk model"}, headers=ADMIN)
    assert r.status_code == 200 and r.json["description"] == "risk model"
    assert [v["version"] for v in r.json["versions"]] == [3, 2, 1]
    assert three.get("/api/models").json[0]["description"] == "risk model"
    assert three.patch("/api/admin/models/ghost", json={"description": "x"}, headers=ADMIN).status_code == 404
    assert three.patch("/api/admin/models/credit", json={"description": 5}, headers=ADMIN).status_code == 422


# -- races -----------------------------------------------------------------------------------
def test_concurrent_uploads_get_distinct_numbers(app: Any, credit_pipeline: Any) -> None:
    payload = joblib_bytes(credit_pipeline)
    results: list[Any] = []

    def one() -> None:
        results.append(upload(app.test_client(), "race", payload))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in results) == [201] * 8
    assert sorted(r.json["version"] for r in results) == list(range(1, 9))
