"""Which models fitted on a DataFrame the runner may hand a plain float array (serving.runners.runner)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from serving.runners.runner import takes_an_array
from tests.estimators.fixture_models import FussyRegressor

FRAME = pd.DataFrame({"a": np.linspace(-2, 2, 60), "b": np.tile([0.0, 1.0, 3.0], 20), "c": np.linspace(5, 1, 60)})
TARGET = (FRAME["a"] + FRAME["b"] > 1).astype(int)


@pytest.mark.parametrize(
    "model",
    [
        make_pipeline(StandardScaler(), LogisticRegression()),
        make_pipeline(SimpleImputer(), make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=5))),
        LogisticRegression(),
    ],
    ids=["scaler+logistic", "nested pipelines", "bare estimator"],
)
@pytest.mark.filterwarnings("ignore:X does not have valid feature names")  # the runner silences it too
def test_scikit_learns_numeric_steps_take_an_array_and_answer_the_same_bits(model: Any) -> None:
    model.fit(FRAME, TARGET)
    assert takes_an_array(model)
    array = np.array([FRAME[c].to_numpy() for c in FRAME.columns], dtype=np.float64).T
    assert np.array_equal(model.predict_proba(array), model.predict_proba(FRAME))


@pytest.mark.parametrize(
    "model",
    [
        make_pipeline(ColumnTransformer([("s", StandardScaler(), ["a", "b"])]), LogisticRegression()),
        make_pipeline(FunctionTransformer(lambda x: x), LogisticRegression()),
        make_pipeline(FeatureUnion([("s", StandardScaler())]), LogisticRegression()),
        make_pipeline(TfidfVectorizer(), LogisticRegression()),
        FussyRegressor(),
    ],
    ids=["column transformer", "function transformer", "feature union", "text", "not scikit-learn's"],
)
def test_steps_that_read_names_or_are_not_scikit_learns_get_the_frame(model: Any) -> None:
    assert not takes_an_array(model)
