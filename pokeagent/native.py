"""The parser's compiled core: which modules mypyc compiles, and the guard against a stale build.

Parsing a replay into two encoded trajectories is pure Python, written to be compiled: at
install time `setup.py` compiles `COMPILED_MODULES` with mypyc (the same sources, typed; about
3x faster) into extension modules beside them, and records each source's sha256 in
`FINGERPRINT_FILE`. Python prefers an extension module over the `.py` of the same name, so an
edit to one of these sources would silently keep running the old compiled code; `guard()`
(run when `pokeagent` is imported) checks the fingerprints and, when a source changed since the
build, a module is missing its build, the shared library does not load, or
`POKEAGENT_PURE_PYTHON=1` is set, loads all of them from source instead (all or none: compiled
modules call each other directly). A stale or broken build also warns: rebuild with
`pip install -e .` (or `scripts/setup.sh`).

Without a C compiler or mypy at install time the package installs uncompiled and runs the same
code, slower. `pokeagent bench parse` prints which one it measured.

Rules for the compiled modules (the other modules point here):
1. **`__init__` written out.** Hot classes are dataclasses (fields, defaults and docs in one
   place), but write their `__init__` by hand: a dataclass-generated `__init__` stays
   interpreted even where the module is compiled, and a replay makes hundreds of these objects.
   Adding a field: declare it with its default *and* set it in `__init__`;
   `tests/test_native.py::test_written_out_inits_match_the_dataclass_fields` fails otherwise.
2. **`__reduce__`.** A compiled class cannot be pickled or copied on its own: give it
   `__reduce__` via `reduce_dataclass` (the first `n_args` fields go to `__init__`), and keep
   that count right when `__init__`'s positional arguments change (`test_parser_objects_pickle_
   and_copy`).
3. **`Final` constants.** Module constants are `Final` (inlined where compiled); shared
   vocabularies (boost names, statuses, volatiles) live once in `pokeagent/showdown/vocab.py`.
4. **No generic calls on the hot path.** `in` and `del` rather than `dict.pop(key, None)`,
   `startswith` with one string rather than a tuple, attributes by name rather than `getattr`:
   each is a slow generic call where compiled.
5. **Imports.** They import only each other, the dex and numpy at run time; a new compiled module
   goes into `COMPILED_MODULES` (all or none run compiled).
6. **Edits.** After an edit, `pip install -e .` rebuilds; until then `guard()` runs the sources.
   The compiled build must give the sources' output to the byte (`test_compiled_parser_equals_
   pure_python`), and a change of labels or masks bumps `parse.PARSER_VERSION`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

COMPILED_MODULES = (
    "pokeagent.showdown.vocab",
    "pokeagent.showdown.actions",
    "pokeagent.showdown.protocol",
    "pokeagent.showdown.state",
    "pokeagent.data.hindsight",
    "pokeagent.data.encode",
    "pokeagent.data.parse",
)
"""The hot path of `parse_replay` and the live agent's encoder (they import only each other,
the dex and numpy at run time)."""

GROUP = "pokeagent_native"
"""mypyc compiles the modules as one group: their code is in one shared library, a top-level
module named `SHARED_LIBRARY`, beside which each module is a small extension module."""
SHARED_LIBRARY = GROUP + "__mypyc"

PURE_ENV = "POKEAGENT_PURE_PYTHON"
"""Set to 1 to run the pure-Python sources even where a compiled build exists (at install time:
build none)."""

REQUIRE_ENV = "POKEAGENT_REQUIRE_COMPILED"
"""Set to 1 (CI does) to make a failed compile fail the install, and the tests check that the
compiled build is the one running."""

FINGERPRINT_FILE = "native_build.json"
"""Written by setup.py beside this module: {module: sha256 of the source it was built from}."""

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
_mode = "pure"


def source_path(module: str) -> Path:
    return _PACKAGE_ROOT.joinpath(*module.split(".")).with_suffix(".py")


def fingerprints() -> dict[str, str]:
    """sha256 of each compiled module's source as it is now."""
    return {m: hashlib.sha256(source_path(m).read_bytes()).hexdigest() for m in COMPILED_MODULES}


def _built(module: str) -> bool:
    path = source_path(module)
    return any(
        path.with_name(path.stem + suffix).exists()
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
    )


def mode() -> str:
    """'compiled' when the compiled modules run, else 'pure (<why>)'."""
    return _mode


def needs_rebuild() -> bool:
    """A compiled build exists but does not match the sources (scripts/setup.sh rebuilds)."""
    return _mode.startswith(("pure (sources changed", "pure (incomplete", "pure (broken"))


def guard() -> None:
    """Decide once per process whether the compiled build may run; if not, load from source."""
    global _mode
    built = [m for m in COMPILED_MODULES if _built(m)]
    if not built:
        _mode = "pure (no compiled build)"
        return
    reason = None
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        reason = f"{PURE_ENV} is set"
    elif len(built) < len(COMPILED_MODULES):
        reason = "incomplete build: " + ", ".join(sorted(set(COMPILED_MODULES) - set(built)))
    elif importlib.util.find_spec(SHARED_LIBRARY) is None:
        reason = f"incomplete build: {SHARED_LIBRARY}"
    else:
        try:
            recorded = json.loads((Path(__file__).parent / FINGERPRINT_FILE).read_text())
        except (OSError, ValueError):
            recorded = None
        changed = [m for m, digest in fingerprints().items() if (recorded or {}).get(m) != digest]
        if changed:
            reason = (
                "sources changed since the build: " + ", ".join(changed)
                if recorded is not None
                else f"sources changed since the build: {FINGERPRINT_FILE} is missing"
            )
            warnings.warn(
                f"pokeagent: {reason}; running them uncompiled (slower). Rebuild with "
                "`pip install -e .` (or scripts/setup.sh).",
                stacklevel=2,
            )
    if reason is None:
        try:  # a library that fails to load (linked empty, wrong platform) must not run either
            importlib.import_module(SHARED_LIBRARY)
        except ImportError as error:
            reason = f"broken build: {SHARED_LIBRARY} does not load ({error})"
            warnings.warn(
                f"pokeagent: {reason}; running the parser uncompiled (slower). Rebuild with "
                "`pip install -e .` (or scripts/setup.sh).",
                stacklevel=2,
            )
    if reason is None:
        _mode = "compiled"
        return
    _mode = f"pure ({reason})"
    if not any(isinstance(f, _SourceFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst())


def reduce_fields(obj: Any, names: tuple[str, ...], n_args: int) -> tuple:
    """`__reduce__` for a class of a compiled module, which pickle and copy cannot rebuild on
    their own (a compiled class is only ever made through its `__init__`): the first `n_args`
    of `names` go to `__init__`, the rest are set after it."""
    values = [getattr(obj, name) for name in names]
    return rebuild, (
        type(obj),
        tuple(values[:n_args]),
        dict(zip(names[n_args:], values[n_args:], strict=True)),
    )


def reduce_dataclass(obj: Any, n_args: int = -1) -> tuple:
    """`reduce_fields` over a dataclass's fields, in declaration order (`n_args` -1: all of
    them go to `__init__`)."""
    names = tuple(f.name for f in dataclasses.fields(obj))
    return reduce_fields(obj, names, len(names) if n_args < 0 else n_args)


def rebuild(cls: type, args: tuple, state: dict[str, Any]) -> Any:
    """The object `reduce_fields` took apart."""
    obj = cls(*args)
    for name, value in state.items():
        setattr(obj, name, value)
    return obj


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Finds the compiled modules' `.py` sources, ahead of their extension modules."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in COMPILED_MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname))
