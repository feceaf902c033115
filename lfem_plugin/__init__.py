"""lfem_plugin: occluded person re-identification with fine-grained local features, as a torchreid plugin.

``import lfem_plugin`` is required before torchreid can see the plugin's names: it calls :func:`register_all`,
which pushes the registered models into ``torchreid.models.build_model`` and the datasets into
``torchreid.data.register_image_dataset``; on PyPI torchreid 0.2.5 it also makes the upstream module names
(``torchreid.utils``, ``torchreid.models``, ...) importable, so torchreid's own scripts run unchanged, and lets
``torch.load(weights_only=True)`` (the default since torch 2.6) read the numpy scalar torchreid stores as ``rank1``,
so that ``scripts/main.py`` can load its own checkpoints again.
:func:`build_datamanager` builds torchreid's ``ImageDataManager`` with the multi-view train transform the LFEM
models need.

Reference: Wang, "Enhancing Global Features with Fine-Grained Local Features for Occluded Person
Re-identification".
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from . import _torchreid
from .registry import DATASETS, MODELS
from .version import __version__


def register_all() -> None:
    """Register every plugin model and dataset into torchreid. Idempotent; raises on a clash with another object."""
    from . import data, models  # noqa: F401  (fill the registries)

    for name, builder in MODELS.items():
        _torchreid.add_model(name, builder)
    for name, cls in DATASETS.items():
        _torchreid.add_image_dataset(name, cls)


register_all()
_torchreid.alias_pypi_layout()  # torchreid's own scripts (`from torchreid.utils import ...`) on PyPI 0.2.5 too
_torchreid.allow_numpy_scalars_in_checkpoints()  # torchreid's own checkpoints (numpy rank1) under weights_only loads


# Module paths before 0.2.0 (one flat package) -> where the module lives now (docs/DEVELOPMENT.md, "Moved paths").
# ``lfem_plugin.engine``, ``.metrics`` and ``.config`` kept their names (now packages exporting the same names).
MOVED = {
    "train": "tools.train", "inference": "tools.inference", "doctor": "tools.doctor", "compare": "tools.compare",
    "visualize": "tools.visualize", "preflight": "tools.preflight", "report": "tools.report",
    "search": "tools.search", "export": "tools.export", "gate_analysis": "tools.gate_analysis",
    "checkpoint": "utils.checkpoint", "distributed": "utils.distributed", "run_lock": "utils.run_lock",
    "evaluation": "engine.evaluation", "progress": "engine.loop", "rerank": "metrics.rerank",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import lfem_plugin.<old>`` imports the module's new path, with a DeprecationWarning naming it: the import
    system takes the module this loader leaves in ``sys.modules`` (the new one, the same object)."""

    def find_spec(self, fullname: str, path=None, target=None):
        package, _, old = fullname.partition(".")
        return importlib.util.spec_from_loader(fullname, self) if package == __name__ and old in MOVED else None

    def exec_module(self, module) -> None:
        new = f"{__name__}.{MOVED[module.__name__.partition('.')[2]]}"
        warnings.warn(f"{module.__name__} has moved to {new}; the old path will be removed", DeprecationWarning,
                      stacklevel=2)
        sys.modules[module.__name__] = importlib.import_module(new)


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())


def __getattr__(name: str):
    if name == "build_datamanager":  # lazy: it pulls in the training stack
        from .tools.train import build_datamanager
        return build_datamanager
    if name == "Embedder":  # lazy: a tracker's embedder (tools/embedder.py)
        from .tools.embedder import Embedder
        return Embedder
    if name in MOVED:  # ``lfem_plugin.train`` without importing it first, as before 0.2.0
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'lfem_plugin' has no attribute {name!r}")


__all__ = ["__version__", "register_all", "build_datamanager", "Embedder", "MODELS", "DATASETS"]
