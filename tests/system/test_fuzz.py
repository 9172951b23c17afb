"""schemathesis against the live /openapi.json of `maas serve`, with real models and the admin token.

Every operation is fuzzed (examples, coverage, fuzzing and stateful phases) with three checks: no
5xx, no status the operation does not list (the document has no catch-all `default` response), no
response that breaks its declared schema. CI runs a bounded run (fixed seed, MAAS_FUZZ_EXAMPLES
cases per operation, 25 by default); bench/README.md shows the longer one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from tests.estimators.fixture_models import PickyRegressor
from tests.support import ADMIN, ADMIN_TOKEN, REPO, joblib_bytes, tracebacks_of_our_own
from tests.support.live import Server, environment

CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = 20261125
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"
OPERATIONS = (
    31  # every operation of the contract: v1, what-if, model delete, version PATCH, the 9 of V2, /metrics, events
)
_schemathesis = Path(sys.executable).parent / "schemathesis"


def schemathesis_command(url: str, *, examples: int, seed: int = SEED) -> list[str]:
    """The schemathesis CLI run this test makes (bench/README.md runs it with more examples)."""
    return [
        str(_schemathesis),
        "--config-file",
        str(CONFIG),
        "run",
        f"{url}/openapi.json",
        "--header",
        f"Authorization: Bearer {ADMIN_TOKEN}",
        "--checks",
        CHECKS,
        "--seed",
        str(seed),
        "--max-examples",
        str(examples),
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--no-color",
    ]


def register_models(server: Server, credit_pipeline: Any, string_classifier: Any) -> None:
    """Besides the demo model: two versions and an alias, string labels, a model that raises."""

    def upload(name: str, payload: bytes) -> None:
        answer = server.post(
            f"/api/admin/models/{name}/versions",
            files={"file": ("model.joblib", payload, "application/octet-stream")},
            headers=ADMIN,
        )
        assert answer.status_code == 201, answer.text

    upload("credit", joblib_bytes(credit_pipeline))
    upload("credit", joblib_bytes(credit_pipeline, compress=3))
    alias = server.put("/api/admin/models/credit/aliases/production", json={"version": 1}, headers=ADMIN)
    assert alias.status_code == 200, alias.text
    upload("labels", joblib_bytes(string_classifier))
    upload("picky", joblib_bytes(PickyRegressor().fit(pd.DataFrame({"a": [1.0], "b": [2.0]}))))


def summary(output: str) -> dict[str, int]:
    """The counts of schemathesis' summary: operations tested, cases generated and passed."""
    tested = re.search(r"Tested:\s+(\d+)", output)
    cases = re.search(r"(\d+) generated, (\d+) passed", output)
    failures = re.search(r"(\d+) generated, (\d+) found (\d+) unique failures", output)
    return {
        "operations": int(tested.group(1)) if tested else -1,
        "generated": int((cases or failures).group(1)) if (cases or failures) else -1,  # type: ignore[union-attr]
        "passed": int(cases.group(2)) if cases else -1,
        "failures": int(failures.group(3)) if failures else 0,
    }


def test_schemathesis_finds_no_server_error_nor_undocumented_answer(
    serve: Callable[..., Server],
    database_url: str,
    tmp_path: Path,
    credit_pipeline: Any,
    string_classifier: Any,
) -> None:
    env = environment(
        MAAS_ADMIN_TOKEN=ADMIN_TOKEN,
        MAAS_DATABASE_URL=database_url,
        MAAS_STORE_DIR=str(tmp_path / "store"),
        MAAS_TRUSTED_MODULES="tests",  # lets the `picky` test model load
        PYTHONPATH=str(REPO),
    )
    server = serve("--demo", env=env, cwd=tmp_path)
    register_models(server, credit_pipeline, string_classifier)

    examples = int(os.environ.get("MAAS_FUZZ_EXAMPLES", "25"))
    run = subprocess.run(
        schemathesis_command(server.url, examples=examples),
        cwd=tmp_path,
        env={
            **os.environ,
            "SCHEMATHESIS_TELEMETRY": "false",
            "SCHEMATHESIS_HOOKS": "tests.system.schemathesis_hooks",  # CSV bodies
            "PYTHONPATH": str(REPO),
        },
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = run.stdout + run.stderr
    counts = summary(output)
    print(f"schemathesis ({database_url.split(':')[0]}): {counts}")  # the figures for the record
    assert run.returncode == 0, output[-20000:]
    assert counts["operations"] == OPERATIONS, output[-5000:]
    assert counts["generated"] == counts["passed"] > 0, output[-5000:]

    assert server.process.poll() is None, "maas serve died under the fuzzer"
    assert server.get("/health/ready").status_code == 200
    log = server.log.read_text(errors="replace")
    assert tracebacks_of_our_own(log) == 0 and "unhandled error" not in log, server.output()
