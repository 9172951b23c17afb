"""Estimators defined by the tests; they load only when MAAS_TRUSTED_MODULES trusts `tests`."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin


class PickyRegressor(RegressorMixin, BaseEstimator):
    """Predicts the sum of a row, and raises on negative input (a model that fails on some rows)."""

    def fit(self, X: Any, y: Any = None) -> PickyRegressor:
        self.feature_names_in_ = np.asarray(list(X.columns), dtype=object)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: Any) -> np.ndarray:
        values = np.asarray(X, dtype=float)
        if (values < 0).any():
            raise ValueError("negative input at /secret/path/model.py")
        return values.sum(axis=1)


class BatchNoiseRegressor(RegressorMixin, BaseEstimator):
    """Predicts 3·x plus noise in the last bits that depends on the row's place in the batch, as a
    BLAS kernel that sums blocks of rows in different orders can: the same row gets two answers
    a few ulps apart in one batch."""

    def fit(self, X: Any, y: Any = None) -> BatchNoiseRegressor:
        self.feature_names_in_ = np.asarray(list(X.columns), dtype=object)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: Any) -> np.ndarray:
        values = np.asarray(X, dtype=float)[:, 0] * 3.0
        return values + np.arange(len(values)) % 4 * np.spacing(values + 1.0)


def _refuse_large(values: np.ndarray) -> None:
    if (values.sum(axis=1) > 100).any():
        raise ValueError("a row sums to more than 100")


class FussyRegressor(PickyRegressor):
    """PickyRegressor that also refuses rows summing past 100, with a message that holds no path."""

    def predict(self, X: Any) -> np.ndarray:
        _refuse_large(np.asarray(X, dtype=float))
        return super().predict(X)
