"""CSV request and response bodies of the path-based predict routes (API v1.1, "CSV in and out").

RFC 4180 by the standard library's csv module: a header row of feature names, one row per
record, UTF-8 (a spreadsheet's byte order mark is skipped). What each field means is decided by
the version that answers (serving.inference.texttable). Every problem with the text itself is a
422 in the contract's shape, with rows numbered as in JSON (0 = the first data row).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from typing import Any

import flask

from serving.api.errors import RequestError
from serving.inference.runtime import Prediction
from serving.inference.texttable import TextTable

CSV_MIMETYPE = "text/csv"
TRUE_WORDS, FALSE_WORDS = frozenset({"true", "1"}), frozenset({"false", "0", ""})


def parse_csv(raw: bytes, charset: str | None) -> TextTable:
    """The body as a TextTable; raises RequestError (415 for a charset other than UTF-8, 422 else)."""
    if charset is not None and charset.lower().replace("_", "-") not in ("utf-8", "utf8", "us-ascii"):
        raise RequestError(415, f"Send the CSV as UTF-8, not {charset}.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        message = f"The CSV body is not valid UTF-8 (byte {exc.start})."
        raise RequestError(422, message, _csv_error(["Not UTF-8."])) from None
    try:
        lines = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        raise RequestError(422, f"The CSV body cannot be read: {exc}.", _csv_error([str(exc)])) from None
    # A blank line (a trailing one, say) is no record.
    lines = [line for line in lines if line]
    if not lines:
        raise RequestError(
            422,
            "The CSV body is empty: send a header row of feature names, then one row per record.",
            _csv_error(["No header row."]),
        )
    header, rows = lines[0], lines[1:]
    seen: set[str] = set()
    twice = [name for name in header if name in seen or seen.add(name)]  # type: ignore[func-returns-value]
    if twice:
        raise RequestError(
            422, f"The CSV header names {twice[0]!r} twice.", _csv_error([f"Column {twice[0]!r} twice."])
        )
    ragged = {
        str(i): [f"{len(row)} fields; the header has {len(header)}."]
        for i, row in enumerate(rows)
        if len(row) != len(header)
    }
    if ragged:
        first = next(iter(ragged))
        raise RequestError(
            422,
            f"CSV row {first} has {len(rows[int(first)])} fields; the header has {len(header)}.",
            _csv_error(ragged),
        )
    return TextTable(header, rows)


def _csv_error(detail: Any) -> dict[str, Any]:
    return {"csv": {"body": detail}}


def return_probabilities_query(args: Any) -> bool:
    """`?return_probabilities=true` of a CSV request; raises RequestError(422) for another word."""
    word = args.get("return_probabilities", "").strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise RequestError(
        422,
        "'return_probabilities' must be true or false.",
        {"query": {"return_probabilities": ["Not a valid boolean."]}},
    )


def wants_csv(request: flask.Request) -> bool:
    """Whether the client asked for a CSV answer (Accept: text/csv, preferred over JSON)."""
    return request.accept_mimetypes.best_match(["application/json", CSV_MIMETYPE]) == CSV_MIMETYPE


def render_csv(table: TextTable, prediction: Prediction) -> str:
    """The input as sent, then `prediction`, then `probability_<class>` per class when asked for."""
    keys = list(prediction.probabilities[0]) if prediction.probabilities else []
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*table.header, "prediction", *(f"probability_{k}" for k in keys)])
    probabilities: Iterable[dict[str, Any]] = prediction.probabilities or ({} for _ in table.rows)
    for row, predicted, probs in zip(table.rows, prediction.predictions, probabilities, strict=True):
        writer.writerow([*row, _field(predicted), *(_field(probs.get(k)) for k in keys)])
    return out.getvalue()


def _field(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if not isinstance(value, float) else repr(value)
