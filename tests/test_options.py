"""Tests of :func:`splatforge_core.options.build_options` (shared by every stage's options)."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from splatforge_core.errors import InputError
from splatforge_core.options import build_options, describe_type, matches_type


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
    with pytest.raises(InputError, match=r"^bad toy options: option 'size' must be an integer, got 'big' \(str\)$"):
        build_options(_Opts, {"size": "big"}, "toy")
    with pytest.raises(InputError, match="toy options must be a dict or _Opts, got list"):
        build_options(_Opts, [("size", 3)], "toy")
    assert issubclass(InputError, ValueError)  # callers that caught ValueError still do


@dataclass(frozen=True)
class _Typed:
    n: int = 1
    x: float = 0.5
    flag: bool = False
    name: str = "a"
    limit: int | None = None
    angles: tuple[float, ...] = (0.0,)
    names: tuple[str, ...] = ()
    pair: tuple[int, str] = (1, "a")
    mode: Literal["fast", "slow"] = "fast"
    tiers: list[list[float]] = field(default_factory=list)
    anything: list = field(default_factory=list)


@pytest.mark.parametrize("key, value", [
    ("n", 3), ("x", 2), ("x", 2.5), ("flag", True), ("name", "b"), ("limit", None), ("limit", 4),
    ("angles", [1, 2.5]), ("angles", (1.0,)), ("names", ["a", "b"]), ("pair", [2, "b"]), ("mode", "slow"),
    ("tiers", [[0.1, 3]]), ("anything", [1, "a", None]),
])
def test_types_that_fit_the_annotations(key, value):
    assert getattr(build_options(_Typed, {key: value}, "toy"), key) == value


@pytest.mark.parametrize("key, value, expected", [
    ("n", 2.0, "an integer"), ("n", True, "an integer"), ("n", "3", "an integer"),
    ("x", "abc", "a number"), ("x", False, "a number"), ("x", None, "a number"),
    ("flag", 1, "true or false"), ("flag", "yes", "true or false"),
    ("name", 3, "a string"), ("limit", 1.5, "an integer or null"),
    ("angles", 1.0, "a list of numbers"), ("angles", [1, "a"], "a list of numbers"), ("angles", "12", "a list of numbers"),
    ("names", [1], "a list of strings"), ("pair", [1, 2], r"a list of 2 items \(an integer, a string\)"),
    ("pair", [1], "a list of 2 items"), ("mode", "medium", r"one of \['fast', 'slow'\]"),
    ("tiers", [0.1, 3], "a list of lists"), ("anything", {"a": 1}, "a list"),
])
def test_wrong_types_name_the_option_and_the_expected_type(key, value, expected):
    with pytest.raises(InputError, match=rf"^bad toy options: option {key!r} must be {expected}.*, got "):
        build_options(_Typed, {key: value}, "toy")


def test_type_helpers():
    assert matches_type(3, float) and not matches_type(True, float) and not matches_type(1, bool)
    assert matches_type(None, int | None) and matches_type([1, [2]], list) and not matches_type("ab", list)
    assert describe_type(tuple[float, ...] | None) == "a list of numbers or null"
    assert describe_type(dict[str, int]) == "a mapping"
