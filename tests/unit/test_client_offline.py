"""The client's parts that need no server: a DataFrame as columnar `data`, and the MLflow model
directory reader's refusals (made before anything is sent). Over HTTP: tests/system/test_client.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.client import frame_to_columns
from serving.client.mlflow_model import NotAnMlflowModel, read_mlflow_model
from tests.support import REPO

MLFLOW_MODEL = REPO / "tests" / "fixtures" / "mlflow" / "credit-model"


def test_a_frame_becomes_plain_json_columns() -> None:
    frame = pd.DataFrame(
        {
            "count": pd.array([1, None], dtype="Int64"),
            "ratio": [0.5, np.nan],
            "name": ["a", None],
            "mixed": pd.Series([np.int64(3), np.float32(1.5)], dtype=object),
            "flag": [True, False],
            "when": [pd.Timestamp("2026-01-01"), pd.NaT],
        }
    )
    columns = frame_to_columns(frame)
    assert columns == {
        "count": [1, None],
        "ratio": [0.5, None],
        "name": ["a", None],
        "mixed": [3, 1.5],
        "flag": [True, False],
        "when": ["2026-01-01T00:00:00", None],
    }
    json.dumps(columns, allow_nan=False)  # strict JSON: no NaN token, no numpy type
    assert all(type(v) in (int, float, str, bool, type(None)) for values in columns.values() for v in values)


def test_the_mlflow_fixture_reads_as_upload_metadata() -> None:
    model = read_mlflow_model(MLFLOW_MODEL)
    assert model.artifact == (MLFLOW_MODEL / "model.skops").resolve()
    assert model.metadata["features"] == [
        {"name": "age", "type": "integer", "required": True},
        {"name": "income", "type": "number", "required": True},
        {"name": "region", "type": "string", "required": True},
    ]
    assert [sorted(row) for row in model.metadata["example"]] == [["age", "income", "region"]] * 2


def copy_with_mlmodel(tmp_path: Path, edit: str, replace: str) -> Path:
    directory = tmp_path / "model"
    shutil.copytree(MLFLOW_MODEL, directory)
    mlmodel = (directory / "MLmodel").read_text()
    assert edit in mlmodel
    (directory / "MLmodel").write_text(mlmodel.replace(edit, replace))
    return directory


@pytest.mark.parametrize(
    ("edit", "replace", "message"),
    [
        ("  sklearn:\n", "  other:\n", "without the sklearn flavor (it has: python_function, other)"),
        ("code: null", "code: src", "ships its own code (src)"),
        ("pickled_model: model.skops", "pickled_model: ../../etc/passwd", "outside the model's directory"),
        ("pickled_model: model.skops", "pickled_model: gone.skops", "names gone.skops, which is not there"),
        ('"type": "string", "name": "region"', '"type": "datetime", "name": "region"', "MLflow type 'datetime'"),
        ("inputs: '[", 'inputs: \'[{"type": "tensor", "tensor-spec": {}}, ', "not a column spec (a tensor signature?)"),
        ("flavors:", "flavors: [\n", "is not valid YAML"),
    ],
)
def test_what_maas_cannot_take_is_refused_before_sending(tmp_path: Path, edit: str, replace: str, message: str) -> None:
    with pytest.raises(NotAnMlflowModel) as refused:
        read_mlflow_model(copy_with_mlmodel(tmp_path, edit, replace))
    assert message in refused.value.message


def test_no_signature_and_no_example_leave_the_server_to_infer(tmp_path: Path) -> None:
    directory = tmp_path / "model"
    shutil.copytree(MLFLOW_MODEL, directory)
    mlmodel = (directory / "MLmodel").read_text()
    kept = mlmodel.split("saved_input_example_info:")[0] + "utc_time_created: '2026-12-02'\n"
    (directory / "MLmodel").write_text(kept)
    assert read_mlflow_model(directory).metadata == {}
