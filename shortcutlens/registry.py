"""Name -> builder registries for every pluggable kind (backbones, pretexts, lenses, datasets, ...).

One small class, used the same way everywhere (the pattern of timm's ``register_model`` /
``create_model``): builders register under an explicit name, an unknown name raises ``ValueError``
listing every valid name, and a registry may also pull builders from a Python entry-point group so
that other installed packages can plug in without touching this one.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from typing import Any, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class Registry:
    """A named collection of builders.

    Args:
        kind: what the registry holds, used in error messages ("backbone", "pretext", ...).
        entry_point_group: optional entry-point group scanned once, lazily, for third-party builders.
    """

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._builders: dict[str, Callable[..., Any]] = {}
        self._entry_points_loaded = entry_point_group is None

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")`` above a class or factory function."""

        def wrap(builder: T) -> T:
            if name in self._builders and self._builders[name] is not builder:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._builders[name] = builder
            return builder

        return wrap

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            if ep.name not in self._builders:
                self._builders[ep.name] = ep.load()

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._builders)

    def get(self, name: str) -> Callable[..., Any]:
        self._load_entry_points()
        if name not in self._builders:
            valid = ", ".join(self.names()) or "(none registered)"
            plural = self.kind + ("es" if self.kind.endswith("s") else "s")  # lens -> lenses
            raise ValueError(f"Unknown {self.kind} '{name}'. Valid {plural}: {valid}")
        return self._builders[name]

    def create(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._builders
