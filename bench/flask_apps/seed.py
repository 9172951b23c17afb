"""The seed's style: the same app as minimal.py, but the pickle is loaded on every request.

BENCH_MODEL_DIR=DIR gunicorn --workers 2 --worker-class sync --no-control-socket seed:app
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
from flask import Flask, jsonify, request

app = Flask(__name__)
MODEL_DIR = Path(os.environ["BENCH_MODEL_DIR"])


@app.post("/predict/<name>")
def predict(name: str) -> Any:
    model = joblib.load(MODEL_DIR / f"{name}.joblib")
    frame = pd.DataFrame(request.get_json()["data"])
    return jsonify(probabilities=model.predict_proba(frame).tolist())
