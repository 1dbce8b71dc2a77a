"""Reading configuration values, and checking them against the types their dataclass declares.

YAML and ``--set key=value`` give whatever the user typed: ``enabled: "no"`` is a string (which
Python would take as true), ``iterations: abc`` a word. :func:`check_types` refuses such values
with the option's name, what it must be and what it got, before anything runs.

Example
-------
>>> from dataclasses import dataclass
>>> @dataclass
... class Options:
...     enabled: bool = True
...     steps: int = 3
>>> check_types(Options(enabled="no"))
Traceback (most recent call last):
...
ValueError: enabled must be true or false, got 'no'
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from pathlib import Path

import yaml


class _Loader(yaml.SafeLoader):
    """YAML's safe loader that also reads ``1e-3`` as a number (YAML 1.2 does; PyYAML's 1.1 rules need ``1.0e-3``)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def parse_yaml(text: str, source) -> object:
    """``text`` read as YAML; ValueError naming ``source`` (a file, or the option it came from) in one line if it is not YAML."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as error:
        raise ValueError(f"{source}: not valid YAML ({' '.join(str(error).split())})") from error


def read_yaml_file(path: str | os.PathLike) -> object:
    """The YAML file ``path``, read as :func:`parse_yaml` does; ValueError naming the file if it is not UTF-8 text or not YAML."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start} is {error.object[error.start]:#04x}); save it as UTF-8") from error
    return parse_yaml(text, path)


def check_types(instance) -> None:
    """Raise ValueError naming the first field of dataclass ``instance`` whose value does not fit its annotation.

    Understood annotations: ``bool``, ``int`` (not a bool), ``float`` (an int or a finite
    float, not a bool), ``str``, ``dict``, dataclasses, ``tuple[X, ...]`` and ``tuple[X, Y]``
    (lists are accepted for tuples), and unions such as ``X | None``.
    """
    hints = typing.get_type_hints(type(instance))
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        if not _fits(value, hints[field.name]):
            raise ValueError(f"{field.name} must be {_describe(hints[field.name])}, got {value!r}")


def check_options(cls: type, values, what: str) -> dict:
    """``values`` as keyword arguments of dataclass ``cls``: raise ValueError unless it is a mapping of its fields.

    ``what`` names the options in the message, e.g. ``"training"`` or ``"spatial"``.
    """
    if not isinstance(values, dict):
        raise ValueError(f"{what} options: expected a mapping of options, got {type(values).__name__} {values!r}")
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what} options {unknown}; known: {', '.join(sorted(known))}")
    return dict(values)


def _fits(value, hint) -> bool:
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, argument) for argument in arguments)
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return all(_fits(v, arguments[0]) for v in value)
        return len(value) == len(arguments) and all(_fits(v, a) for v, a in zip(value, arguments))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, hint)


def _describe(hint) -> str:
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(argument) for argument in arguments)
    if origin is tuple:
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return f"a list of {_describe(arguments[0]).removeprefix('a ').removeprefix('an ')}s"
        return f"a list of {len(arguments)} {_describe(arguments[0]).removeprefix('a ').removeprefix('an ')}s"
    names = {type(None): "null", bool: "true or false", int: "a whole number", float: "a number", str: "a string", dict: "a mapping"}
    return names.get(hint, f"a {getattr(hint, '__name__', hint)}")
