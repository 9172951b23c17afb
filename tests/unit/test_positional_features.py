"""Positional features (upload metadata `"features": "positional"`): x0, x1, ... for a model fitted without names."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from model_store.errors import InvalidArtifact
from model_store.features import MAX_FEATURES, FeatureSpec, FeatureType, positional_feature_schema


def test_a_pipeline_fitted_on_an_array_gets_one_number_per_column() -> None:
    X = np.random.default_rng(0).normal(size=(20, 4))
    model = make_pipeline(StandardScaler(), LinearRegression()).fit(X, X[:, 0])
    assert positional_feature_schema(model) == [FeatureSpec(f"x{i}", FeatureType.NUMBER) for i in range(4)]


def test_a_model_with_names_is_refused() -> None:
    frame = pd.DataFrame({"rooms": [1.0, 2.0, 3.0], "area": [30.0, 50.0, 70.0]})
    with pytest.raises(InvalidArtifact, match=r"fitted with feature names \(rooms, area\)"):
        positional_feature_schema(LinearRegression().fit(frame, [1, 2, 3]))


class _Counted:
    def __init__(self, count: Any) -> None:
        self.n_features_in_ = count


@pytest.mark.parametrize("count", [None, 0, -1, 3.0, True, "3"])
def test_no_usable_feature_count_is_refused(count: Any) -> None:
    model = _Counted(count) if count is not None else object()
    with pytest.raises(InvalidArtifact, match="does not say how many features"):
        positional_feature_schema(model)


def test_more_features_than_a_schema_may_have_is_refused() -> None:
    with pytest.raises(InvalidArtifact, match=f"more than a schema may have \\({MAX_FEATURES}\\)"):
        positional_feature_schema(_Counted(MAX_FEATURES + 1))
    assert len(positional_feature_schema(_Counted(MAX_FEATURES))) == MAX_FEATURES
