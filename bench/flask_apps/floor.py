"""The floor of any Flask app under gunicorn: it reads the request's JSON and answers constant
probabilities, no model at all. What it serves per second bounds every Flask app on the machine,
the minimal one and maas included (bench/serve_bench.py starts it like the others).

    gunicorn --workers 2 --worker-class sync --no-control-socket floor:app
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/predict/<name>")
def predict(name: str) -> Any:
    rows = request.get_json()["data"]
    count = len(rows) if isinstance(rows, list) else len(next(iter(rows.values())))
    return jsonify(probabilities=[[0.5, 0.5]] * count)
