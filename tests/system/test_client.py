"""serving.client.Client and the `maas` commands built on it (push, models, versions, show, predict,
alias, rm), against a live `maas serve` over real HTTP; MLflow model directories that mlflow wrote."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from serving.client import Client, MaasError, ServerUnreachable
from tests.estimators.hostile_estimators import Hostile
from tests.support import ADMIN_TOKEN, CREDIT_ROW, REPO, Live, database_of_its_own, joblib_bytes, live_server
from tests.support.live import MAAS, environment, free_port, run_to_end

MLFLOW_FIXTURES = REPO / "tests" / "fixtures" / "mlflow"
HEAVY = ("sqlalchemy", "gunicorn", "flask", "numpy", "pandas", "sklearn", "alembic", "registry", "model_store")
SECOND_ROW = {"age": 61.0, "income": 30500.5, "gender": "female", "region": "east"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One `maas serve` per database for the module; each test uses model names of its own."""
    root = tmp_path_factory.mktemp(f"client-{request.param}")
    with (
        database_of_its_own(request.param, root) as database_url,
        live_server(
            request.param,
            root,
            database_url,
            MAAS_ADMIN_TOKEN=ADMIN_TOKEN,
            # A model that crashes its runner (a 5xx for the exit code 3): trusted, as an operator would.
            MAAS_TRUSTED_MODULES="tests.estimators.hostile_estimators",
            PYTHONPATH=str(REPO),
        ) as server,
    ):
        yield server


@pytest.fixture
def client(live: Live) -> Iterator[Client]:
    with Client(live.server.url, ADMIN_TOKEN) as client:
        yield client


def maas(live: Live, cwd: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run `maas *args` against the live server (MAAS_URL and the admin token in its environment)."""
    env = environment(MAAS_URL=live.server.url, MAAS_ADMIN_TOKEN=ADMIN_TOKEN, **variables)
    return run_to_end([*MAAS, *args], env=env, cwd=cwd)


def write_model(path: Path, model: Any) -> Path:
    path.write_bytes(joblib_bytes(model))
    return path


# -- the Python client ---------------------------------------------------------------------------
def test_client_pushes_reads_and_predicts_a_dataframe(client: Client, tmp_path: Path, credit_pipeline: Any) -> None:
    artifact = write_model(tmp_path / "credit.joblib", credit_pipeline)
    reports: list[tuple[int, int]] = []
    version = client.push(
        artifact,
        "client-credit",
        metadata={"description": "from the client", "example": CREDIT_ROW},
        aliases=["production"],
        progress=lambda sent, total: reports.append((sent, total)),
    )
    assert version["version"] == 1
    assert version["aliases"] == ["production"]
    assert version["example"] == CREDIT_ROW
    assert reports, "no progress reported"
    sent, total = reports[-1]
    assert sent == total > artifact.stat().st_size  # the whole multipart body: file and framing

    assert "client-credit" in [m["name"] for m in client.models()]
    assert [v["version"] for v in client.versions("client-credit")] == [1]
    assert client.model("client-credit")["aliases"] == {"production": 1}
    full = client.version("client-credit", "production")
    assert [f["name"] for f in full["features"]] == ["age", "income", "gender", "region"]

    # A notebook's DataFrame: numpy dtypes, an index of its own.
    frame = pd.DataFrame([CREDIT_ROW, SECOND_ROW], index=["ann", "bob"])
    frame["age"] = frame["age"].astype(np.int64)
    answer = client.predict("client-credit", frame, version="production", probabilities=True)
    assert answer.version == 1
    assert list(answer) == credit_pipeline.predict(frame).tolist()
    assert len(answer) == 2
    table = answer.to_frame()
    assert list(table.index) == ["ann", "bob"]
    assert list(table.columns) == ["prediction", "probability_0", "probability_1"]
    np.testing.assert_allclose(table[["probability_0", "probability_1"]], credit_pipeline.predict_proba(frame))

    # Records and one record, as the contract spells `data`; no version: latest.
    assert client.predict("client-credit", [CREDIT_ROW, SECOND_ROW]).predictions == list(answer)
    assert client.predict("client-credit", CREDIT_ROW).probabilities is None

    # NaN goes as null (valid JSON), and the server's message comes back as it is.
    frame.loc["bob", "income"] = np.nan
    with pytest.raises(MaasError) as refused:
        client.predict("client-credit", frame)
    assert refused.value.status == 422
    assert "does not match the feature schema of 'client-credit'" in refused.value.message
    assert list(refused.value.errors["json"]["data"]) == ["1"]  # bob's row, by position
    assert list(refused.value.errors["json"]["data"]["1"]) == ["income"]


def test_client_alias_and_delete(client: Client, tmp_path: Path, regressor: Any) -> None:
    artifact = write_model(tmp_path / "reg.joblib", regressor)
    client.push(artifact, "client-reg")
    client.push(artifact, "client-reg", aliases=["staging"])
    assert client.set_alias("client-reg", "staging", 1)["version"] == 1
    with pytest.raises(MaasError) as conflict:
        client.delete_version("client-reg", 1)
    assert conflict.value.status == 409
    client.delete_version("client-reg", 2)
    assert [v["version"] for v in client.versions("client-reg")] == [1]
    with pytest.raises(MaasError) as gone:
        client.version("client-reg", 2)
    assert gone.value.status == 404


def test_client_lists_every_page(client: Client, tmp_path: Path, regressor: Any) -> None:
    artifact = write_model(tmp_path / "reg.joblib", regressor)
    for number in range(3):
        client.push(artifact, "client-pages", metadata={"description": f"v{number + 1}"})
    client.page_size = 2
    assert [v["version"] for v in client.versions("client-pages")] == [3, 2, 1]
    assert {"client-pages"} <= {m["name"] for m in client.models()}


def test_client_errors_carry_the_server_message(live: Live, tmp_path: Path, regressor: Any) -> None:
    with Client(live.server.url, ADMIN_TOKEN) as client, pytest.raises(MaasError) as unknown:
        client.version("no-such-model")
    assert unknown.value.status == 404
    assert "no-such-model" in unknown.value.message

    with Client(live.server.url, "wrong-token") as client, pytest.raises(MaasError) as refused:
        client.push(write_model(tmp_path / "reg.joblib", regressor), "client-nope")
    assert refused.value.status == 401

    with Client(f"http://127.0.0.1:{free_port()}") as client, pytest.raises(ServerUnreachable) as unreachable:
        client.models()
    assert unreachable.value.status is None
    assert "cannot reach the maas server" in unreachable.value.message


def test_client_reads_url_and_token_from_the_environment(
    live: Live, tmp_path: Path, regressor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAAS_URL", live.server.url)
    monkeypatch.setenv("MAAS_ADMIN_TOKEN", ADMIN_TOKEN)
    with Client() as client:
        assert client.push(write_model(tmp_path / "reg.joblib", regressor), "client-env")["version"] == 1


# -- the commands ----------------------------------------------------------------------------------
def test_commands_import_no_server_library() -> None:
    script = (
        "import json, sys\n"
        "from serving.cli import main\n"
        "for args in (['--help'], ['push', '--help'], ['predict', '--help']):\n"
        "    try:\n"
        "        main(args, prog_name='maas')\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    *help_lines, modules = run.stdout.splitlines()
    assert not set(json.loads(modules)) & set(HEAVY), modules
    help_text = "\n".join(help_lines)
    for command in ("push", "models", "versions", "show", "predict", "alias", "rm"):
        assert f"  {command} " in help_text, help_text
    assert "Exit codes: 0 done; 1 the server refused" in help_text


def test_push_show_predict_alias_rm(live: Live, tmp_path: Path, credit_pipeline: Any) -> None:
    artifact = write_model(tmp_path / "credit.joblib", credit_pipeline)
    metadata = json.dumps({"description": "from the CLI", "tags": {"team": "risk"}})
    pushed = maas(live, tmp_path, "push", str(artifact), "--name", "cli-credit", "--metadata", metadata, "--json")
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["version"] == 1
    assert "Uploading" not in pushed.stderr  # a small file: no bar

    # The bar on stderr when asked for (and on big files), never on stdout, which --json keeps.
    second = maas(live, tmp_path, "push", str(artifact), "--name", "cli-credit", "--alias", "production", "--progress")
    assert second.returncode == 0, second.stderr
    assert second.stdout == "Pushed cli-credit version 2 (production).\n"
    assert "Uploading" in second.stderr

    listed = maas(live, tmp_path, "models")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split() == ["NAME", "LATEST", "ALIASES", "DESCRIPTION"]
    assert any(line.split()[:3] == ["cli-credit", "2", "production=2"] for line in listed.stdout.splitlines())
    assert "cli-credit" in [m["name"] for m in json.loads(maas(live, tmp_path, "models", "--json").stdout)]

    versions = maas(live, tmp_path, "versions", "cli-credit")
    assert versions.returncode == 0, versions.stderr
    rows = [line.split() for line in versions.stdout.splitlines()[1:]]
    assert [(row[0], row[1]) for row in rows] == [("2", "production"), ("1", "sklearn.pipeline.Pipeline")]

    shown = maas(live, tmp_path, "show", "cli-credit@1")
    assert shown.returncode == 0, shown.stderr
    assert "description:  from the CLI" in shown.stdout
    assert "tags:         team=risk" in shown.stdout
    assert any(line.split()[:3] == ["region", "string", "yes"] for line in shown.stdout.splitlines())
    assert json.loads(maas(live, tmp_path, "show", "cli-credit", "--json").stdout)["version"] == 2

    expected = credit_pipeline.predict(pd.DataFrame([CREDIT_ROW, SECOND_ROW])).tolist()
    one = maas(live, tmp_path, "predict", "cli-credit@production", "--data", json.dumps(CREDIT_ROW))
    assert one.returncode == 0, one.stderr
    assert one.stdout.splitlines()[0] == "cli-credit version 2"
    assert one.stdout.splitlines()[2].split() == ["0", json.dumps(expected[0])]

    (tmp_path / "rows.json").write_text(json.dumps([CREDIT_ROW, SECOND_ROW]))
    from_json = maas(live, tmp_path, "predict", "cli-credit@1", "--data", "@rows.json", "--json")
    assert from_json.returncode == 0, from_json.stderr
    assert json.loads(from_json.stdout)["predictions"] == expected
    assert json.loads(from_json.stdout)["version"] == 1

    pd.DataFrame([CREDIT_ROW, SECOND_ROW]).to_csv(tmp_path / "rows.csv", index=False)
    from_csv = maas(live, tmp_path, "predict", "cli-credit", "--data", "@rows.csv", "--probabilities", "--json")
    assert from_csv.returncode == 0, from_csv.stderr
    answer = json.loads(from_csv.stdout)
    assert answer["predictions"] == expected
    proba = credit_pipeline.predict_proba(pd.DataFrame([CREDIT_ROW, SECOND_ROW]))
    np.testing.assert_allclose([[p["0"], p["1"]] for p in answer["probabilities"]], proba)
    table = maas(live, tmp_path, "predict", "cli-credit", "--data", "@rows.csv", "--probabilities")
    assert table.stdout.splitlines()[1].split() == ["ROW", "PREDICTION", "P(0)", "P(1)"]

    # rm refused while an alias points there: exit 1, the server's own message on stderr.
    refused = maas(live, tmp_path, "rm", "cli-credit@2")
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.startswith("Error (409): ")
    assert refused.stdout == ""

    moved = maas(live, tmp_path, "alias", "cli-credit", "production", "1")
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout == "cli-credit@production -> version 1\n"
    removed = maas(live, tmp_path, "rm", "cli-credit@2")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout == "Deleted cli-credit version 2.\n"

    gone = maas(live, tmp_path, "show", "cli-credit@2")
    assert gone.returncode == 1
    assert gone.stderr.startswith("Error (404): ")


def test_a_refused_prediction_shows_the_server_message_and_its_detail(
    live: Live, tmp_path: Path, regressor: Any
) -> None:
    artifact = write_model(tmp_path / "r.joblib", regressor)
    assert maas(live, tmp_path, "push", str(artifact), "--name", "cli-r").returncode == 0
    bad = maas(live, tmp_path, "predict", "cli-r", "--data", '{"x1": "one", "x2": 2}')
    assert bad.returncode == 1
    message, detail = bad.stderr.splitlines()
    assert message.startswith("Error (422): The input does not match the feature schema of 'cli-r' version 1")
    assert json.loads(detail) == {"json": {"data": {"x1": ["Must be a number, not a string."]}}}


def test_usage_errors_exit_2_and_an_unreachable_server_3(live: Live, tmp_path: Path) -> None:
    for args in (
        ["rm", "cli-credit"],  # no version
        ["rm", "cli-credit@production"],  # an alias, not a version
        ["predict", "cli-credit", "--data", "{not json"],
        ["predict", "cli-credit", "--data", "@missing.json"],
        ["push", str(tmp_path), "--name", "x"],  # a directory that is no MLflow model
        ["push", str(tmp_path), "--name", "x", "--metadata", "[]"],
        ["alias", "cli-credit", "production", "zero"],
        ["models", "--url", "localhost:5050"],  # no scheme
    ):
        run = maas(live, tmp_path, *args)
        assert run.returncode == 2, (args, run.stdout, run.stderr)
        assert run.stdout == ""
    assert "not an MLflow model" in maas(live, tmp_path, "push", str(tmp_path), "--name", "x").stderr

    nowhere = maas(live, tmp_path, "models", "--url", f"http://127.0.0.1:{free_port()}")
    assert nowhere.returncode == 3
    assert nowhere.stderr.startswith("Error: cannot reach the maas server at http://127.0.0.1:")

    unauthorized = maas(live, tmp_path, "alias", "cli-credit", "production", "1", "--token", "wrong")
    assert unauthorized.returncode == 1
    assert unauthorized.stderr.startswith("Error (401): ")


# -- MLflow model directories ---------------------------------------------------------------------
@pytest.mark.parametrize("directory", ["credit-model", "credit-model-cloudpickle"])
def test_push_an_mlflow_model_directory(live: Live, client: Client, tmp_path: Path, directory: str) -> None:
    """Directories the real mlflow wrote (tests/fixtures/mlflow/make_fixture.py): skops, MLflow's
    default, and cloudpickle; signature -> features, input example -> example; same predictions."""
    expected = json.loads((MLFLOW_FIXTURES / "expected.json").read_text())
    name = f"mlflow-{directory}"
    pushed = maas(live, tmp_path, "push", str(MLFLOW_FIXTURES / directory), "--name", name, "--json")
    assert pushed.returncode == 0, pushed.stderr
    version = json.loads(pushed.stdout)
    assert version["format"] == ("skops" if directory == "credit-model" else "pickle")
    assert [(f["name"], f["type"], f["required"]) for f in version["features"]] == [
        ("age", "integer", True),
        ("income", "number", True),
        ("region", "string", True),
    ]
    split = json.loads((MLFLOW_FIXTURES / directory / "input_example.json").read_text())
    assert version["example"] == [dict(zip(split["columns"], row, strict=True)) for row in split["data"]]

    # the model's own code, as MLflow ran it (the ONNX engine is within 1e-5: tests/api/test_engine.py)
    answer = client.predict(name, pd.DataFrame(expected["rows"]), probabilities=True, engine="sklearn")
    assert answer.engine == "sklearn"
    assert answer.predictions == expected["predictions"]
    assert answer.probabilities is not None
    got = [[row[c] for c in expected["classes"]] for row in answer.probabilities]
    np.testing.assert_allclose(got, expected["probabilities"], rtol=1e-9)


# -- more of the commands and the client ---------------------------------------------------------
def test_predict_reads_json_on_stdin(live: Live, tmp_path: Path, regressor: Any) -> None:
    artifact = write_model(tmp_path / "r.joblib", regressor)
    assert maas(live, tmp_path, "push", str(artifact), "--name", "cli-stdin").returncode == 0
    env = environment(MAAS_URL=live.server.url)
    rows = [{"x1": 1.0, "x2": 2.0}, {"x1": -1.0, "x2": 0.5}]
    run = subprocess.run(
        [*MAAS, "predict", "cli-stdin@1", "--data", "@-", "--json"],
        input=json.dumps(rows),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["predictions"] == pytest.approx(regressor.predict(pd.DataFrame(rows)).tolist())


def test_a_big_upload_streams_with_a_progress_bar(live: Live, client: Client, tmp_path: Path, regressor: Any) -> None:
    """Above 1 MiB the bar shows by default (on stderr); the client reports the bytes as they go."""
    big = copy.deepcopy(regressor)
    big.ballast_ = np.random.default_rng(0).normal(size=400_000)  # 3.2 MB of float64
    artifact = write_model(tmp_path / "big.joblib", big)
    assert artifact.stat().st_size > 3_000_000
    run = maas(live, tmp_path, "push", str(artifact), "--name", "cli-big", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["size_bytes"] == artifact.stat().st_size
    assert "Uploading" in run.stderr
    assert "Uploading" not in maas(live, tmp_path, "push", str(artifact), "--name", "cli-big", "--no-progress").stderr

    reports: list[int] = []
    client.push(artifact, "cli-big", progress=lambda sent, total: reports.append(sent))
    assert len(reports) > 2, "the body went in one piece, not streamed"
    assert reports == sorted(reports)


def test_a_server_failure_exits_3(live: Live, tmp_path: Path) -> None:
    """A 5xx (here: a model whose runner crashes, 503) is no refusal: exit 3, the message on stderr."""
    crashing = Hostile("crash").fit(pd.DataFrame({"x": [1.0, 2.0, 3.0]}), [0.0, 1.0, 2.0])
    artifact = write_model(tmp_path / "crash.joblib", crashing)
    assert maas(live, tmp_path, "push", str(artifact), "--name", "cli-crash").returncode == 0
    run = maas(live, tmp_path, "predict", "cli-crash", "--data", '{"x": 1.5}')
    assert run.returncode == 3, (run.stdout, run.stderr)
    assert run.stderr.startswith("Error (503): ")
    assert run.stdout == ""


def test_the_api_token_opens_reads(tmp_path: Path, regressor: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a server started with MAAS_API_TOKEN, the client sends MAAS_API_TOKEN when no admin token is set."""
    with (
        database_of_its_own("sqlite", tmp_path) as database_url,
        live_server("sqlite", tmp_path, database_url, MAAS_ADMIN_TOKEN=ADMIN_TOKEN, MAAS_API_TOKEN="reader") as live,
    ):
        with Client(live.server.url, ADMIN_TOKEN) as admin:
            admin.push(write_model(tmp_path / "r.joblib", regressor), "guarded")
        monkeypatch.delenv("MAAS_ADMIN_TOKEN", raising=False)
        monkeypatch.delenv("MAAS_API_TOKEN", raising=False)
        with Client(live.server.url) as anonymous, pytest.raises(MaasError) as refused:
            anonymous.models()
        assert refused.value.status == 401
        monkeypatch.setenv("MAAS_API_TOKEN", "reader")
        with Client(live.server.url) as reader:
            assert [m["name"] for m in reader.models()] == ["guarded"]
            assert len(reader.predict("guarded", {"x1": 1.0, "x2": 2.0})) == 1
