"""A class whose unpickling (pickle or skops) creates a file: proof that a loader ran its code.

Its module is on no allow-list, so every safe load refuses it by name; tests load it unprotected,
in a throwaway process, to show the refusal is what keeps the file from appearing.
"""

from __future__ import annotations

from typing import Any


class WritesMarkerOnLoad:
    """Unpickling calls __setstate__, which creates the file named by the state's `marker`."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __getstate__(self) -> dict[str, Any]:
        return {"marker": self.marker}

    def __setstate__(self, state: dict[str, Any]) -> None:
        open(state["marker"], "w").close()
        self.marker = state["marker"]
