"""Tests of :func:`splatforge_core.options.build_options` (shared by every stage's options)."""

from dataclasses import dataclass

import pytest

from splatforge_core.errors import InputError
from splatforge_core.options import build_options


@dataclass(frozen=True)
class _Opts:
    size: int = 4
    name: str = "a"

    def __post_init__(self) -> None:
        if self.size < 1:  # TypeError for a str, re-raised as InputError
            raise ValueError(f"size must be >= 1, got {self.size}")


def test_none_dict_and_instance():
    assert build_options(_Opts, None, "toy") == _Opts()
    assert build_options(_Opts, {"size": 7}, "toy") == _Opts(size=7)
    o = _Opts(size=2)
    assert build_options(_Opts, o, "toy") is o


def test_unknown_key_names_stage_key_and_known_options():
    with pytest.raises(InputError, match=r"unknown toy option\(s\) \['sise'\]; known options: \['name', 'size'\]"):
        build_options(_Opts, {"sise": 3, "name": "b"}, "toy")


def test_bad_values_and_types_become_input_errors():
    with pytest.raises(InputError, match="bad toy options: size must be >= 1, got 0"):
        build_options(_Opts, {"size": 0}, "toy")
    with pytest.raises(InputError, match="bad toy options"):
        build_options(_Opts, {"size": "big"}, "toy")
    with pytest.raises(InputError, match="toy options must be a dict or _Opts, got list"):
        build_options(_Opts, [("size", 3)], "toy")
    assert issubclass(InputError, ValueError)  # callers that caught ValueError still do
