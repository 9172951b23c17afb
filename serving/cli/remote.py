"""The commands that speak to a remote maas server through serving.client: push, models, versions,
show, predict, alias, rm.

Each takes --url (MAAS_URL), --token (MAAS_ADMIN_TOKEN, else MAAS_API_TOKEN) and --json. Exit
codes: 0 done; 1 the server refused (a 4xx: its message on stderr); 2 a usage error (click's);
3 the server did not answer, or failed (5xx).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import click

from serving.client import DEFAULT_URL, Client, MaasError, Prediction, server_url
from serving.client.mlflow_model import NotAnMlflowModel

EXIT_REFUSED = 1
EXIT_UNAVAILABLE = 3
# Below this an upload takes no time worth watching: no progress bar.
PROGRESS_MIN_BYTES = 1 << 20

EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 the server refused (its message on stderr); 2 usage error; "
    "3 server unreachable or failing (5xx)."
)

F = TypeVar("F", bound=Callable[..., Any])


class RemoteFailure(click.ClickException):
    """A MaasError as the command's failure: the server's message on stderr, the exit code by kind."""

    def __init__(self, error: MaasError) -> None:
        super().__init__(error.message)
        self.error = error
        refused = error.status is not None and error.status < 500
        self.exit_code = EXIT_REFUSED if refused else EXIT_UNAVAILABLE  # type: ignore[misc]

    def show(self, file: IO[Any] | None = None) -> None:
        status = "" if self.error.status is None else f" ({self.error.status})"
        click.echo(f"Error{status}: {self.error.message}", err=True)
        if self.error.errors:
            click.echo(json.dumps(self.error.errors, ensure_ascii=False), err=True)


@contextmanager
def _client(options: dict[str, Any]) -> Iterator[Client]:
    with Client(options["url"], options["token"]) as client:
        try:
            yield client
        except NotAnMlflowModel as exc:  # a local directory maas cannot take: nothing was sent
            raise click.UsageError(exc.message) from None
        except MaasError as exc:
            raise RemoteFailure(exc) from None


def remote_command(function: F) -> F:
    """--url, --token and --json, the exit codes in the help; the function gets them as `remote`."""

    @click.option(
        "--url",
        envvar="MAAS_URL",
        default=DEFAULT_URL,
        show_default=True,
        callback=_checked_url,
        help="The maas server (env MAAS_URL).",
    )
    @click.option(
        "--token",
        envvar="MAAS_ADMIN_TOKEN",
        default=None,
        help="Bearer token (env MAAS_ADMIN_TOKEN, else MAAS_API_TOKEN): the admin token for push, alias, rm.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the server's JSON answer (for scripts).")
    @functools.wraps(function)
    def wrapper(url: str, token: str | None, as_json: bool, **kwargs: Any) -> Any:
        return function(remote={"url": url, "token": token, "json": as_json}, **kwargs)

    wrapper.__doc__ = f"{function.__doc__}\n\n{EXIT_CODES_HELP}"
    return wrapper  # type: ignore[return-value]


def _checked_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return server_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Plain text columns, aligned, for people."""
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _name_and_selector(value: str, *, required: bool = False) -> tuple[str, str | None]:
    name, at, selector = value.partition("@")
    if not name or (at and not selector):
        raise click.BadParameter(f"{value!r}: write NAME or NAME@SELECTOR (a version number, an alias or latest)")
    if required and not at:
        raise click.BadParameter(f"{value!r}: write NAME@VERSION")
    return name, selector or None


def _aliases(aliases: Any) -> str:
    if isinstance(aliases, dict):
        return ", ".join(f"{alias}={version}" for alias, version in sorted(aliases.items()))
    return ", ".join(aliases or [])


# -- push -------------------------------------------------------------------------------------------
@click.command()
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--name", required=True, help="The model's name; the upload becomes its next version.")
@click.option("--metadata", "metadata_json", help='Upload metadata as JSON: {"description": ..., "tags": ...}.')
@click.option("--alias", "aliases", multiple=True, help="Point this alias at the new version (repeatable).")
@click.option(
    "--progress/--no-progress",
    default=None,
    help=f"A progress bar on stderr (default: for files of {PROGRESS_MIN_BYTES >> 20} MiB and more).",
)
@remote_command
def push(
    remote: dict[str, Any],
    file: Path,
    name: str,
    metadata_json: str | None,
    aliases: tuple[str, ...],
    progress: bool | None,
) -> None:
    """Upload FILE as the next version of a model.

    FILE is a joblib, pickle or skops file, or an MLflow model directory of the sklearn flavor (its
    signature becomes the feature schema and its input example the `example`; --metadata wins)."""
    metadata = None
    if metadata_json is not None:
        try:
            metadata = json.loads(metadata_json)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--metadata") from None
        if not isinstance(metadata, dict):
            raise click.BadParameter("a JSON object, please", param_hint="--metadata")
    size = _size(file)
    show_bar = size >= PROGRESS_MIN_BYTES if progress is None else progress
    with _client(remote) as client, _progress_bar(show_bar, size) as report:
        version = client.push(file, name, metadata=metadata, aliases=aliases, progress=report)
    if remote["json"]:
        _print_json(version)
    else:
        aliases_text = f" ({_aliases(version.get('aliases'))})" if version.get("aliases") else ""
        click.echo(f"Pushed {version['model']} version {version['version']}{aliases_text}.")


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


@contextmanager
def _progress_bar(show: bool, size: int) -> Iterator[Callable[[int, int], None] | None]:
    """click's progress bar on stderr (never on stdout, which --json keeps for the answer)."""
    if not show:
        yield None
        return
    with click.progressbar(length=size, label="Uploading", file=sys.stderr, show_pos=False) as bar:
        seen = 0

        def report(sent: int, total: int) -> None:
            nonlocal seen
            bar.length = total  # the multipart body: the file and a few hundred bytes of framing
            bar.update(sent - seen)
            seen = sent

        yield report


# -- reading --------------------------------------------------------------------------------------
@click.command()
@remote_command
def models(remote: dict[str, Any]) -> None:
    """List the models."""
    with _client(remote) as client:
        listed = client.models()
    if remote["json"]:
        _print_json(listed)
        return
    _table(
        ["NAME", "LATEST", "ALIASES", "DESCRIPTION"],
        [[m["name"], m.get("latest_version"), _aliases(m.get("aliases")), m.get("description")] for m in listed],
    )


@click.command()
@click.argument("name")
@remote_command
def versions(remote: dict[str, Any], name: str) -> None:
    """List the versions of model NAME, newest first."""
    with _client(remote) as client:
        listed = client.versions(name)
    if remote["json"]:
        _print_json(listed)
        return
    _table(
        ["VERSION", "ALIASES", "ESTIMATOR", "CREATED", "DESCRIPTION"],
        [
            [v["version"], _aliases(v.get("aliases")), v.get("estimator"), v.get("created_at"), v.get("description")]
            for v in listed
        ],
    )


@click.command()
@click.argument("model")
@remote_command
def show(remote: dict[str, Any], model: str) -> None:
    """Show a version in full: MODEL is NAME (its latest version) or NAME@SELECTOR."""
    name, selector = _name_and_selector(model)
    with _client(remote) as client:
        version = client.version(name, selector or "latest")
    if remote["json"]:
        _print_json(version)
        return
    fields = [
        (key, "" if version.get(key) is None else version[key])
        for key in ("model", "version", "description", "estimator", "format", "size_bytes", "sha256", "created_at")
    ]
    tags = version.get("tags") or {}
    fields += [
        ("aliases", _aliases(version.get("aliases"))),
        ("classes", "" if version.get("classes") is None else json.dumps(version["classes"])),
        ("tags", ", ".join(f"{k}={v}" for k, v in sorted(tags.items()))),
    ]
    for label, value in fields:
        click.echo(f"{label + ':':<14}{value}".rstrip())
    click.echo("features:")
    _table(
        ["  NAME", "TYPE", "REQUIRED", "ALLOWED", "MIN", "MAX"],
        [
            [
                f"  {f['name']}",
                f["type"],
                "yes" if f.get("required", True) else "no",
                "" if f.get("allowed") is None else ", ".join(map(str, f["allowed"])),
                f.get("minimum"),
                f.get("maximum"),
            ]
            for f in version.get("features") or []
        ],
    )


# -- predict --------------------------------------------------------------------------------------
@click.command()
@click.argument("model")
@click.option(
    "--data",
    required=True,
    help="The rows: JSON (one record, columns or a list of records), or @file.json, or @file.csv "
    "(a header row of feature names), or @- for JSON on stdin.",
)
@click.option("--probabilities", is_flag=True, help="Also the probability of each class.")
@remote_command
def predict(remote: dict[str, Any], model: str, data: str, probabilities: bool) -> None:
    """Predict with MODEL: NAME (its latest version) or NAME@SELECTOR."""
    name, selector = _name_and_selector(model)
    csv_text, rows = _read_data(data)
    with _client(remote) as client:
        if csv_text is not None:
            answer = client.predict_csv(name, csv_text, version=selector, probabilities=probabilities)
        else:
            answer = client.predict(name, rows, version=selector, probabilities=probabilities)
    if remote["json"]:
        _print_json(_answer_json(answer))
        return
    _print_predictions(answer)


def _read_data(value: str) -> tuple[str | None, Any]:
    """(CSV text, None) for @file.csv, else (None, the parsed JSON)."""
    source = "--data"
    if value.startswith("@"):
        path = value[1:]
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--data") from None
        if path.lower().endswith(".csv"):
            return text, None
        source, value = path, text
    try:
        return None, json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{source} is not JSON: {exc}", param_hint="--data") from None


def _answer_json(answer: Prediction) -> dict[str, Any]:
    body: dict[str, Any] = {"model": answer.model, "version": answer.version, "predictions": answer.predictions}
    if answer.probabilities is not None:
        body["probabilities"] = answer.probabilities
    if answer.engine is not None:
        body["engine"] = answer.engine
    return body


def _print_predictions(answer: Prediction) -> None:
    click.echo(f"{answer.model} version {answer.version}")
    classes = list(answer.probabilities[0]) if answer.probabilities else []
    rows = []
    for row, prediction in enumerate(answer.predictions):
        probabilities = answer.probabilities[row] if answer.probabilities else {}
        rows.append([row, json.dumps(prediction), *(f"{probabilities.get(c, 0.0):.4f}" for c in classes)])
    _table(["ROW", "PREDICTION", *(f"P({c})" for c in classes)], rows)


# -- administering --------------------------------------------------------------------------------
@click.command()
@click.argument("name")
@click.argument("alias")
@click.argument("version", type=click.IntRange(min=1))
@remote_command
def alias(remote: dict[str, Any], name: str, alias: str, version: int) -> None:
    """Point ALIAS of model NAME at VERSION (created, or moved)."""
    with _client(remote) as client:
        answer = client.set_alias(name, alias, version)
    if remote["json"]:
        _print_json(answer)
    else:
        click.echo(f"{name}@{alias} -> version {answer['version']}")


@click.command()
@click.argument("model")
@remote_command
def rm(remote: dict[str, Any], model: str) -> None:
    """Delete version VERSION of a model: MODEL is NAME@VERSION (refused while an alias points to it)."""
    name, selector = _name_and_selector(model, required=True)
    assert selector is not None
    if not selector.isdigit():
        raise click.BadParameter(f"{model!r}: rm takes a version number, not an alias", param_hint="MODEL")
    with _client(remote) as client:
        client.delete_version(name, int(selector))
    if remote["json"]:
        _print_json({"model": name, "version": int(selector), "deleted": True})
    else:
        click.echo(f"Deleted {name} version {selector}.")
