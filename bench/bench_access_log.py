"""What the access log costs a request: the access log's before_request and after_request
functions, timed in one request context (a resolved predict route), with the line written
(to memory) and with the `maas.access` logger off. Prints microseconds; asserts nothing."""

from __future__ import annotations

import argparse
import io
import logging
import timeit

from flask import Flask, Response, g

from serving.api.accesslog import note_model, register_access_log
from serving.telemetry.logs import access_log, install_access_log, install_log_record_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=100_000)
    calls = parser.parse_args().calls
    install_log_record_ids()
    install_access_log(io.StringIO())
    app = Flask(__name__)
    register_access_log(app)
    app.add_url_rule("/api/models/<name>/versions/<selector>/predict", "predict", lambda **_: "", methods=["POST"])
    (before,) = app.before_request_funcs[None]
    (after,) = app.after_request_funcs[None]
    response = Response("{}")
    with app.test_request_context("/api/models/credit/versions/prod/predict", method="POST"):
        app.preprocess_request()
        g.request_id = "0" * 32
        note_model("credit", 3)
        figures = {"before_request": timeit.timeit(before, number=calls)}
        figures["after_request, line written"] = timeit.timeit(lambda: after(response), number=calls)
        access_log.setLevel(logging.WARNING)
        figures["after_request, logger off"] = timeit.timeit(lambda: after(response), number=calls)
    for what, seconds in figures.items():
        print(f"{what:32} {seconds / calls * 1e6:8.2f} us")


if __name__ == "__main__":
    main()
