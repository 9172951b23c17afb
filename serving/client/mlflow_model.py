"""An MLflow model directory of the sklearn flavor, read without mlflow: its pickled model, and
upload metadata made of its signature (the feature schema) and its input example (`example`).

The directory layout is MLflow's (`mlflow.sklearn.save_model`): an `MLmodel` YAML file whose
`flavors.sklearn.pickled_model` names the artifact, whose `signature.inputs` is a JSON string of
column specs, and whose `saved_input_example_info.artifact_path` names the example's JSON file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from serving.client import MaasError

# MLflow's column types (mlflow.types.DataType) -> the contract's feature types.
COLUMN_TYPES = {
    "double": "number",
    "float": "number",
    "long": "integer",
    "integer": "integer",
    "string": "string",
    "boolean": "boolean",
}


class NotAnMlflowModel(MaasError):
    """The directory is not an MLflow model maas can take (refused before anything is sent)."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


@dataclass(frozen=True)
class MlflowModel:
    artifact: Path  # the pickled model
    metadata: dict[str, Any] = field(default_factory=dict)  # `features` and `example`, where MLflow saved them


def read_mlflow_model(directory: Path) -> MlflowModel:
    """The artifact and upload metadata of an MLflow sklearn model directory; NotAnMlflowModel otherwise."""
    mlmodel_path = directory / "MLmodel"
    if not mlmodel_path.is_file():
        raise NotAnMlflowModel(f"{directory} is a directory without an MLmodel file: not an MLflow model")
    try:
        mlmodel = yaml.safe_load(mlmodel_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise NotAnMlflowModel(f"{mlmodel_path} is not valid YAML: {exc}") from None
    if not isinstance(mlmodel, dict):
        raise NotAnMlflowModel(f"{mlmodel_path} is not an MLmodel file (not a mapping)")
    flavors = mlmodel.get("flavors") or {}
    sklearn = flavors.get("sklearn")
    if not isinstance(sklearn, dict) or not sklearn.get("pickled_model"):
        raise NotAnMlflowModel(
            f"{directory} is an MLflow model without the sklearn flavor (it has: {', '.join(flavors) or 'none'}); "
            "maas takes scikit-learn models only"
        )
    if sklearn.get("code"):
        raise NotAnMlflowModel(
            f"{directory} ships its own code ({sklearn['code']}): maas does not run uploaded code; "
            "name the modules in the server's MAAS_TRUSTED_MODULES and push the pickle itself"
        )
    artifact = _inside(directory, str(sklearn["pickled_model"]))
    if not artifact.is_file():
        raise NotAnMlflowModel(f"{directory}: the MLmodel names {sklearn['pickled_model']}, which is not there")

    metadata: dict[str, Any] = {}
    features = _features(mlmodel.get("signature"), mlmodel_path)
    if features is not None:
        metadata["features"] = features
    example = _example(directory, mlmodel.get("saved_input_example_info"))
    if example is not None:
        metadata["example"] = example
    return MlflowModel(artifact, metadata)


def _inside(directory: Path, relative: str) -> Path:
    """A path the MLmodel names, refused when it leads out of the model's directory."""
    path = (directory / relative).resolve()
    if not path.is_relative_to(directory.resolve()):
        raise NotAnMlflowModel(f"{directory}: the MLmodel names {relative}, outside the model's directory")
    return path


def _features(signature: Any, mlmodel_path: Path) -> list[dict[str, Any]] | None:
    """The signature's input column specs as the contract's feature schema (None without a signature)."""
    if not isinstance(signature, dict) or not signature.get("inputs"):
        return None
    inputs = signature["inputs"]
    try:
        specs = json.loads(inputs) if isinstance(inputs, str) else inputs
    except json.JSONDecodeError as exc:
        raise NotAnMlflowModel(f"{mlmodel_path}: the signature's inputs are not JSON: {exc}") from None
    if not isinstance(specs, list):
        raise NotAnMlflowModel(f"{mlmodel_path}: the signature's inputs are not a list of column specs")
    features = []
    for number, spec in enumerate(specs):
        if not isinstance(spec, dict) or spec.get("type") == "tensor":
            raise NotAnMlflowModel(
                f"{mlmodel_path}: input {number} of the signature is not a column spec (a tensor signature?): "
                "maas needs named columns"
            )
        if not spec.get("name"):
            raise NotAnMlflowModel(f"{mlmodel_path}: input {number} of the signature has no name")
        kind = COLUMN_TYPES.get(str(spec.get("type")))
        if kind is None:
            raise NotAnMlflowModel(
                f"{mlmodel_path}: input {spec['name']!r} has MLflow type {spec.get('type')!r}, which maas has "
                f"no feature type for (it takes {', '.join(COLUMN_TYPES)})"
            )
        features.append({"name": spec["name"], "type": kind, "required": bool(spec.get("required", True))})
    return features


def _example(directory: Path, info: Any) -> Any:
    """The saved input example as records (MLflow saves a DataFrame split: columns, data, index)."""
    if not isinstance(info, dict) or not info.get("artifact_path"):
        return None
    path = _inside(directory, str(info["artifact_path"]))
    try:
        example = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NotAnMlflowModel(
            f"{directory}: its input example {info['artifact_path']} cannot be read: {exc}"
        ) from None
    if isinstance(example, dict) and "dataframe_split" in example:  # serving_input_example.json's shape
        example = example["dataframe_split"]
    if isinstance(example, dict) and "columns" in example and "data" in example:
        return [dict(zip(example["columns"], row, strict=True)) for row in example["data"]]
    if isinstance(example, dict) and "dataframe_records" in example:
        return example["dataframe_records"]
    return example  # records, or one record, already a `data` value
