"""Safety gate for model artifacts: scan pickles/joblib files before loading, load with the policy
enforced, and check what was loaded.

- policy.py: which globals and which objects an artifact may reference, judged by identity;
- streams.py: the (decompressed) byte stream joblib would read;
- graph.py: the object graph a pickle builds and its unfolded size;
- scanner.py: the opcode evaluator (scan_artifact, scan_stream);
- unpickler.py: RestrictedUnpickler and restricted_joblib_load (runtime checks on real objects);
- loaded.py: check_loaded, the walk of a loaded model.
"""

from __future__ import annotations

from model_store.safety.loaded import check_loaded
from model_store.safety.policy import (
    DEFAULT_TRUSTED_MODULES,
    TRUSTED_GLOBALS,
    is_trusted_global,
    refused_globals,
)
from model_store.safety.scanner import ScanReport, scan_artifact, scan_stream
from model_store.safety.unpickler import RestrictedUnpickler, restricted_joblib_load

__all__ = [
    "DEFAULT_TRUSTED_MODULES",
    "TRUSTED_GLOBALS",
    "RestrictedUnpickler",
    "ScanReport",
    "check_loaded",
    "is_trusted_global",
    "refused_globals",
    "restricted_joblib_load",
    "scan_artifact",
    "scan_stream",
]
