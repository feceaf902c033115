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

__version__ = "0.1.0"

from . import _torchreid
from .registry import DATASETS, MODELS


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


def __getattr__(name: str):
    if name == "build_datamanager":  # lazy: it pulls in the training stack
        from .tools.train import build_datamanager
        return build_datamanager
    raise AttributeError(f"module 'lfem_plugin' has no attribute {name!r}")


__all__ = ["__version__", "register_all", "build_datamanager", "MODELS", "DATASETS"]
