"""What the package asks pip for: the extras, the files it ships, the tested range (setup.cfg
against constraints.txt), and the one clear line when the PostgreSQL driver, an extra, is absent.

psycopg is made absent for one process tree by a `psycopg` module placed first on PYTHONPATH that
raises what Python raises for a module that is not installed; nothing of maas is replaced.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import REPO
from tests.support.live import MAAS, environment, free_port, run_to_end

PG_URL = "postgresql+psycopg://maas:s3cret@127.0.0.1:{port}/maas"
MESSAGE = "is a PostgreSQL URL but psycopg is not installed: pip install 'maas[postgres]'"
NO_PSYCOPG = 'raise ModuleNotFoundError("No module named \'psycopg\'", name="psycopg")\n'


def setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return config


@pytest.fixture
def without_psycopg(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python cannot import psycopg."""
    blocker = tmp_path / "no-psycopg"
    blocker.mkdir()
    (blocker / "psycopg.py").write_text(NO_PSYCOPG)
    pythonpath = os.pathsep.join(p for p in (str(blocker), os.environ.get("PYTHONPATH")) if p)
    return environment(PYTHONPATH=pythonpath)


def test_the_blocker_really_blocks(without_psycopg: dict[str, str]) -> None:
    run = subprocess.run(
        [sys.executable, "-c", "import psycopg"], env=without_psycopg, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1 and "ModuleNotFoundError: No module named 'psycopg'" in run.stderr


@pytest.mark.parametrize("command", [["db", "upgrade"], ["serve", "--port", "0"]])
def test_maas_names_the_extra_when_psycopg_is_missing(
    command: list[str], without_psycopg: dict[str, str], tmp_path: Path
) -> None:
    url = PG_URL.format(port=free_port())
    run = run_to_end(
        [*MAAS, *command, "--database-url", url], env={**without_psycopg, "MAAS_SANDBOX": "off"}, cwd=tmp_path
    )
    assert run.returncode == 1, run.stdout + run.stderr
    lines = [line for line in run.stderr.splitlines() if "MAAS_SANDBOX=off" not in line]
    assert lines == [
        f"Error: The registry database URL (postgresql+psycopg://maas:***@127.0.0.1:{url.split(':')[3]}) {MESSAGE}"
    ], run.stderr
    assert "s3cret" not in run.stdout + run.stderr


def test_the_registrys_engine_names_the_extra_when_psycopg_is_missing(without_psycopg: dict[str, str]) -> None:
    script = (
        "from registry.db import Database\n"
        "from registry.errors import DatabaseDriverMissing\n"
        "try:\n"
        f"    Database({PG_URL.format(port=9)!r})\n"
        "except DatabaseDriverMissing as exc:\n"
        "    print(exc.message)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], env=without_psycopg, capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"The registry database URL (postgresql+psycopg://maas:***@127.0.0.1:9/maas) {MESSAGE}"


def test_sqlite_needs_no_psycopg(without_psycopg: dict[str, str], tmp_path: Path) -> None:
    run = subprocess.run(
        [*MAAS, "db", "upgrade", "--database-url", f"sqlite:///{tmp_path / 'registry.db'}"],
        env=without_psycopg,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "database at head" in run.stdout


def test_psycopg_is_an_extra_that_the_test_extra_includes() -> None:
    config = setup_cfg()
    install_requires = config["options"]["install_requires"]
    assert "psycopg" not in install_requires
    extras = config["options.extras_require"]
    assert "psycopg[binary]" in extras["postgres"]
    assert "psycopg[binary]" in extras["test"]


def _requirements(lines: str) -> list[Requirement]:
    return [Requirement(line) for line in (raw.split("#")[0].strip() for raw in lines.splitlines()) if line]


def test_constraints_pin_every_requirement_within_its_range() -> None:
    """constraints.txt (what CI installs) and setup.cfg (what users get) cannot drift apart."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version.strip()
    config = setup_cfg()
    wanted = _requirements(config["options"]["install_requires"]) + _requirements(
        config["options.extras_require"]["test"]
    )
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {requirement.name}=={pins[name]}, outside setup.cfg's {requirement}"
        )


def test_the_libraries_the_safety_scan_reads_have_an_upper_bound() -> None:
    requirements = {canonicalize_name(r.name): r for r in _requirements(setup_cfg()["options"]["install_requires"])}
    for name in ("numpy", "scipy", "scikit-learn", "joblib", "skops"):
        assert any(spec.operator == "<" for spec in requirements[canonicalize_name(name)].specifier), (
            f"{name} has no upper bound"
        )


def test_the_package_data_that_setup_cfg_names_exists() -> None:
    """Each name (or glob) under [options.package_data] matches at least one file, read as
    setuptools reads the list: one a line when it spans lines (a comma there would be part of
    the name), else separated by commas."""
    for package, files in setup_cfg()["options.package_data"].items():
        names = files.splitlines() if "\n" in files.strip() else files.split(",")
        for name in filter(None, (n.strip() for n in names)):
            matches = [p for p in (REPO / package.replace(".", "/")).glob(name) if p.is_file()]
            assert matches, f"{package}: {name} matches no file"
