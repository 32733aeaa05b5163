"""Shared helper that builds a stage's options dataclass from a config section.

Every stage (hloc style) has an options dataclass with documented defaults, built from a
plain dict (a config section) that must not hold unknown keys. :func:`build_options` is
that one piece of logic; each dataclass keeps its own value checks (``__post_init__`` or
``validate()``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from .errors import InputError

T = TypeVar("T")


def build_options(cls: type[T], options: Mapping[str, Any] | T | None, stage: str) -> T:
    """Build the options dataclass ``cls`` of ``stage`` from ``options``.

    Args:
        cls: a dataclass type whose fields are the stage's options.
        options: None (all defaults: ``cls()``), an instance of ``cls`` (returned as is),
            or a mapping (config section) of field name -> value (``cls(**options)``).
        stage: stage name used in error messages, e.g. ``"project"`` or ``"sfm match"``.

    Returns:
        The ``cls`` instance. Value checks are the dataclass's own (``__post_init__``); a
        ``validate()`` method, where a class has one, is left to the caller.

    Raises:
        InputError: ``options`` is not None, a ``cls`` or a mapping; a key that is not a
            field (the message names the stage, the unknown keys and the known ones); a
            value that ``cls`` rejects with ``TypeError`` or ``ValueError`` (re-raised as
            :class:`InputError` naming the stage; an :class:`InputError` passes unchanged).
    """
    if options is None:
        options = {}
    elif isinstance(options, cls):
        return options
    elif not isinstance(options, Mapping):
        raise InputError(f"{stage} options must be a dict or {cls.__name__}, got {type(options).__name__}")
    known = sorted(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    unknown = sorted((k for k in options if k not in known), key=str)
    if unknown:
        raise InputError(f"unknown {stage} option(s) {unknown}; known options: {known}")
    try:
        return cls(**options)
    except InputError:
        raise
    except (TypeError, ValueError) as e:
        raise InputError(f"bad {stage} options: {e}") from e
