"""Dataclass -> argparse flags, with help text from each field's docstring (STYLE P3).

Flags default to "not given" so that a preset's value stands unless the user overrides it;
`--help` shows the dataclass default. `--n-steps 100` sets field `n_steps`.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from functools import cache
from typing import Any

from monosemantic.errors import UserError


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings: the string literal right after each annotated field.

    Inherited fields keep their base dataclass's docstring; a class that re-declares a field wins."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_own_field_docs(klass))
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    class_def = tree.body[0]
    assert isinstance(class_def, ast.ClassDef)  # the source of a class parses to its one ClassDef
    body = class_def.body
    docs = {}
    for a, b in zip(body, body[1:], strict=False):
        if (
            isinstance(a, ast.AnnAssign)
            and isinstance(a.target, ast.Name)
            and isinstance(b, ast.Expr)
            and isinstance(b.value, ast.Constant)
            and isinstance(b.value.value, str)
        ):
            docs[a.target.id] = " ".join(b.value.value.split())
    return docs


def _base_type(annotation: Any) -> type:
    """`int | None` -> int; `bool` -> bool."""
    if isinstance(annotation, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0]
    return annotation


def add_dataclass_args(
    parser: argparse.ArgumentParser,
    cls: type,
    skip: tuple[str, ...] = (),
    prefix: str = "",
    seen: set[str] | None = None,
) -> None:
    """One `--flag` per field of `cls` (a dataclass), grouped under the class name.

    With `prefix` ("lm"), field `n_steps` becomes `--lm-n-steps`: commands that take several
    stages' settings (`demo`) prefix each by its section, since names such as `seed` recur.
    Fields whose name is in `seen` are skipped and added to it: several classes can then share
    one flag (the SAE architectures' train configs all have `--lr`).
    """
    doc = (cls.__doc__ or "").strip().split("\n")[0]
    if doc.startswith(cls.__name__ + "("):  # the signature dataclasses write when there is no docstring
        doc = ""
    group = parser.add_argument_group(cls.__name__, doc or None)
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or (seen is not None and f.name in seen):
            continue
        if seen is not None:
            seen.add(f.name)
        typ = _base_type(hints[f.name])
        flag = "--" + (f"{prefix}-" if prefix else "") + f.name.replace("_", "-")
        help_ = f"{docs.get(f.name, '')} (default: {f.default})"
        if typing.get_origin(typ) is tuple:  # a list-valued field: one flag, comma-separated values
            elem = _element_type(typ)
            shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
            help_ = f"{docs.get(f.name, '')} (comma-separated; default: {shown or 'none'})"
            kw: dict[str, Any] = {"type": _csv(elem), "metavar": f"{elem.__name__.upper()},..."}
        elif typ is bool:
            kw = {"action": argparse.BooleanOptionalAction}
        elif typing.get_origin(typ) is typing.Literal:
            kw = {"choices": typing.get_args(typ), "type": str}
        else:
            kw = {"type": typ, "metavar": typ.__name__.upper()}
        group.add_argument(flag, dest=_dest(f.name, prefix), default=None, help=help_, **kw)


def _element_type(tuple_type: Any) -> type:
    """`tuple[int, ...]` -> int."""
    return typing.get_args(tuple_type)[0]


def _csv(elem: type) -> Any:
    """An argparse `type` that reads "a,b,c" into a tuple of `elem` (empty parts dropped)."""

    def parse(text: str) -> tuple:
        try:
            return tuple(elem(part.strip()) for part in str(text).split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {elem.__name__} values, got {text!r}") from None

    parse.__name__ = f"comma-separated {elem.__name__}"
    return parse


def as_tuple(tuple_type: Any, value: Any, where: str) -> tuple:
    """A preset's value for a list-valued field: a JSON list, or a comma-separated string, as a typed tuple."""
    elem = _element_type(tuple_type)
    parts = value if isinstance(value, list | tuple) else [p for p in str(value).split(",") if p.strip()]
    try:
        return tuple(elem(p.strip() if isinstance(p, str) else p) for p in parts)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{where}: expected a list of {elem.__name__} values, got {value!r}") from None


def field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def given(ns: argparse.Namespace, names: set[str], prefix: str = "") -> set[str]:
    """Which of the fields `names` the user set on the command line."""
    return {n for n in names if getattr(ns, _dest(n, prefix), None) is not None}


def _dest(name: str, prefix: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def build(cls: type, base: dict[str, Any], ns: argparse.Namespace, prefix: str = "") -> Any:
    """`cls(**base)` with every flag the user gave applied on top; bad values are UserErrors."""
    values = dict(base)
    for f in dataclasses.fields(cls):
        given = getattr(ns, _dest(f.name, prefix), None)
        if given is not None:
            values[f.name] = given
    unknown = set(values) - field_names(cls)
    if unknown:
        raise UserError(f"unknown {cls.__name__} settings in preset: {', '.join(sorted(unknown))}")
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        typ = _base_type(hints[name])
        if typing.get_origin(typ) is tuple and not isinstance(value, tuple):
            values[name] = as_tuple(typ, value, f"{cls.__name__}.{name}")
    try:
        return cls(**values)
    except (ValueError, TypeError) as e:  # name the config once, whether or not its message does
        raise UserError(str(e) if str(e).startswith(cls.__name__) else f"{cls.__name__}: {e}") from None
