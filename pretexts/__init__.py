"""Pluggable pretext tasks, one file each, and their registry.

``create_pretext(name, num_features=..., **kw)`` builds a task (an ``nn.Module`` owning its head).
Other installed packages add tasks through the entry-point group ``shortcutlens.pretexts``::

    [project.entry-points."shortcutlens.pretexts"]
    my_task = "my_package.my_module:MyTask"
"""

from __future__ import annotations

from typing import Any

from pretexts.base import Pretext
from shortcutlens.registry import Registry

PRETEXTS = Registry("pretext", entry_point_group="shortcutlens.pretexts")


def create_pretext(name: str, **kwargs: Any) -> Pretext:
    return PRETEXTS.create(name, **kwargs)


def list_pretexts() -> list[str]:
    return PRETEXTS.names()


from pretexts import rotation  # noqa: F401

for _optional in ("exemplar", "relative_location", "jigsaw", "contrastive"):
    try:
        __import__(f"pretexts.{_optional}")
    except ModuleNotFoundError as err:  # only while the module does not exist yet
        if err.name != f"pretexts.{_optional}":
            raise

__all__ = ["PRETEXTS", "Pretext", "create_pretext", "list_pretexts"]
