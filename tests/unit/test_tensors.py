"""serving.inference.tensors: V2 input tensors into a prediction's columns, and a prediction into
output tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from model_store.features import FeatureSpec, FeatureType
from serving.inference.errors import InvalidRequest, InvalidRows, TooManyRows
from serving.inference.inputs import InputSchema
from serving.inference.runtime import Prediction
from serving.inference.tensors import (
    Tensors,
    labels_datatype,
    output_tensors,
    requested_outputs,
)

FEATURES = [
    FeatureSpec("age", FeatureType.INTEGER, minimum=18),
    FeatureSpec("income", FeatureType.NUMBER),
    FeatureSpec("gender", FeatureType.STRING, allowed=("female", "male")),
    FeatureSpec("member", FeatureType.BOOLEAN, required=False),
]


def schema(max_rows: int = 100) -> InputSchema:
    return InputSchema("m", 1, FEATURES, None, max_rows)


def tensor(name: str, datatype: str, data: Any, shape: Any = None) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "data": data, "shape": [len(data)] if shape is None else shape}


GOOD = [
    tensor("age", "INT64", [35, 61]),
    tensor("income", "FP64", [42000.0, 30500]),
    tensor("gender", "BYTES", ["male", "female"]),
    tensor("member", "BOOL", [True, None]),
]


def test_tensors_become_the_checked_columns() -> None:
    columns, n = schema().check(Tensors(GOOD))
    assert n == 2
    assert columns["age"].dtype == np.int64 and columns["age"].tolist() == [35, 61]
    assert columns["income"].dtype == np.float64 and columns["income"].tolist() == [42000.0, 30500.0]
    assert columns["gender"].tolist() == ["male", "female"]
    assert columns["member"][0] is True and columns["member"][1] != columns["member"][1]  # NaN: missing


def test_nested_data_of_shape_n_1_and_any_order_of_inputs() -> None:
    nested = [tensor(t["name"], t["datatype"], [[v] for v in t["data"]], [2, 1]) for t in reversed(GOOD)]
    flat_n_1 = [{**t, "shape": [2, 1]} for t in GOOD]
    expected = schema().check(Tensors(GOOD))[0]
    for inputs in (nested, flat_n_1):
        columns, n = schema().check(Tensors(inputs))
        assert n == 2 and list(columns) == list(expected)
        assert columns["age"].tolist() == expected["age"].tolist()


@pytest.mark.parametrize(
    ("datatype", "feature", "data"),
    [
        ("FP32", "income", [1.5, 2]),
        ("INT8", "income", [1, -2]),
        ("UINT64", "age", [2**64 - 1 - 2**63 - 1, 20]),
        ("INT32", "age", [20, 30]),
    ],
)
def test_accepted_datatypes(datatype: str, feature: str, data: list[Any]) -> None:
    inputs = [tensor(feature, datatype, data) if t["name"] == feature else t for t in GOOD]
    assert schema().check(Tensors(inputs))[1] == 2


@pytest.mark.parametrize(
    ("inputs", "says"),
    [
        ([*GOOD, tensor("zip", "FP64", [1, 2])], "no such input"),
        ([*GOOD, GOOD[0]], "given twice"),
        ([tensor("age", "FP64", [35, 61]), *GOOD[1:]], "takes INT8"),
        ([tensor("age", "FP16", [35, 61]), *GOOD[1:]], "not FP16"),
        ([tensor("age", "STRING", [35, 61]), *GOOD[1:]], "not a datatype"),
        ([tensor("age", "INT64", [35, 61], [2, 2]), *GOOD[1:]], "shape must be"),
        ([tensor("age", "INT64", [35, 61], [2, 1, 1]), *GOOD[1:]], "shape must be"),
        ([tensor("age", "INT64", [35, 61], [True, 1]), *GOOD[1:]], "shape must be"),
        ([tensor("age", "INT64", [35, 61], [10**30]), *GOOD[1:]], "needs"),
        ([tensor("age", "INT64", [35, 61], [3]), *GOOD[1:]], "needs 3"),
        ([tensor("age", "INT64", [[35], [61, 1]], [2, 1]), *GOOD[1:]], "one value per row"),
        ([tensor("age", "INT64", [35, 61.0]), *GOOD[1:]], "INT64 data holds a number"),
        ([tensor("age", "INT64", [35, True]), *GOOD[1:]], "holds a boolean"),
        ([tensor("age", "INT8", [35, 200]), *GOOD[1:]], "out of the range of INT8"),
        ([tensor("age", "UINT8", [35, -1]), *GOOD[1:]], "out of the range of UINT8"),
        ([GOOD[0], tensor("income", "FP64", ["1", 2]), *GOOD[2:]], "FP64 data holds a string"),
        ([GOOD[0], tensor("income", "FP64", [float("nan"), 2]), *GOOD[2:]], "not a finite number"),
        ([GOOD[0], tensor("income", "FP64", [[1], {}]), *GOOD[2:]], "holds an array"),
        ([*GOOD[:2], tensor("gender", "BYTES", [1, "male"]), GOOD[3]], "not a string"),
        ([*GOOD[:3], tensor("member", "BOOL", [1, 0])], "BOOL data holds a number"),
        ([GOOD[0], tensor("income", "FP64", {"a": 1}), *GOOD[2:]], "must be an array"),
        ([tensor("age", "INT64", [35]), *GOOD[1:]], "same number of rows"),
        ([], "no inputs"),
    ],
)
def test_malformed_tensors(inputs: list[dict[str, Any]], says: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        schema().check(Tensors(inputs))
    assert says in raised.value.message


def test_the_schema_check_is_the_predictions_own() -> None:
    with pytest.raises(InvalidRows) as raised:
        schema().check(Tensors([tensor("age", "INT64", [35, 12]), *GOOD[1:]]))
    assert raised.value.errors == {"1": {"age": ["Must be at least 18."]}}
    with pytest.raises(InvalidRows) as raised:
        schema().check(Tensors(GOOD[1:]))
    assert raised.value.errors == {"age": ["Missing feature."]}
    with pytest.raises(InvalidRows):  # zero rows
        schema().check(Tensors([tensor(t["name"], t["datatype"], []) for t in GOOD]))
    with pytest.raises(TooManyRows):
        schema(max_rows=1).check(Tensors(GOOD))


def test_outputs() -> None:
    assert requested_outputs(None) == ["predict"] == requested_outputs([])
    assert requested_outputs([{"name": "predict_proba"}, {"name": "predict"}, {"name": "predict_proba"}]) == [
        "predict_proba",
        "predict",
    ]
    with pytest.raises(InvalidRequest):
        requested_outputs([{"name": "explain"}])
    prediction = Prediction("m", 1, [0, 1], [{"0": 0.9, "1": 0.1}, {"0": 0.25, "1": 0.75}])
    assert output_tensors(prediction, ["predict", "predict_proba"]) == [
        {"name": "predict", "datatype": "INT64", "shape": [2], "data": [0, 1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [2, 2], "data": [0.9, 0.1, 0.25, 0.75]},
    ]
    for predictions, datatype in (
        (["a", "b"], "BYTES"),
        ([True, False], "BOOL"),
        ([1.5, 2], "FP64"),
        ([1.5, None], "FP64"),
        ([1, None], "FP64"),
    ):
        (out,) = output_tensors(Prediction("m", 1, predictions), ["predict"])
        assert out["datatype"] == datatype, predictions
    assert output_tensors(Prediction("m", 1, [1, "a"]), ["predict"])[0]["data"] == ["1", "a"]
    assert [labels_datatype(c) for c in (None, [0, 1], ["no", "yes"], [False, True], [0.5, 1.5])] == [
        "FP64",
        "INT64",
        "BYTES",
        "BOOL",
        "FP64",
    ]
