"""A package's public API, named in its `__init__` and imported only when used (PEP 562).

A room's `__init__` names what it offers and from which of its modules; `from
jestflow.transforms.formats import read_manifest` then imports `formats/manifest.py` alone, not
every module of the room (the model files would bring torch along: 1.6 s instead of 0.2 s to read
a manifest), and importing one module of a room never runs the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def exports(
    package: str, api: Mapping[str, str]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """(`__all__`, `__getattr__`, `__dir__`) for `package`, whose public names `api` maps to the
    module (relative to the package) that defines each."""

    def __getattr__(name: str) -> Any:
        if name not in api:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f".{api[name]}", package), name)

    def __dir__() -> list[str]:
        return sorted(api)

    return sorted(api), __getattr__, __dir__
