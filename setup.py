"""Install pokeagent: `pip install -e ".[dev]"` (scripts/setup.sh does it for you).

torch is listed as a range, not a pin: scripts/setup.sh installs the pinned torch first
(`torch==2.13.0`, or $POKEAGENT_TORCH_SPEC), and a range that the installed torch satisfies
makes pip install nothing more. An unpinned torch resolved here would drag in GBs of CUDA
packages on a CPU machine.

The parser's hot path is compiled with mypyc when the package is built (see
pokeagent/native.py): `mypy` is a build requirement (pyproject.toml), the extension modules are
optional (no C compiler: the package installs uncompiled, same behaviour, slower), and
POKEAGENT_PURE_PYTHON=1 at install time builds none.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
_BUILD_COMMANDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install"}


def _native_extensions() -> list:
    """mypyc extension modules for pokeagent.native.COMPILED_MODULES, or [] (pure Python)."""
    if not _BUILD_COMMANDS & set(sys.argv[1:]):
        return []  # metadata only: egg_info / dist_info
    spec = importlib.util.spec_from_file_location("_pokeagent_native", ROOT / "pokeagent/native.py")
    native = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(native)
    fingerprint = ROOT / "pokeagent" / native.FINGERPRINT_FILE
    fingerprint.unlink(missing_ok=True)
    if os.environ.get(native.PURE_ENV, "") not in ("", "0"):
        print(f"pokeagent: {native.PURE_ENV} is set, building no compiled modules")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("pokeagent: mypy is not installed, building no compiled modules (slower parser)")
        return []
    sources = [str(native.source_path(m).relative_to(ROOT)) for m in native.COMPILED_MODULES]
    try:
        # One group: the modules call each other as C functions, through one shared library.
        # Packages missing from the build environment (numpy...) are typed as Any. No mypy
        # cache: with one, a rebuild of unchanged sources generates no C for the group, and the
        # shared library would be linked empty (an import error at run time).
        extensions = mypycify(
            ["--ignore-missing-imports", "--cache-dir", os.devnull, *sources],
            opt_level="3",
            separate=[(sources, native.GROUP)],
        )
    except (Exception, SystemExit) as error:  # mypyc prints the type errors, then exits
        if os.environ.get(native.REQUIRE_ENV, "") not in ("", "0"):
            raise
        print(f"pokeagent: mypyc failed ({error!r}), building no compiled modules (slower parser)")
        return []
    for extension in extensions:
        extension.optional = True  # no C compiler: install uncompiled rather than fail
    fingerprint.write_text(json.dumps(native.fingerprints(), indent=1) + "\n")
    return extensions


setup(
    name="pokeagent",
    version="0.1.0",
    description="Train a transformer Pokémon Showdown agent on real replays with DeepSpeed.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["pokeagent", "pokeagent.*"]),
    package_data={"pokeagent.showdown": ["*.js", "data/*.json.gz"], "pokeagent": ["*.json"]},
    ext_modules=_native_extensions(),
    install_requires=[
        "torch>=2.4",
        "deepspeed>=0.19.8,<0.20",
        "webdataset>=1.0.2,<2",
        "huggingface_hub>=2.4",  # pokeagent.data.hub uses its httpx2 session and errors
        "tensorboard>=2.16",
        "poke-env==0.16.1",
        "numpy>=1.26",
        "tqdm>=4.66",
        "psutil>=5.9",
        "safetensors>=0.4",
        "pyarrow>=14",
        "matplotlib>=3.7",
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "pytest-xdist>=3.5", "ruff==0.17.6"],
    },
    entry_points={"console_scripts": ["pokeagent=pokeagent.cli:main"]},
)
