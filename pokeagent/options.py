"""Command-line options generated from config dataclasses: a knob is declared once, as a field.

    parser = argparse.ArgumentParser()
    add_options(parser, TrainConfig)          # --run-dir, --batch-size-per-gpu, ... --debug
    cfg = config_from(TrainConfig, parser.parse_args())

Each field becomes `--field-name`, typed from its annotation (`int`, `float`, `str`, `Path`, and
`X | None` as X; a `bool` is a switch), its help the docstring under the field plus its default.
Every option defaults to None, so that `config_from` keeps only what was given and the
dataclass's own defaults (and `__post_init__` checks) apply to the rest.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import textwrap
import types
import typing
from pathlib import Path

_SCALARS = (int, float, str, Path)


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (and of the dataclasses it extends)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # no source (an interactive or compiled class): no help text
            continue
        body = ast.parse(source).body[0].body
        for node, after in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _argument(annotation) -> dict:
    """add_argument's keywords for a field of this type (`X | None` as X)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            annotation = args[0]
    if annotation is bool:
        return {"action": "store_const", "const": True}
    if annotation in _SCALARS:
        return {"type": annotation}
    raise TypeError(f"no command-line option for a field of type {annotation!r}")


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    skip: tuple[str, ...] = (),
    help_from: tuple[type, ...] = (),
) -> None:
    """`--field-name` for every field of dataclass `cls` but those in `skip`. A field without a
    docstring of its own takes the one of the same field in a `help_from` dataclass."""
    hints = typing.get_type_hints(cls)
    docs: dict[str, str] = {}
    for other in (*help_from, cls):
        docs |= field_docs(other)
    inherited = {
        f.name
        for base in cls.__mro__[1:]
        if dataclasses.is_dataclass(base)
        for f in dataclasses.fields(base)
    }
    # A class's own fields first, then those it extends (a run's knobs before the loss's).
    ordered = sorted(dataclasses.fields(cls), key=lambda f: f.name in inherited)
    for field in ordered:
        if field.name in skip or not field.init:
            continue
        keywords = _argument(hints[field.name])
        default = None if field.default is dataclasses.MISSING else field.default
        text = docs.get(field.name, "")
        if default is not None and default is not False and default != "":
            text = f"{text} (default {default})" if text else f"(default {default})"
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            default=None,
            help=text.replace("%", "%%"),  # argparse %-formats help strings
            **keywords,
        )


def given(cls: type, args: argparse.Namespace) -> dict:
    """The fields of `cls` that the command line gave (not None)."""
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if getattr(args, f.name, None) is not None
    }


def config_from(cls: type, args: argparse.Namespace):
    """`cls` from the options given (its own defaults for the others)."""
    return cls(**given(cls, args))
