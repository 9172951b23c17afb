"""schemathesis hooks (SCHEMATHESIS_HOOKS=tests.system.schemathesis_hooks): CSV bodies.

schemathesis has no serializer of its own for text/csv, so without this it sends no CSV body at
all. The strategy mixes CSV that names the registered models' features (with numbers, words,
blanks, quotes, ragged rows and hostile numbers such as nan, 1e999 and 1_000) with arbitrary text
and bytes, so the CSV reader, the per-type reading and the schema check all get exercised.
"""

from __future__ import annotations

import csv
import io

import schemathesis
from hypothesis import strategies as st

FEATURES = [
    # the demo model, the `credit` fixture pipeline, `labels`, `picky`
    *("age", "income", "loan_amount", "term_months", "gender", "employment", "home_ownership"),
    *("region", "height", "weight", "a", "b", "zip", ""),
]
FIELDS = st.one_of(
    st.from_regex(r"[+-]?\d{1,7}(\.\d{0,4})?([eE][+-]?\d{1,3})?", fullmatch=True),
    st.sampled_from(["male", "female", "north", "salaried", "rent", "true", "FALSE", "", " 35 ", "35.0"]),
    st.sampled_from(["nan", "inf", "-Infinity", "1e999", "1_000", "0x10", "\u0000", "\ufeff", '"']),
    st.text(max_size=12),
)


def _render(header: list[str], rows: list[list[str]], line_end: str) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=line_end)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8", "surrogatepass")


@st.composite
def csv_bodies(draw: st.DrawFn) -> bytes:
    header = draw(st.lists(st.sampled_from(FEATURES), min_size=1, max_size=8))
    width = st.integers(len(header) - 1, len(header) + 1) if draw(st.booleans()) else st.just(len(header))
    rows = draw(st.lists(width.flatmap(lambda n: st.lists(FIELDS, min_size=max(n, 0), max_size=max(n, 0))), max_size=6))
    return _render(header, rows, draw(st.sampled_from(["\r\n", "\n", "\r"])))


DEMO_ROW = st.fixed_dictionaries(
    {
        "age": st.integers(10, 90).map(str),
        "income": st.floats(0, 2e5).map(repr),
        "loan_amount": st.integers(0, 10**5).map(str),
        "term_months": st.sampled_from(["12", "36", "60", "36.0"]),
        "gender": st.sampled_from(["male", "female", "other", ""]),
        "employment": st.sampled_from(["salaried", "self-employed", "unemployed"]),
        "home_ownership": st.sampled_from(["own", "mortgage", "rent"]),
    }
)


@st.composite
def demo_bodies(draw: st.DrawFn) -> bytes:
    """Applicants for the demo model, mostly valid: these reach the model and answer 200."""
    rows = draw(st.lists(DEMO_ROW, min_size=1, max_size=5))
    header = draw(st.permutations(list(rows[0])))
    return _render(header, [[row[name] for name in header] for row in rows], "\r\n")


BODIES = st.one_of(demo_bodies(), csv_bodies(), st.binary(max_size=64), st.text(max_size=64).map(str.encode))


@schemathesis.hook
def flatmap_case(ctx: schemathesis.HookContext, case: schemathesis.Case) -> st.SearchStrategy[schemathesis.Case]:
    """A CSV case keeps what schemathesis made of the schema (random text) or takes a body of ours.
    (A media-type strategy would refuse the documented example, which is text, not bytes.)"""
    if case.media_type != "text/csv":
        return st.just(case)

    def with_body(body: bytes) -> schemathesis.Case:
        case.body = body
        return case

    return st.one_of(st.just(case), BODIES.map(with_body))


@schemathesis.serializer("text/csv")
def csv_body(ctx: schemathesis.SerializationContext, value: object) -> bytes:
    """The documented example (text) and the strategy's bodies (bytes) go out as they are."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogatepass")
