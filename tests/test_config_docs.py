"""Every config field is documented where it is defined, and configs/algo/<name>.yaml sets
exactly the fields of that algorithm's Config.

A field's description is the string literal on the line under it (CleanRL's `Args` style).
Python drops those strings at runtime, so they are read from the source with `ast`.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing
from functools import cache
from pathlib import Path

import pytest
import yaml

from rlrun.config import RunConfig
from rlrun.core.registry import ALGORITHMS, get_algorithm

ALGO_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "algo"


@cache
def field_docstrings(cls: type) -> dict[str, str | None]:
    """The fields `cls` itself declares, each with the string literal right under it (or None)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs: dict[str, str | None] = {}
    for statement, following in zip(body, [*body[1:], None]):
        if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            is_string = (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            )
            docs[statement.target.id] = following.value.value.strip() if is_string else None
    return docs


def undocumented_fields(cls: type) -> list[str]:
    """Fields of dataclass `cls` without a description in the class that declares them last
    (a subclass that overrides a field documents why its value differs)."""
    missing = []
    for f in dataclasses.fields(cls):
        owner = next(c for c in cls.__mro__ if f.name in field_docstrings(c))
        if not field_docstrings(owner)[f.name]:
            missing.append(f"{owner.__name__}.{f.name}")
    return missing


def nested_dataclasses(cls: type) -> list[type]:
    """`cls` and every dataclass its fields hold (through Optional too), depth first."""
    found = [cls]
    for hint in typing.get_type_hints(cls).values():
        for tp in (hint, *typing.get_args(hint)):
            if dataclasses.is_dataclass(tp) and tp not in found:
                found += [c for c in nested_dataclasses(tp) if c not in found]
    return found


RUN_CONFIGS = nested_dataclasses(RunConfig)
CONFIG_CLASSES = RUN_CONFIGS + [get_algorithm(name).Config for name in ALGORITHMS]


def test_run_config_nesting_is_found():
    names = {cls.__name__ for cls in RUN_CONFIGS}
    assert {"RunConfig", "EnvConfig", "AtariConfig", "EvalConfig", "LogConfig", "CheckpointConfig", "TrialConfig"} <= names


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda cls: cls.__name__)
def test_every_config_field_has_a_description(cls):
    missing = undocumented_fields(cls)
    assert not missing, f"no description (a string on the line under the field): {', '.join(missing)}"


@dataclasses.dataclass(frozen=True)
class _Documented:
    rate: float = 0.1
    """A documented field."""


@dataclasses.dataclass(frozen=True)
class _HalfDocumented(_Documented):
    rate: float = 0.2  # a trailing comment is not the chosen style
    size: int = 1
    """Documented."""
    width: int = 2


def test_the_check_finds_bare_and_overridden_fields():
    assert undocumented_fields(_Documented) == []
    assert undocumented_fields(_HalfDocumented) == ["_HalfDocumented.rate", "_HalfDocumented.width"]


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_algo_yaml_sets_exactly_the_config_fields(name):
    """configs/algo/<name>.yaml is the full list of the algorithm's knobs: a key there that is
    no field would fail validation, and a field missing there would be a knob no user sees."""
    keys = set(yaml.safe_load((ALGO_CONFIGS / f"{name}.yaml").read_text())) - {"name"}
    fields = {f.name for f in dataclasses.fields(get_algorithm(name).Config)}
    assert sorted(keys - fields) == [], f"configs/algo/{name}.yaml sets keys that are no field of its Config"
    assert sorted(fields - keys) == [], f"configs/algo/{name}.yaml leaves out fields of its Config"
