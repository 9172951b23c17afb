"""The check a runner makes before onnxruntime opens a graph (serving/runners/compiled.py): only
the standard and `ai.onnx.ml` operators, no external data, no functions of other domains."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from serving.runners.compiled import GraphRefused, check_graph, open_session


def _model(nodes: list[Any], *, initializers: Any = (), opsets: list[Any] | None = None, **extra: Any) -> bytes:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [None, 1])],
        initializer=list(initializers),
    )
    model = helper.make_model(graph, opset_imports=opsets or [helper.make_opsetid("", 18)], **extra)
    return model.SerializeToString()


def _weight(name: str = "w") -> Any:
    return numpy_helper.from_array(np.array([[2.0]]), name)


def test_a_standard_graph_passes_and_runs() -> None:
    data = _model([helper.make_node("Mul", ["x", "w"], ["y"])], initializers=[_weight()])
    check_graph(data)
    session = open_session(data)
    (y,) = session.run(None, {"x": np.array([[3.0]])})
    assert y.tolist() == [[6.0]]
    assert session.get_session_options().intra_op_num_threads == 1


def test_ml_domain_operators_pass() -> None:
    node = helper.make_node("Scaler", ["x"], ["y"], domain="ai.onnx.ml", offset=[0.0], scale=[2.0])
    data = _model([node], opsets=[helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.ml", 3)])
    check_graph(data)


@pytest.mark.parametrize("domain", ["com.microsoft", "ai.onnx.contrib", "custom"])
def test_a_node_of_another_domain_is_refused(domain: str) -> None:
    node = helper.make_node("Mul", ["x", "w"], ["y"], domain=domain)
    data = _model([node], initializers=[_weight()])
    with pytest.raises(GraphRefused, match=re.escape(f"domain {domain!r}")):
        check_graph(data)
    with pytest.raises(GraphRefused):
        open_session(data)


def test_an_opset_import_of_another_domain_is_refused() -> None:
    data = _model(
        [helper.make_node("Mul", ["x", "w"], ["y"])],
        initializers=[_weight()],
        opsets=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)],
    )
    with pytest.raises(GraphRefused, match=r"com\.microsoft"):
        check_graph(data)


def test_external_data_is_refused() -> None:
    weight = _weight()
    weight.ClearField("raw_data")
    weight.ClearField("double_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="/etc/passwd")
    data = _model([helper.make_node("Mul", ["x", "w"], ["y"])], initializers=[weight])
    with pytest.raises(GraphRefused, match="external data"):
        check_graph(data)


def test_external_data_in_a_constant_node_is_refused() -> None:
    value = _weight("c")
    value.ClearField("raw_data")
    value.ClearField("double_data")
    value.data_location = TensorProto.EXTERNAL
    value.external_data.add(key="location", value="weights.bin")
    nodes = [helper.make_node("Constant", [], ["w"], value=value), helper.make_node("Mul", ["x", "w"], ["y"])]
    with pytest.raises(GraphRefused, match="external data"):
        check_graph(_model(nodes))


def test_a_custom_node_inside_a_subgraph_is_refused() -> None:
    inner = helper.make_graph(
        [helper.make_node("Mul", ["x", "x"], ["z"], domain="custom")],
        "inner",
        [],
        [helper.make_tensor_value_info("z", TensorProto.DOUBLE, [None, 1])],
    )
    outer = helper.make_graph(
        [
            helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array(True), "c")),
            helper.make_node("If", ["c"], ["y"], then_branch=inner, else_branch=inner),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [None, 1])],
    )
    data = helper.make_model(outer, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()
    with pytest.raises(GraphRefused, match="custom"):
        check_graph(data)


def test_local_functions_are_refused() -> None:
    function = helper.make_function(
        "custom", "Twice", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])], [helper.make_opsetid("", 18)]
    )
    data = _model([helper.make_node("Mul", ["x", "w"], ["y"])], initializers=[_weight()], functions=[function])
    with pytest.raises(GraphRefused, match="functions"):
        check_graph(data)


def test_bytes_that_are_not_onnx_are_refused() -> None:
    with pytest.raises(GraphRefused, match="not an ONNX file"):
        check_graph(b"\x80\x04not protobuf at all\xff\xff")
