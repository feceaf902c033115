"""The plugin's model and dataset registries, pushed into torchreid's own by ``register_all``.

Reference: fast-reid ``fastreid/utils/registry.py`` (design only).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterator, List, Optional, TypeVar

__all__ = ["Registry", "same_definition", "MODELS", "DATASETS", "LFEM_BLOCKS", "PROJECTS_GROUP", "load_projects"]

T = TypeVar("T")


class Registry:
    """Maps names to objects; fails loudly on a clash and lists the choices on a miss.

    Registering the *same* object under the same name again is allowed (re-imports, reloads);
    registering a *different* object under a taken name raises ``KeyError``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._obj_map: Dict[str, Any] = {}

    def _do_register(self, name: str, obj: Any) -> None:
        old = self._obj_map.get(name)
        if old is not None and old is not obj and not same_definition(old, obj):
            raise KeyError(f"{name!r} is already registered in the {self.name!r} registry with {old!r}; "
                           f"refusing to replace it with {obj!r}. Pick another name.")
        self._obj_map[name] = obj

    def register(self, obj: Optional[T] = None, *, name: Optional[str] = None) -> Any:
        """Register ``obj`` (by its ``__name__`` unless ``name`` is given); usable as a decorator."""
        if obj is None:
            def deco(fn: T) -> T:
                self._do_register(name or fn.__name__, fn)
                return fn
            return deco
        self._do_register(name or obj.__name__, obj)
        return obj

    def get(self, name: str) -> Any:
        try:
            return self._obj_map[name]
        except KeyError:
            raise KeyError(f"no object named {name!r} in the {self.name!r} registry; "
                           f"choices: {sorted(self._obj_map)}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._obj_map

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._obj_map))

    def __len__(self) -> int:
        return len(self._obj_map)

    def items(self):
        return sorted(self._obj_map.items())

    def __repr__(self) -> str:
        return f"Registry(name={self.name!r}, items={sorted(self._obj_map)})"


def same_definition(a: Any, b: Any) -> bool:
    """True when ``a`` and ``b`` are the same definition re-created by ``importlib.reload``: same module,
    qualified name and (for functions) source location."""
    def ident(obj: Any):
        code = getattr(obj, "__code__", None)
        where = (code.co_filename, code.co_firstlineno) if code is not None else None
        return getattr(obj, "__module__", None), getattr(obj, "__qualname__", None), where
    return ident(a)[1] is not None and ident(a) == ident(b)


MODELS = Registry("models")  # read by torchreid's build_model (pushed there by register_all) and the CLI
DATASETS = Registry("datasets")  # read by torchreid's ImageDataManager (pushed there by register_all)
# the fusion's block by name (LFEMViT's lfem_block): 'lfem' is the paper's; a research project registers its own, so a
# model's arguments stay plain data (checkpoints store them)
LFEM_BLOCKS = Registry("lfem_blocks")


# Research projects beside the core (projects/*) declare an entry point in this group; importing it registers their
# names (models, keys, families, profiles). The core never imports a project by name.
PROJECTS_GROUP = "lfem_plugin.projects"


def load_projects() -> List[str]:
    """Import every installed research project (entry points of :data:`PROJECTS_GROUP`), as ``lfem-reid`` does
    before it reads a command; returns their names. A project that fails to import is skipped with a warning naming
    it (the core's commands still work)."""
    from importlib.metadata import entry_points
    loaded = []
    for point in entry_points(group=PROJECTS_GROUP):
        try:
            point.load()
        except Exception as err:  # noqa: BLE001 - a broken project must not break the core's commands
            logging.getLogger(__name__).warning("research project %s (%s) failed to import and is skipped: %s",
                                                point.name, point.value, err)
            continue
        loaded.append(point.value)
    return loaded
