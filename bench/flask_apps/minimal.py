"""The minimal cached Flask app, as a competent engineer writes it: every model loaded once, at
import, and a request's `data` (records or columns) turned into a DataFrame for `predict_proba`.

    BENCH_MODEL_DIR=DIR gunicorn --workers 2 --worker-class sync --no-control-socket minimal:app

serves POST /predict/<name> for every DIR/<name>.joblib (bench/serve_bench.py starts it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
from flask import Flask, jsonify, request

app = Flask(__name__)
MODELS = {path.stem: joblib.load(path) for path in Path(os.environ["BENCH_MODEL_DIR"]).glob("*.joblib")}


@app.post("/predict/<name>")
def predict(name: str) -> Any:
    frame = pd.DataFrame(request.get_json()["data"])
    return jsonify(probabilities=MODELS[name].predict_proba(frame).tolist())
