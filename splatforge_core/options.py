"""Shared helper that builds a stage's options dataclass from a config section.

Every stage (hloc style) has an options dataclass with documented defaults, built from a
plain dict (a config section) that must not hold unknown keys. :func:`build_options` is
that one piece of logic: it rejects unknown keys, values whose type does not match the
field's annotation (:func:`check_types`) and numbers outside the range a field declares in
its metadata (:func:`range_problem`); each dataclass keeps its own other value checks
(``__post_init__`` or ``validate()``).

Ranges are declared where the field is, e.g. ``threads: int = field(default=1,
metadata={"min": 1})``. Keys: ``min`` / ``max`` (inclusive), ``gt`` / ``lt`` (exclusive).
A ``None`` value (an optional field left unset) is not checked; every other number must also
be finite (YAML ``.nan`` and ``.inf`` parse as floats).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar, Union

from .errors import InputError

T = TypeVar("T")

_HINTS: dict[type, dict[str, Any]] = {}


def field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved type annotation of the dataclass ``cls`` (cached).

    Annotations written as strings (``from __future__ import annotations``) are evaluated
    with :func:`typing.get_type_hints`. A class whose annotations cannot be resolved gets an
    empty dict (no type checking; its own checks still run).
    """
    if cls not in _HINTS:
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # a forward reference that does not resolve: skip type checks
            hints = {}
        _HINTS[cls] = {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name in hints}
    return _HINTS[cls]


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def matches_type(value: Any, tp: Any) -> bool:
    """Whether ``value`` (a config value: YAML scalars, lists, dicts) fits the annotation ``tp``.

    Understood: ``int`` (not a bool), ``float`` (an int is fine, not a bool), ``bool`` (not an
    int), ``str``, ``None``, unions (``X | None``, ``Optional[X]``), ``Literal[...]`` (one of
    the choices), ``list``/``tuple``/``Sequence`` with or without element types (a YAML list
    is fine for a tuple field; ``tuple[X, Y]`` also checks the length), ``dict``/``Mapping``.
    Any other annotation (``Any``, a class) is accepted if ``value`` is an instance of it, or
    always when it is not a plain class.
    """
    if tp is Any:
        return True
    if tp is None or tp is type(None):
        return value is None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Union or (hasattr(types, "UnionType") and isinstance(tp, types.UnionType)):
        return any(matches_type(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return _is_int(value)
    if tp is float:
        return _is_number(value)
    if tp is str:
        return isinstance(value, str)
    container = origin or tp
    if container in (list, tuple, Sequence) or (isinstance(container, type) and container is not str
                                                and issubclass(container, Sequence)):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            return False
        if not args:
            return True
        if container is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(matches_type(v, a) for v, a in zip(value, args))
        return all(matches_type(v, args[0]) for v in value)
    if container in (dict, Mapping):
        if not isinstance(value, Mapping):
            return False
        if len(args) == 2:
            return all(matches_type(k, args[0]) and matches_type(v, args[1]) for k, v in value.items())
        return True
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def describe_type(tp: Any) -> str:
    """Words for the annotation ``tp`` in error messages, e.g. ``"an integer or null"``."""
    if tp is Any:
        return "anything"
    if tp is None or tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Union or (hasattr(types, "UnionType") and isinstance(tp, types.UnionType)):
        return " or ".join(describe_type(a) for a in args)
    if origin is Literal:
        return f"one of {list(args)}"
    simple = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if tp in simple:
        return simple[tp]
    container = origin or tp
    if container in (list, tuple, Sequence):
        if not args:
            return "a list"
        if container is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)} items ({', '.join(describe_type(a) for a in args)})"
        return f"a list of {_plural(describe_type(args[0]))}"
    if container in (dict, Mapping):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _plural(words: str) -> str:
    """``"an integer"`` -> ``"integers"``, ``"a list of numbers"`` -> ``"lists of numbers"``."""
    for article in ("an ", "a "):
        if words.startswith(article) and " or " not in words:
            head, sep, tail = words[len(article):].partition(" ")
            return f"{head}s{sep}{tail}"
    return f"items that are {words}"


def _hint(value: Any, tp: Any) -> str:
    """Extra advice for a common YAML mistake: ``1e-3`` is read as the string "1e-3"."""
    if isinstance(value, str) and matches_type(1.0, tp):
        try:
            float(value)
        except ValueError:
            return ""
        return " (YAML reads numbers like 1e-3 as strings: write 1.0e-3)"
    return ""


def type_problem(cls: type, options: Mapping[str, Any]) -> str | None:
    """The first value of ``options`` whose type does not fit the annotation of its field.

    Args:
        cls: an options dataclass.
        options: field name -> value (keys that are not fields are ignored here).

    Returns:
        None when every value fits, else a sentence naming the option, the expected type and
        the value, e.g. ``option 'ssim_lambda' must be a number, got 'abc' (str)``.
    """
    hints = field_types(cls)
    for name, value in options.items():
        tp = hints.get(name)
        if tp is not None and not matches_type(value, tp):
            return (f"option {name!r} must be {describe_type(tp)}, got {value!r} ({type(value).__name__})"
                    f"{_hint(value, tp)}")
    return None


#: Range keys of a field's metadata and the words used for them in messages.
RANGE_KEYS = {"min": ">=", "gt": ">", "max": "<=", "lt": "<"}


def field_ranges(cls: type) -> dict[str, dict[str, float]]:
    """Field name -> its range metadata (keys of :data:`RANGE_KEYS`) for the dataclass ``cls``."""
    return {f.name: {k: f.metadata[k] for k in RANGE_KEYS if k in f.metadata}
            for f in dataclasses.fields(cls) if any(k in f.metadata for k in RANGE_KEYS)}


def describe_range(rng: Mapping[str, float]) -> str:
    """Words for a range, e.g. ``{"min": 0, "max": 1}`` -> ``">= 0 and <= 1"``."""
    return " and ".join(f"{RANGE_KEYS[k]} {rng[k]:g}" for k in RANGE_KEYS if k in rng)


def range_problem(cls: type, options: Mapping[str, Any]) -> str | None:
    """The first number of ``options`` outside the range its field of ``cls`` declares.

    Args:
        cls: an options dataclass whose fields may carry range metadata (module docstring).
        options: field name -> value. Values that are not numbers (None, strings, lists, bools)
            are left to the type check.

    Returns:
        None when every value is in range, else a sentence naming the option, the range and
        the value, e.g. ``option 'psnr_size' must be >= 16, got 0``.
    """
    for name, rng in field_ranges(cls).items():
        if name not in options:
            continue
        v = options[name]
        if not _is_number(v):
            continue
        ok = math.isfinite(v) and all(
            {"min": v >= b, "max": v <= b, "gt": v > b, "lt": v < b}[k] for k, b in rng.items())
        if not ok:
            return f"option {name!r} must be {'finite and ' if not math.isfinite(v) else ''}{describe_range(rng)}, got {v!r}"
    return None


def check_ranges(obj: Any, stage: str) -> None:
    """Check every field of the options dataclass instance ``obj`` against its declared range.

    Raises:
        InputError: ``bad {stage} options: option 'x' must be >= 1, got -3``.
    """
    problem = range_problem(type(obj), {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    if problem:
        raise InputError(f"bad {stage} options: {problem}")


def check_types(cls: type, options: Mapping[str, Any], stage: str) -> None:
    """Check every value of ``options`` against the annotation of the field of ``cls`` it sets.

    Args:
        cls: an options dataclass.
        options: field name -> value (keys that are not fields are ignored here).
        stage: stage name used in the message, e.g. ``"train"``.

    Raises:
        InputError: a value whose type does not fit (:func:`type_problem`); the message names
            the stage, e.g. ``bad train options: option 'ssim_lambda' must be a number, got
            'abc' (str)``.
    """
    problem = type_problem(cls, options)
    if problem:
        raise InputError(f"bad {stage} options: {problem}")


def build_options(cls: type[T], options: Mapping[str, Any] | T | None, stage: str) -> T:
    """Build the options dataclass ``cls`` of ``stage`` from ``options``.

    Args:
        cls: a dataclass type whose fields are the stage's options.
        options: None (all defaults: ``cls()``), an instance of ``cls`` (range-checked, returned as is),
            or a mapping (config section) of field name -> value (``cls(**options)``).
        stage: stage name used in error messages, e.g. ``"project"`` or ``"sfm match"``.

    Returns:
        The ``cls`` instance. Value checks are the dataclass's own (``__post_init__``); a
        ``validate()`` method, where a class has one, is left to the caller.

    Raises:
        InputError: ``options`` is not None, a ``cls`` or a mapping; a key that is not a
            field (the message names the stage, the unknown keys and the known ones); a
            value whose type does not fit the field's annotation (:func:`check_types`); a
            number outside the range its field declares (:func:`range_problem`, also checked
            on an instance and on the defaults); a value that ``cls`` rejects with ``TypeError`` or ``ValueError`` (re-raised as
            :class:`InputError` naming the stage; an :class:`InputError` passes unchanged).
    """
    if options is None:
        options = {}
    elif isinstance(options, cls):
        check_ranges(options, stage)
        return options
    elif not isinstance(options, Mapping):
        raise InputError(f"{stage} options must be a dict or {cls.__name__}, got {type(options).__name__}")
    known = sorted(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    unknown = sorted((k for k in options if k not in known), key=str)
    if unknown:
        raise InputError(f"unknown {stage} option(s) {unknown}; known options: {known}")
    check_types(cls, options, stage)
    problem = range_problem(cls, options)
    if problem:
        raise InputError(f"bad {stage} options: {problem}")
    try:
        obj = cls(**options)
    except InputError:
        raise
    except (TypeError, ValueError) as e:
        raise InputError(f"bad {stage} options: {e}") from e
    check_ranges(obj, stage)
    return obj
