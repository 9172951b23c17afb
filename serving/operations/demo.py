"""The demo model: a loan-default pipeline trained on synthetic data."""

from __future__ import annotations

import io

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

DEMO_MODEL = "credit-default"
NUMERIC = ["age", "income", "loan_amount", "term_months"]
CATEGORICAL = ["gender", "employment", "home_ownership"]
DEMO_EXAMPLE = {
    "age": 35,
    "income": 42000,
    "loan_amount": 12000,
    "term_months": 36,
    "gender": "male",
    "employment": "salaried",
    "home_ownership": "rent",
}


def synthetic_loans(rows: int = 2000, seed: int = 7) -> tuple[pd.DataFrame, np.ndarray]:
    """Applicants and whether they defaulted, from a fixed seed (the same data every time)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 75, rows),
            "income": rng.normal(52000, 18000, rows).clip(8000, None).round(),
            "loan_amount": rng.gamma(2.0, 6000, rows).round(),
            "term_months": rng.choice([12, 24, 36, 48, 60], rows),
            "gender": rng.choice(["female", "male"], rows),
            "employment": rng.choice(["salaried", "self-employed", "unemployed"], rows, p=[0.7, 0.2, 0.1]),
            "home_ownership": rng.choice(["own", "mortgage", "rent"], rows),
        }
    )
    risk = (
        1.8 * frame["loan_amount"] / frame["income"]
        - 0.02 * (frame["age"] - 40)
        + 0.01 * frame["term_months"]
        + 1.2 * (frame["employment"] == "unemployed")
        + 0.3 * (frame["home_ownership"] == "rent")
        - 1.3
    )
    defaulted = (rng.random(rows) < 1 / (1 + np.exp(-risk))).astype(int)
    return frame, defaulted


def train_demo_model() -> Pipeline:
    frame, target = synthetic_loans()
    model = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        ("numeric", StandardScaler(), NUMERIC),
                        # Strict: the form offers the fitted categories only (a select, not free text).
                        ("categorical", OneHotEncoder(), CATEGORICAL),
                    ]
                ),
            ),
            ("classify", LogisticRegression(max_iter=1000)),
        ]
    )
    return model.fit(frame, target)


def demo_artifact() -> io.BytesIO:
    """The demo model as joblib bytes, as a data scientist would upload them."""
    buffer = io.BytesIO()
    joblib.dump(train_demo_model(), buffer)
    buffer.seek(0)
    return buffer


DEMO_METADATA = {
    "description": "Loan default risk (demo: logistic regression on synthetic applicants)",
    "tags": {"team": "risk", "demo": "true"},
    "aliases": ["production"],
    "example": DEMO_EXAMPLE,
}
