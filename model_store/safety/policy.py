"""The trust policy: which globals and which objects an artifact may reference, and how.

Names are only a first filter. Trusted packages re-export dangerous objects under other names (a
module that did `from operator import attrgetter`, `import builtins`, `import numpy as np`), so
every name that passes is imported and the OBJECT it resolves to is judged: its canonical home
(`__module__` + `__qualname__`) must pass the same name policy, it must not be one of the denied
objects (found by walking the namespaces of dangerous modules, compared by identity), and what the
artifact does with it decides the rest:

- called while loading: a class whose constructor is compiled code (never an array class: that
  hands out uninitialised memory), or one of the known reconstructors;
- instantiated (NEWOBJ, copyreg.__newobj__, _reconstructor...): a trusted class;
- stored as a value: a function only when it is on the safe list (numpy/scipy ufuncs and what
  scikit-learn itself stores by default), a class only when it is a plain value type (numpy scalar
  types used as `dtype=`), a module never; instances only of trusted classes.

The scanner, the skops check, the restricted unpicklers and the post-load walker all use these
judgements, so an object refused in one is refused in all.
"""

from __future__ import annotations

import _compat_pickle
import enum
import functools
import re
import sys
import types
import warnings
from collections.abc import Iterable
from typing import Any

from model_store.errors import InvalidArtifact

# ---------------------------------------------------------------------------------------------
# Allow-list
# ---------------------------------------------------------------------------------------------

# Packages whose globals a scikit-learn model legitimately references. joblib is NOT a prefix here:
# the only joblib name a model file needs is the array wrapper (TRUSTED_GLOBALS); the rest of joblib
# loads files (joblib.load is a pickle.load), spawns processes (Parallel) or writes caches (Memory).
DEFAULT_TRUSTED_MODULES: frozenset[str] = frozenset({"sklearn", "numpy", "scipy"})

JOBLIB_ARRAY_WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"

# Exact "module.qualname" names trusted outside the prefixes: constructors of plain data and the
# copyreg helpers the pickle protocol itself emits.
TRUSTED_GLOBALS: frozenset[str] = frozenset(
    {
        *(
            f"builtins.{name}"
            for name in (
                "list",
                "dict",
                "set",
                "frozenset",
                "tuple",
                "bytearray",
                "bytes",
                "int",
                "float",
                "complex",
                "bool",
                "str",
                "slice",
                "range",
                "object",
                "Ellipsis",
                "NotImplemented",
            )
        ),
        "collections.OrderedDict",
        "collections.defaultdict",
        "collections.deque",
        "collections.Counter",
        "copyreg._reconstructor",  # protocol 0/1 objects: base.__new__(cls) + optional base.__init__
        "copyreg.__newobj__",
        "copyreg.__newobj_ex__",
        "datetime.date",
        "datetime.time",
        "datetime.datetime",
        "datetime.timedelta",
        "datetime.timezone",
        "decimal.Decimal",
        # joblib replaces every ndarray by this inert record and writes the raw bytes after it.
        # NOT trusted: joblib.numpy_pickle.NDArrayWrapper / ZNDArrayWrapper (joblib < 0.10): they
        # make joblib open *other* files by a name taken from the pickle, with np.load(allow_pickle).
        JOBLIB_ARRAY_WRAPPER,
    }
)

# Globals trusted only with specific literal arguments (checked by the scan, enforced by shims in
# RestrictedUnpickler). Both are emitted by the standard pickler: type(None) for NoneType, and
# _codecs.encode(text, "latin1") for every bytes object in protocols 0-2 (so every numpy array).
_ARGUMENT_CHECKED_GLOBALS = frozenset({"builtins.type", "_codecs.encode"})

# ---------------------------------------------------------------------------------------------
# Deny-list: applies on top of the prefixes (default and extra); a deny always wins.
# ---------------------------------------------------------------------------------------------

# Dotted prefixes of "module.qualname" (after numpy.core -> numpy._core). Each entry reads or writes
# files, runs processes/code, imports names chosen by the data, or touches memory/process state.
_DENIED_PREFIXES: frozenset[str] = frozenset(
    {
        # Never trusted even if an operator lists them in MAAS_TRUSTED_MODULES.
        "os",
        "posix",
        "nt",
        "posixpath",
        "ntpath",
        "subprocess",
        "sys",
        "builtins",
        "importlib",
        "runpy",
        "pickle",
        "_pickle",
        "cPickle",
        "pickletools",
        "marshal",
        "shutil",
        "socket",
        "ctypes",
        "_ctypes",
        "functools",
        "operator",
        "_operator",
        "codecs",
        "_codecs",
        "io",
        "_io",
        "code",
        "codeop",
        "pty",
        "platform",
        "tempfile",
        "pathlib",
        "glob",
        "inspect",
        "types",
        "threading",
        "_thread",
        "multiprocessing",
        "concurrent",
        "asyncio",
        "signal",
        "gc",
        "webbrowser",
        "urllib",
        "http",
        "ftplib",
        "smtplib",
        "ssl",
        "select",
        "selectors",
        "zipimport",
        "pkgutil",
        "site",
        "sysconfig",
        "shelve",
        "dbm",
        "copy",
        "weakref",
        "atexit",
        "faulthandler",
        "resource",
        "fcntl",
        "mmap",
        "tarfile",
        "zipfile",
        "logging",
        "dill",
        "cloudpickle",
        "joblib",
        "skops",
        "pandas.io",
        "pandas.read_pickle",
        # numpy: file I/O, pickle-enabled loaders, memory views on arbitrary buffers, build/test tools.
        "numpy.load",
        "numpy.save",
        "numpy.savez",
        "numpy.savez_compressed",
        "numpy.savetxt",
        "numpy.loadtxt",
        "numpy.genfromtxt",
        "numpy.fromfile",
        "numpy.fromregex",
        "numpy.memmap",
        "numpy.DataSource",
        "numpy.lib.npyio",
        "numpy.lib._npyio_impl",
        "numpy.lib.format",
        "numpy.lib._format_impl",
        "numpy.lib._datasource",
        "numpy.lib._iotools",
        "numpy.lib.utils",
        "numpy.lib._utils_impl",
        "numpy.lib.stride_tricks",
        "numpy.lib._stride_tricks_impl",
        "numpy.f2py",
        "numpy.distutils",
        "numpy.ctypeslib",
        "numpy.testing",
        "numpy._pytesttester",
        "numpy.compat",
        "numpy._utils",
        "numpy.__config__",
        "numpy._core.memmap",
        "numpy._core._dtype_ctypes",
        "numpy.rec.fromfile",
        "numpy._core.records.fromfile",
        "numpy.ma.core.dump",
        "numpy.ma.core.load",
        "numpy.random.seed",
        "numpy.random.set_state",
        "numpy.random.mtrand.seed",
        "numpy.random.mtrand.set_state",
        "numpy.lookfor",
        "numpy.info",
        "numpy.show_config",
        "numpy.show_runtime",
        "numpy.test",
        "numpy._core.overrides",
        # scipy: file formats, downloads, raw C callbacks, source-generating decorators.
        "scipy.io",
        "scipy.datasets",
        "scipy.misc",
        "scipy.weave",
        "scipy.LowLevelCallable",
        "scipy._lib._ccallback",
        "scipy._lib._testutils",
        "scipy._lib.decorator",
        "scipy._lib._pep440",
        "scipy.sparse.load_npz",
        "scipy.sparse.save_npz",
        "scipy.sparse._matrix_io",
        # sklearn: downloads/file readers, test helpers, joblib re-exports, process pools, global config.
        "sklearn.datasets",
        "sklearn.utils._testing",
        "sklearn.utils.estimator_checks",
        "sklearn.utils._joblib",
        "sklearn.utils.parallel",
        "sklearn.utils.discovery",
        "sklearn.utils._show_versions",
        "sklearn._config",
        "sklearn.set_config",
        "sklearn.config_context",
        "sklearn.externals",
        "sklearn.utils.fixes.threadpool_limits",
        "sklearn.utils._array_api.get_namespace",
        "sklearn.utils.validation.check_memory",
        # Gadgets found in the trusted packages: each imports, execs, spawns or listens on what its
        # arguments or state name (tests/estimators/malicious.py proves each one live).
        "scipy._lib._uarray",  # unpickle_function(module, qualname) imports anything
        "scipy._lib.array_api_compat._internal",  # clone_module(name) imports anything
        "scipy._lib.deprecation",
        "scipy._lib._tmpdirs",
        "scipy._lib.pyprima.common.message",
        "scipy._lib._util.MapWrapper",  # MapWrapper(n) starts a process pool
        "scipy.optimize._nonlin._nonlin_wrapper",  # formats its name argument into exec'd source
        "scipy.optimize._shgo.SHGO",
        "scipy.optimize._differentialevolution.DifferentialEvolutionSolver",
        "scipy.stats._distn_infrastructure",  # rv_generic.__setstate__ execs _parse_arg_template
        "numpy._core.function_base.add_newdoc",
        "numpy.lib.add_newdoc",  # __import__(place)
        "numpy.ma.mrecords.fromtextfile",
        "sklearn.callback",  # ScoringMonitor.__setstate__ opens a socket listener and a thread
    }
)

# Classes that no model holds and whose construction or unpickling runs code named by the data:
# a class of the trusted packages (or of MAAS_TRUSTED_MODULES) deriving from one is refused.
_DENIED_BASES: frozenset[str] = frozenset(
    {
        "scipy.stats._distn_infrastructure.rv_generic",  # __setstate__ execs a string of its state
        "threading.Thread",
        "multiprocessing.process.BaseProcess",
        "subprocess.Popen",
        "socket.socket",
        "_io._IOBase",
        "io.IOBase",
        "os.PathLike",
        "pathlib.PurePath",
    }
)

# Functions a pickle may call while it loads: the reconstructors the standard, numpy, scipy and
# scikit-learn picklers emit. Compared by identity after import, so every spelling of a name
# (numpy.core vs numpy._core) is the same entry. Anything else called must be a class (see
# refusal's CALLED role); plain functions may only be stored, and only the safe ones.
_RECONSTRUCTORS: tuple[str, ...] = (
    "copyreg._reconstructor",
    "copyreg.__newobj__",
    "copyreg.__newobj_ex__",
    "numpy._core.multiarray._reconstruct",
    "numpy._core.multiarray.scalar",
    "numpy._core.numeric._frombuffer",
    "numpy.ma.core._mareconstruct",
    "numpy.ma.mrecords._mrreconstruct",
    "numpy.random._pickle.__bit_generator_ctor",
    "numpy.random._pickle.__generator_ctor",
    "numpy.random._pickle.__randomstate_ctor",
    "sklearn.metrics._dist_metrics.newObj",  # newObj(cls) is cls.__new__(cls)
    "sklearn.neighbors._kd_tree.newObj",
    "sklearn.neighbors._ball_tree.newObj",
)

# Reconstructors that call what they are given (bit_generator_ctor(name), bit_generator_class()):
# globals among their arguments are called too.
_CALLING_RECONSTRUCTORS = frozenset(
    {
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random._pickle.__generator_ctor",
        "numpy.random._pickle.__randomstate_ctor",
    }
)

# Tokens of module components denied below the default packages (test suites, file I/O, ctypes).
_DENIED_MODULE_TOKENS = frozenset(
    {
        "test",
        "tests",
        "testing",
        "testutils",
        "conftest",
        "pytesttester",
        "f2py",
        "distutils",
        "ctypes",
        "ctype",
        "ctypeslib",
        "npyio",
        "iotools",
        "datasource",
        "datasets",
        "io",
        "joblib",
        "parallel",
        "stride",
    }
)

# Tokens of qualname components (split on "_" and camelCase) denied in every prefix-trusted name:
# the verbs of file/process/code/import access. Cheap insurance against re-exports such as
# sklearn.utils.validation.joblib or a future numpy.foo.load_something.
_DENIED_NAME_TOKENS = frozenset(
    {
        "load",
        "loads",
        "loadtxt",
        "loadmat",
        "save",
        "savez",
        "savetxt",
        "savemat",
        "dump",
        "dumps",
        "open",
        "popen",
        "fopen",
        "system",
        "spawn",
        "spawnv",
        "exec",
        "execfile",
        "execv",
        "eval",
        "compile",
        "import",
        "fetch",
        "download",
        "fromfile",
        "tofile",
        "fromregex",
        "genfromtxt",
        "memmap",
        "getattr",
        "setattr",
        "delattr",
        "globals",
        "locals",
        "builtins",
        "subprocess",
        "os",
        "sys",
        "ctypes",
        "ctype",
        "ctypeslib",
        "dlopen",
        "library",
        "marshal",
        "shell",
        "socket",
        "url",
        "urlopen",
        "urlretrieve",
        "request",
        "requests",
        "tempfile",
        "mkstemp",
        "mkdtemp",
        "remove",
        "unlink",
        "rmtree",
        "rename",
        "chmod",
        "chown",
        "makedirs",
        "mkdir",
        "write",
        "read",
        "parallel",
        "delayed",
        "memory",
        "config",
        "seterr",
        "seterrcall",
        "setbufsize",
        "printoptions",
        "strided",
        "namespace",
        "callable",
        "exit",
        "abort",
        "kill",
        "fork",
        "joblib",
        "pickle",
        "unpickler",
        "pickler",
        "breakpoint",
    }
)

# Exact qualname components denied anywhere in a prefix-trusted name.
_DENIED_NAME_COMPONENTS = frozenset(
    {
        "_ufunc_reconstruct",  # numpy.core._ufunc_reconstruct(module, name): __import__ + getattr
        "DataSource",
        "NpzFile",
        "LowLevelCallable",
        "as_strided",
        "lookfor",
        "safe_eval",
        "who",
        "info",
        "source",
        "test",
        "PytestTester",
        "seed",
        "set_state",
        "np",
        "sp",
        "pd",
        "numpy",
        "scipy",
        "sklearn",
        "pandas",
    }
)

# String literals that only serve to inject protocol attributes into instances (e.g. a dict state
# giving an object an __array_interface__ pointing at arbitrary memory). No model needs them.
_INJECTION_STRINGS = frozenset(
    {
        "__class__",
        "__dict__",
        "__getattr__",
        "__getattribute__",
        "__setattr__",
        "__delattr__",
        "__reduce__",
        "__reduce_ex__",
        "__setstate__",
        "__getstate__",
        "__init__",
        "__new__",
        "__call__",
        "__del__",
        "__globals__",
        "__builtins__",
        "__code__",
        "__import__",
        "__subclasses__",
        "__bases__",
        "__mro__",
        "__loader__",
        "__spec__",
        "__dlpack__",
        "__buffer__",
        "__fspath__",
        "__get__",
        "__set__",
        "__set_name__",
        "__init_subclass__",
    }
)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_TOKENS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def _under(name: str, prefix: str) -> bool:
    """True when `name` is `prefix` or lies below it on a dotted boundary ("foo" -> "foo.x", not "foobar")."""
    return name == prefix or name.startswith(prefix + ".")


def _normalize(name: str) -> str:
    # numpy 2 renamed numpy.core to numpy._core and keeps numpy.core as an alias: deny both spellings.
    if _under(name, "numpy.core"):
        return "numpy._core" + name[len("numpy.core") :]
    return name


def _tokens(component: str) -> list[str]:
    return [t.lower() for t in _TOKENS.findall(component)]


def _is_dunder(component: str) -> bool:
    return len(component) > 4 and component.startswith("__") and component.endswith("__")


def _parse_prefixes(extra_trusted_modules: Iterable[str]) -> frozenset[str]:
    if isinstance(extra_trusted_modules, str):  # a lone "foo" would otherwise iterate as "f", "o", "o"
        extra_trusted_modules = [extra_trusted_modules]
    prefixes = set()
    for prefix in extra_trusted_modules:
        prefix = prefix.strip()
        if not prefix:
            continue
        if not _DOTTED.match(prefix):
            raise ValueError(f"Not a module name: {prefix!r}")
        prefixes.add(prefix)
    return frozenset(prefixes)


def is_trusted_global(module: str, name: str, extra_trusted_modules: Iterable[str] = ()) -> bool:
    """True when the global `module`.`name` may be imported by an unpickler.

    Pass names as the unpickler resolves them (after Python 2 name mapping). `extra_trusted_modules`
    adds module prefixes ("foo" trusts "foo" and "foo.*", never "foobar"); the deny-list still wins.
    Globals trusted only with specific arguments (builtins.type, _codecs.encode) answer False here.
    """
    return _is_trusted(module, name, _parse_prefixes(extra_trusted_modules))


@functools.lru_cache(maxsize=4096)
def _is_trusted(module: str, name: str, extra: frozenset[str]) -> bool:
    if not (_DOTTED.match(module) and _DOTTED.match(name)):
        return False
    full = f"{module}.{name}"
    if full in TRUSTED_GLOBALS:
        return True
    normalized = _normalize(full)
    if not any(_under(normalized, p) or _under(full, p) for p in DEFAULT_TRUSTED_MODULES | extra):
        return False
    if any(_under(normalized, p) for p in _DENIED_PREFIXES):
        return False
    if module.split(".")[0] in DEFAULT_TRUSTED_MODULES:
        for component in _normalize(module).split("."):
            if _DENIED_MODULE_TOKENS.intersection(_tokens(component)):
                return False
    parts = name.split(".")
    for index, component in enumerate(parts):
        if _is_dunder(component) or component in _DENIED_NAME_COMPONENTS:
            return False
        if _DENIED_NAME_TOKENS.intersection(_tokens(component)):
            return False
        # Protocol 4 resolves dotted qualnames attribute by attribute, which can walk from a trusted
        # module into anything it imported (sklearn.os.system). Only walk through class-like names.
        if index < len(parts) - 1 and not component.lstrip("_")[:1].isupper():
            return False
    return True


def _compat_name(module: str, name: str) -> tuple[str, str]:
    """The names Python 3 resolves for a Python 2 name (what pickle's fix_imports does for protocol < 3)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    if module in _compat_pickle.IMPORT_MAPPING:
        return _compat_pickle.IMPORT_MAPPING[module], name
    return module, name


def _label(module: str, name: str) -> str:
    full = f"{module}.{name}"
    if _DOTTED.match(module) and _DOTTED.match(name) and len(full) <= 200:
        return full
    return f"<invalid global name {full[:80]!r}>"


def _resolve(module: str, name: str) -> Any:
    """The object an unpickler resolves for a trusted name; InvalidArtifact when it does not exist here."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. numpy.core's DeprecationWarning; the load reports them
            __import__(module)
            obj: Any = sys.modules[module]
            for part in name.split("."):
                obj = getattr(obj, part)
    except Exception:  # noqa: BLE001 - importing a module can raise anything
        raise InvalidArtifact(
            f"The artifact needs {module}.{name}, which the libraries installed here do not provide."
        ) from None
    return obj


def _resolve_label(label: str) -> tuple[str, Any]:
    """(module, object) for a dotted label whose module/qualname split is unknown (skops' names)."""
    parts = label.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:cut])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                __import__(module)
        except ImportError:
            continue
        except Exception:  # noqa: BLE001 - importing a module can raise anything
            break
        return module, _resolve(module, ".".join(parts[cut:]))
    raise InvalidArtifact(f"The artifact needs {label}, which the libraries installed here do not provide.")


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _denied_base(cls: type) -> bool:
    return any(_qualified(base) in _DENIED_BASES for base in cls.__mro__)


@functools.lru_cache(maxsize=1)
def _reconstructor_ids() -> frozenset[int]:
    ids = set()
    for full in _RECONSTRUCTORS:
        module, _, name = full.rpartition(".")
        try:
            ids.add(id(_resolve(module, name)))
        except InvalidArtifact:  # e.g. another numpy's layout: that spelling cannot appear here
            continue
    return frozenset(ids)


def _is_reconstructor(obj: Any) -> bool:
    if id(obj) in _reconstructor_ids():
        return True
    # Cython's generated __pyx_unpickle_<Class>(type, checksum, state): cls.__new__ plus cdef fields.
    name = getattr(obj, "__name__", "")
    return isinstance(name, str) and name.startswith("__pyx_unpickle_") and not isinstance(obj, types.FunctionType)


def _from_extra_module(module: str, extra: frozenset[str]) -> bool:
    """Trusted through MAAS_TRUSTED_MODULES only: the operator vouches for that code, calls included."""
    normalized = _normalize(module)
    if any(_under(normalized, p) for p in DEFAULT_TRUSTED_MODULES):
        return False
    return any(_under(module, p) for p in extra)


def _constructor_is_compiled(cls: type) -> bool:
    """True when calling `cls` runs no Python code of its package (C or Cython __new__/__init__).

    Calling a class with Python __init__ runs that code with the pickle's arguments (scipy's
    MapWrapper(n) starts n processes); the standard pickler never calls such a class.
    """
    if _python_function(type(cls), "__call__"):
        return False
    return not (_python_function(cls, "__new__") or _python_function(cls, "__init__"))


def _python_function(cls: type, attr: str) -> bool:
    for klass in cls.__mro__:
        if attr in vars(klass):
            value = vars(klass)[attr]
            value = getattr(value, "__func__", value)  # staticmethod / classmethod
            return isinstance(value, types.FunctionType)
    return False


# ---------------------------------------------------------------------------------------------
# Judging objects, not names
# ---------------------------------------------------------------------------------------------

# Modules whose whole namespace is denied under any name: each member runs code, touches files,
# processes, memory or the interpreter, or calls what it is given (attrgetter, partial, reduce).
# Walked only once imported: a trusted module can only alias an object whose module it imported.
_DENIED_NAMESPACES: tuple[str, ...] = (
    "builtins",
    "operator",
    "_operator",
    "functools",
    "_functools",
    "os",
    "posix",
    "nt",
    "posixpath",
    "ntpath",
    "subprocess",
    "_posixsubprocess",
    "importlib",
    "importlib.util",
    "importlib.machinery",
    "importlib.abc",
    "importlib.resources",
    "importlib.metadata",
    "_imp",
    "runpy",
    "pickle",
    "_pickle",
    "pickletools",
    "marshal",
    "copy",
    "copyreg",
    "shelve",
    "ctypes",
    "_ctypes",
    "socket",
    "_socket",
    "ssl",
    "select",
    "selectors",
    "io",
    "_io",
    "codecs",
    "_codecs",
    "types",
    "sys",
    "inspect",
    "code",
    "codeop",
    "pty",
    "platform",
    "signal",
    "_signal",
    "gc",
    "weakref",
    "_weakref",
    "shutil",
    "pathlib",
    "tempfile",
    "glob",
    "threading",
    "_thread",
    "multiprocessing",
    "concurrent.futures",
    "asyncio",
    "atexit",
    "faulthandler",
    "resource",
    "fcntl",
    "mmap",
    "zipfile",
    "tarfile",
    "zlib",
    "bz2",
    "lzma",
    "gzip",
    "zipimport",
    "pkgutil",
    "site",
    "logging",
    "webbrowser",
    "urllib.request",
    "http.client",
    "ftplib",
    "smtplib",
    "pydoc",
    "dill",
    "cloudpickle",
    "joblib",
    "skops.io",
)

# Module objects an artifact may hold as values: none. A module reached under a trusted name
# (sklearn.utils.validation.np) hands the model code every attribute of that module.
_VALUE_MODULES: frozenset[str] = frozenset()

# Classes an artifact may hold as values (not instances of them): plain data types, as
# estimators' `dtype=` parameters and defaultdict factories store them (LightGBM's best_score is a
# defaultdict(OrderedDict)); numpy's scalar types (np.float64...) are added by is_value_class;
# ndarray is a masked array's `_baseclass`.
_VALUE_CLASSES: tuple[str, ...] = (
    "builtins.int",
    "builtins.float",
    "builtins.bool",
    "builtins.str",
    "builtins.bytes",
    "builtins.complex",
    "builtins.object",
    "builtins.list",
    "builtins.dict",
    "builtins.tuple",
    "builtins.set",
    "builtins.frozenset",
    "collections.OrderedDict",
    "numpy.ndarray",
    "numpy.ma.core.MaskedArray",
)

# Plain functions an artifact may hold as values, besides numpy's and scipy.special's ufuncs and the
# metrics scikit-learn's own scorers wrap (found in sklearn.metrics._scorer._SCORERS). These are the
# score functions of sklearn's univariate feature selectors (SelectKBest's default is f_classif):
# each computes statistics on the arrays it is given and nothing else.
_SAFE_FUNCTIONS: tuple[str, ...] = (
    "sklearn.feature_selection._univariate_selection.f_classif",
    "sklearn.feature_selection._univariate_selection.f_regression",
    "sklearn.feature_selection._univariate_selection.r_regression",
    "sklearn.feature_selection._univariate_selection.chi2",
    "sklearn.feature_selection._univariate_selection.f_oneway",
    "sklearn.feature_selection._mutual_info.mutual_info_classif",
    "sklearn.feature_selection._mutual_info.mutual_info_regression",
)

# Reconstructors whose first argument is a class they instantiate (cls.__new__(cls, ...)), and
# those that build an array of the class they are given (ndarray.__new__: uninitialised memory
# unless the shape is the (0,) numpy's own pickler writes; BUILD then fills in the real data).
_INSTANTIATING: tuple[str, ...] = (
    "copyreg._reconstructor",
    "copyreg.__newobj__",
    "copyreg.__newobj_ex__",
    "sklearn.metrics._dist_metrics.newObj",
    "sklearn.neighbors._kd_tree.newObj",
    "sklearn.neighbors._ball_tree.newObj",
)
# reconstructor -> (positions of the classes it builds arrays of, position of the shape argument)
_ARRAY_RECONSTRUCTORS: dict[str, tuple[tuple[int, ...], int]] = {
    "numpy._core.multiarray._reconstruct": ((0,), 1),
    "numpy.ma.core._mareconstruct": ((0, 1), 2),
    "numpy.ma.mrecords._mrreconstruct": ((0, 1), 2),
}

# What an artifact does with an object it references.
CALLED = "called"  # called with arguments from the file while it loads
INSTANTIATED = "instantiated"  # cls.__new__(cls, ...) (NEWOBJ, copyreg.__newobj__, newObj...)
ARRAY_BUILT = "array"  # the class of an array built by a numpy reconstructor with shape (0,)
STORED = "stored"  # kept as a value in the loaded object (model code may call it later)

_FUNCTION_TYPES: tuple[type, ...] = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.MethodWrapperType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
    types.GetSetDescriptorType,
    types.MemberDescriptorType,
    staticmethod,
    classmethod,
    property,
    functools.partial,
)
# Cython names its function type after the Cython version's module (_cython_3_2_5...).
_CYTHON_FUNCTION_TYPES = frozenset({"cython_function_or_method", "fused_cython_function", "_fused_cython_function"})


def _resolve_full(full: str) -> Any:
    module, _, name = full.rpartition(".")
    return _resolve(module, name)


def _identity_map(names: Iterable[str]) -> dict[int, tuple[str, Any]]:
    """id -> (name, object) for the names that exist here (another numpy may lack a spelling)."""
    found: dict[int, tuple[str, Any]] = {}
    for full in names:
        try:
            obj = _resolve_full(full)
        except InvalidArtifact:
            continue
        found[id(obj)] = (full, obj)  # the object is kept: its id stays its own
    return found


@functools.lru_cache(maxsize=1)
def _trusted_global_objects() -> dict[int, tuple[str, Any]]:
    return _identity_map(TRUSTED_GLOBALS)


@functools.lru_cache(maxsize=1)
def _value_class_objects() -> dict[int, tuple[str, Any]]:
    return _identity_map(_VALUE_CLASSES)


@functools.lru_cache(maxsize=1)
def _safe_function_objects() -> dict[int, tuple[str, Any]]:
    found = _identity_map(_SAFE_FUNCTIONS)
    try:
        from sklearn.metrics._scorer import _SCORERS
    except ImportError:  # another scikit-learn layout: only the explicit list then
        return found
    for scorer in _SCORERS.values():
        func = getattr(scorer, "_score_func", None)
        if isinstance(func, types.FunctionType) and _under(getattr(func, "__module__", ""), "sklearn.metrics"):
            found[id(func)] = (f"{func.__module__}.{func.__qualname__}", func)
    return found


@functools.lru_cache(maxsize=1)
def _instantiating_objects() -> dict[int, tuple[str, Any]]:
    return _identity_map(_INSTANTIATING)


@functools.lru_cache(maxsize=1)
def _array_reconstructor_objects() -> dict[int, tuple[str, Any]]:
    return _identity_map(_ARRAY_RECONSTRUCTORS)


def instantiates(obj: Any) -> bool:
    """True when calling `obj` instantiates the class in its first argument."""
    if id(obj) in _instantiating_objects():
        return True
    name = getattr(obj, "__name__", "")
    return isinstance(name, str) and name.startswith("__pyx_unpickle_") and not isinstance(obj, types.FunctionType)


def array_reconstructor(obj: Any) -> tuple[tuple[int, ...], int] | None:
    """(class positions, shape position) when `obj` is one of numpy's array reconstructors."""
    entry = _array_reconstructor_objects().get(id(obj))
    return None if entry is None else _ARRAY_RECONSTRUCTORS[entry[0]]


def calls_its_arguments(obj: Any) -> bool:
    """True for numpy's random ctors: they call the globals handed to them."""
    return id(obj) in _identity_map_cached(tuple(sorted(_CALLING_RECONSTRUCTORS)))


@functools.lru_cache(maxsize=4)
def _identity_map_cached(names: tuple[str, ...]) -> dict[int, tuple[str, Any]]:
    return _identity_map(names)


def denied_objects() -> dict[int, tuple[str, Any]]:
    """id -> (name, object) of every denied object reachable in the imported denied modules."""
    return _denied_for(tuple(name for name in _DENIED_NAMESPACES if name in sys.modules))


@functools.lru_cache(maxsize=4)
def _denied_for(present: tuple[str, ...]) -> dict[int, tuple[str, Any]]:
    # The trusted globals (builtins.int, copyreg.__newobj__...) are the exceptions, by identity.
    exempt = _trusted_global_objects()
    denied: dict[int, tuple[str, Any]] = {}
    for module_name in present:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        denied.setdefault(id(module), (module_name, module))
        for attr, value in list(vars(module).items()):
            if id(value) in exempt:
                continue
            if isinstance(value, types.ModuleType) or callable(value):
                denied.setdefault(id(value), (f"{module_name}.{attr}", value))
    return denied


def denied_name(obj: Any) -> str | None:
    """The denied object `obj` is (an alias of), or None."""
    entry = denied_objects().get(id(obj))
    return None if entry is None or entry[1] is not obj else entry[0]


def is_function_like(obj: Any) -> bool:
    """Functions, methods, descriptors, partials, ufuncs and numpy's dispatchers: code, not data."""
    if isinstance(obj, type):
        return False
    if isinstance(obj, _FUNCTION_TYPES) or _is_ufunc(obj) or _is_array_function(obj):
        return True
    return type(obj).__name__ in _CYTHON_FUNCTION_TYPES or hasattr(obj, "__code__")


def _is_ufunc(obj: Any) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(obj, np.ufunc)


def _is_array_function(obj: Any) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(obj, type(np.sum))


def _ufunc_home(obj: Any) -> tuple[str, str] | None:
    """numpy.<name> or scipy.special.<name> when `obj` is that module's ufunc (np.frompyfunc makes
    ufuncs around any Python function: only the packages' own count)."""
    name = getattr(obj, "__name__", None)
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        return None
    import numpy

    if getattr(numpy, name, None) is obj:
        return "numpy", name
    if "scipy" in sys.modules:
        try:
            import scipy.special
        except ImportError:
            return None
        if getattr(scipy.special, name, None) is obj:
            return "scipy.special", name
    return None


def canonical_home(obj: Any) -> tuple[str, str] | None:
    """(module, qualname) where a class or function says it lives; None when it does not say."""
    if _is_ufunc(obj):
        return _ufunc_home(obj)
    if not (isinstance(obj, type) or is_function_like(obj)):
        return None
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str):
        return module, qualname
    return None


def is_safe_function(obj: Any) -> bool:
    """A function an artifact may store: a numpy/scipy ufunc, or one of _SAFE_FUNCTIONS."""
    if _is_ufunc(obj):
        return _ufunc_home(obj) is not None
    return id(obj) in _safe_function_objects()


def is_value_class(cls: Any) -> bool:
    """A class an artifact may store as a value: plain data types and numpy's scalar types."""
    if not isinstance(cls, type):
        return False
    if id(cls) in _value_class_objects():
        return True
    np = sys.modules.get("numpy")
    if np is not None and issubclass(cls, np.generic):
        home = canonical_home(cls)
        return home is not None and _under(home[0], "numpy") and getattr(np, home[1], None) is cls
    return False


def is_array_class(cls: Any) -> bool:
    np = sys.modules.get("numpy")
    return isinstance(cls, type) and np is not None and issubclass(cls, np.ndarray)


def _extra_home(home: tuple[str, str] | None, extra: frozenset[str]) -> bool:
    """Lives in a MAAS_TRUSTED_MODULES package: the operator vouches for that code."""
    return home is not None and _from_extra_module(home[0], extra) and _is_trusted(home[0], home[1], extra)


def refusal(obj: Any, extra: frozenset[str], roles: Iterable[str] = ()) -> str | None:
    """Why an artifact may not use `obj` in these `roles`; None when it may.

    Every object: not a module, not a denied object under any name, a canonical home that passes
    the name policy (or one of TRUSTED_GLOBALS / the reconstructors, by identity), no denied base.
    """
    if isinstance(obj, types.ModuleType):
        return None if obj.__name__ in _VALUE_MODULES else f"the module {obj.__name__}"
    denied = denied_name(obj)
    if denied is not None:
        return f"an alias of {denied}"
    home = canonical_home(obj)
    known = id(obj) in _trusted_global_objects() or _is_reconstructor(obj) or is_safe_function(obj)
    if not known:
        if isinstance(obj, type) or is_function_like(obj):
            if home is None:
                return "an object that does not say where it lives"
            if not _is_trusted(home[0], home[1], extra):
                return f"{home[0]}.{home[1]}, which is outside the allow-list"
        else:
            # an instance at module level: judged by its class
            reason = refusal(type(obj), extra)
            if reason is not None:
                return f"an instance of {_qualified(type(obj))} ({reason})"
    if isinstance(obj, type) and _denied_base(obj):
        return "a class deriving from a denied base"
    for role in roles:
        reason = _role_refusal(obj, role, home, extra)
        if reason is not None:
            return reason
    return None


def _role_refusal(obj: Any, role: str, home: tuple[str, str] | None, extra: frozenset[str]) -> str | None:
    vouched = id(obj) in _trusted_global_objects() or _extra_home(home, extra)
    if role == CALLED:
        if is_array_class(obj):
            return "an array class called directly (uninitialised memory)"
        if vouched or _is_reconstructor(obj):
            return None
        if not isinstance(obj, type):
            return "called while loading, and not a class or a known reconstructor"
        if issubclass(obj, enum.Enum) or _constructor_is_compiled(obj):  # Enum(value) looks a member up
            return None
        return "a class whose constructor runs Python code, called while loading"
    if role == INSTANTIATED:
        if not isinstance(obj, type):
            return "instantiated, and not a class"
        if is_array_class(obj):
            return "an array class instantiated without data (uninitialised memory)"
        return None
    if role == ARRAY_BUILT:
        return None if is_array_class(obj) else "built as an array, and not an array class"
    if role == STORED:
        if isinstance(obj, type):
            return None if is_value_class(obj) or _extra_home(home, extra) else "a class stored as a value"
        if is_function_like(obj) or callable(obj):
            if is_safe_function(obj) or _extra_home(home, extra):
                return None
            return "a function stored as a value (not on the safe list)"
        return None
    raise ValueError(f"unknown role {role!r}")


def loaded_refusal(obj: Any, extra: frozenset[str]) -> str | None:
    """Why a loaded object graph may not hold `obj` (a value found in it); None when it may."""
    if isinstance(obj, (types.ModuleType, type)):
        return refusal(obj, extra, (STORED,))
    if is_function_like(obj):
        reason = refusal(obj, extra, (STORED,))
        return None if reason is None else f"a {type(obj).__name__} ({reason})"
    cls = type(obj)
    if id(cls) in _trusted_global_objects():
        return None
    reason = refusal(cls, extra)
    return None if reason is None else f"an instance of {_qualified(cls)} ({reason})"


def refused_globals(
    names: Iterable[str], extra_trusted_modules: Iterable[str] = (), called: Iterable[str] = ()
) -> list[str]:
    """The "module.name" labels among `names` a loader other than pickle (skops) must refuse.

    Each name must pass the name policy; then the object it resolves to is judged like a pickle
    global (refusal): by identity and canonical home, a class must not derive from a denied base,
    names in `called` (the loader calls them with arguments from the file) must be callable while
    loading, and any other function must be on the safe list (the loader stores it as a value).
    The modules of names that pass are imported (as loading would); raises InvalidArtifact when
    one of them does not exist here.
    """
    extra = _parse_prefixes(extra_trusted_modules)
    calls = set(called)
    refused = []
    for label in names:
        module, _, name = label.rpartition(".")
        if not module or not _is_trusted(module, name, extra):
            refused.append(label)
            continue
        _, obj = _resolve_label(label)
        roles = (CALLED,) if label in calls else () if isinstance(obj, type) else (STORED,)
        if refusal(obj, extra, roles) is not None:
            refused.append(label)
    return refused
