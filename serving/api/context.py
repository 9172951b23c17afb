"""The worker's Runtime, found from the Flask app that serves the request."""

from __future__ import annotations

from flask import Flask, current_app

from serving.inference.runtime import Runtime

_KEY = "maas"


def attach(app: Flask, rt: Runtime) -> None:
    """Make `rt` the Runtime of `app` (create_app does this once)."""
    rt.store.init()
    app.extensions[_KEY] = rt


def runtime() -> Runtime:
    """The Runtime of the app handling the current request."""
    return current_app.extensions[_KEY]
