"""One registry mechanism for every pluggable kind (datasets, backbones, presets)."""

from __future__ import annotations

from importlib import resources
from typing import Callable, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object map that rejects duplicates and names the valid choices on a miss.

    >>> backbones = Registry("backbone")
    >>> @backbones.register("tiny")
    ... def tiny(): ...
    >>> backbones.names()
    ['tiny']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``."""

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        """Return the object registered as ``name`` or raise ``ConfigError`` listing the choices."""
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items


def preset_names() -> list[str]:
    """Presets shipped with the package (``configs/*.yaml``); listed without importing anything heavy."""
    folder = resources.files("scanlearn") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))
